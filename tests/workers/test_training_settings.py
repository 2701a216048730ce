"""A project's ML settings (workers.TrainingSettings): the API (who reads, who changes, what is refused), the
service (permissions, validation, audit) and the migration that moved them off annotations.Project."""

import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from rest_framework.test import APIClient

from annotations.models import Role
from hitl.core.models import AuditEvent
from tests.factories import LABELS, MembershipFactory, TrainingSettingsFactory, UserFactory
from workers.ml.explain.policy import DEFAULT_METHODS
from workers.models import TrainingSettings
from workers.selectors.settings import training_settings_for
from workers.services.training_config import DEFAULTS
from workers.services.training_settings import training_settings_update

pytestmark = pytest.mark.django_db

DEFAULT_BODY = {
    "query_strategy": "entropy",
    "auto_retrain_every": 0,
    "gating_tolerance": 0.01,
    "training_config": {},
    "explain_methods_default": ["gradcam", "saliency"],
}


def _url(project) -> str:
    return f"/api/v1/projects/{project.pk}/training-settings"


def test_a_project_without_settings_reads_the_defaults_and_reading_writes_nothing(
    project, member, client_for
):
    resp = client_for(member(Role.ANNOTATOR)).get(_url(project))
    assert resp.status_code == 200, resp.content
    assert resp.json() == DEFAULT_BODY
    assert not TrainingSettings.objects.exists()


def test_the_default_explanation_methods_are_defined_once():
    assert DEFAULT_METHODS == ("gradcam", "saliency")
    assert DEFAULTS["explain_methods"] == list(DEFAULT_METHODS)


def test_round_trip_by_an_ml_engineer_is_saved_and_audited(project, member, client_for):
    ml = member(Role.ML_ENGINEER)
    client = client_for(ml)
    body = {
        "query_strategy": "bald",
        "auto_retrain_every": 5,
        "gating_tolerance": 0.05,
        "training_config": {"epochs": 3, "lr": 1, "arch": "attention_unet", "explain_methods": ["attention"]},
    }
    resp = client.patch(_url(project), body, format="json")
    assert resp.status_code == 200, resp.content
    expected = {
        **body,
        "training_config": {**body["training_config"], "lr": 1.0},  # floats stored as floats
        "explain_methods_default": ["gradcam", "saliency"],
    }
    assert resp.json() == expected
    assert client.get(_url(project)).json() == expected
    settings = TrainingSettings.objects.get(project=project)
    assert (settings.query_strategy, settings.auto_retrain_every, settings.gating_tolerance) == (
        "bald",
        5,
        0.05,
    )
    event = AuditEvent.objects.get(action="project.update")
    assert event.actor == ml and event.project_id == project.pk and event.target_type == "project"
    assert event.details == {
        "fields": ["auto_retrain_every", "gating_tolerance", "query_strategy", "training_config"]
    }
    # a partial change keeps the rest
    resp = client.patch(_url(project), {"auto_retrain_every": 0}, format="json")
    assert resp.json() == {**expected, "auto_retrain_every": 0}


@pytest.mark.parametrize(
    "role, status",
    [(Role.ANNOTATOR, 403), (Role.DATA_MANAGER, 403), (Role.ML_ENGINEER, 200), (Role.ADMIN, 200)],
)
def test_who_may_change_them(project, member, client_for, role, status):
    client = client_for(member(role))
    assert client.get(_url(project)).status_code == 200  # every member reads them
    resp = client.patch(_url(project), {"query_strategy": "margin"}, format="json")
    assert resp.status_code == status, resp.content
    assert (training_settings_for(project).query_strategy == "margin") is (status == 200)
    assert AuditEvent.objects.filter(action="project.update").exists() is (status == 200)
    if status == 403:
        assert resp.json()["error"]["code"] == "permission_denied"


def test_outsiders_and_missing_projects_are_404_and_anonymous_401(project, other_project):
    outsider = UserFactory(username="outsider")
    MembershipFactory(project=other_project, user=outsider, role=Role.ADMIN)
    client = APIClient()
    client.force_authenticate(outsider)
    for url in (_url(project), "/api/v1/projects/999999/training-settings"):
        assert client.get(url).status_code == 404
        assert client.patch(url, {"query_strategy": "bald"}, format="json").status_code == 404
    assert APIClient().get(_url(project)).status_code == 401
    assert not TrainingSettings.objects.exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"query_strategy": "psychic"}, "query_strategy"),
        ({"gating_tolerance": 1.5}, "gating_tolerance"),
        ({"gating_tolerance": -0.1}, "gating_tolerance"),
        ({"auto_retrain_every": -1}, "auto_retrain_every"),
        ({"auto_retrain_every": 100_001}, "auto_retrain_every"),  # the schema's bound
        ({"auto_retrain_every": 2**33}, "auto_retrain_every"),  # beyond the database column
        ({"training_config": {"nope": 1}}, "config"),
        ({"training_config": {"epochs": 0}}, "config"),
        ({"training_config": {"explain_methods": ["attention"]}}, "config"),  # a U-Net has no attention
        ({"training_config": "x"}, "training_config"),
        ({}, "detail"),
    ],
)
def test_bad_settings_are_refused_and_not_audited(project, member, client_for, body, field):
    resp = client_for(member(Role.ADMIN)).patch(_url(project), body, format="json")
    assert resp.status_code == 400, (body, resp.content)
    error = resp.json()["error"]
    assert error["code"] == "invalid" and field in error["details"], error
    assert not AuditEvent.objects.filter(action="project.update").exists()
    assert training_settings_for(project).query_strategy == "entropy"


def test_training_config_errors_read_as_they_did_on_the_project(project, member, client_for):
    resp = client_for(member(Role.ML_ENGINEER)).patch(
        _url(project), {"training_config": {"nope": 1}}, format="json"
    )
    assert resp.json()["error"]["details"] == {"config": ["unknown config keys: nope"]}


def test_the_service_checks_roles_fields_and_ranges(project):
    actor = UserFactory()
    with pytest.raises(PermissionError):
        training_settings_update(
            project=project, actor=actor, roles={Role.DATA_MANAGER}, changes={"query_strategy": "bald"}
        )
    with pytest.raises(ValidationError):
        training_settings_update(
            project=project, actor=actor, roles={Role.ADMIN}, changes={"label_policy": "x"}
        )
    with pytest.raises(ValidationError):
        training_settings_update(
            project=project, actor=actor, roles={Role.ADMIN}, changes={"gating_tolerance": 2}
        )
    with pytest.raises(ValidationError):
        training_settings_update(
            project=project, actor=actor, roles={Role.ADMIN}, changes={"query_strategy": "x"}
        )
    with pytest.raises(ValidationError):
        training_settings_update(project=project, actor=actor, roles={Role.ADMIN}, changes={})
    assert not AuditEvent.objects.filter(action="project.update").exists()
    settings = training_settings_update(
        project=project, actor=actor, roles={Role.ML_ENGINEER}, changes={"training_config": {"lr": 1}}
    )
    assert settings.training_config == {"lr": 1.0}
    assert training_settings_for(project).training_config == {"lr": 1.0}


def test_the_project_api_no_longer_has_them(project, member, client_for):
    client = client_for(member(Role.ADMIN))
    body = client.get(f"/api/v1/projects/{project.pk}").json()
    assert not {"query_strategy", "auto_retrain_every", "gating_tolerance", "training_config"} & set(body)
    resp = client.patch(f"/api/v1/projects/{project.pk}", {"query_strategy": "bald"}, format="json")
    assert resp.status_code == 400
    assert "training-settings" in resp.json()["error"]["details"]["query_strategy"][0]  # says where it went
    both = client.patch(
        f"/api/v1/projects/{project.pk}", {"name": "x", "gating_tolerance": 0.1}, format="json"
    )
    assert both.status_code == 400 and "gating_tolerance" in both.json()["error"]["details"]
    assert not TrainingSettings.objects.exists()


def test_the_ml_page_loads_its_settings_from_the_api(project, member, client):
    TrainingSettingsFactory(project=project, query_strategy="bald")
    client.force_login(member(Role.ML_ENGINEER))
    html = client.get(f"/projects/{project.pk}/ml/").content.decode()
    boot = json.loads(re.search(r'<script id="boot" type="application/json">(.*?)</script>', html, re.S)[1])
    assert boot["explain_methods"] and "settings" not in boot  # ml.js GETs them from the API
    assert "BALD (MC dropout)" in client.get(f"/projects/{project.pk}/").content.decode()


# The migration pair: workers 0006 copies, annotations 0012 drops the columns.
BEFORE = [("workers", "0005_delete_outboxmessage"), ("annotations", "0011_agreement_metrics_help")]
COPIED = [("workers", "0006_training_settings")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _latest():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


@pytest.mark.django_db(transaction=True)
def test_the_data_migration_copies_every_projects_settings_and_back():
    try:
        apps = _migrate(BEFORE)
        Project = apps.get_model("annotations", "Project")
        tuned = Project.objects.create(
            name="tuned",
            label_classes=LABELS,
            query_strategy="bald",
            auto_retrain_every=7,
            gating_tolerance=0.2,
            training_config={"epochs": 3, "arch": "attention_unet"},
        )
        plain = Project.objects.create(name="plain", label_classes=LABELS)

        apps = _migrate(COPIED)
        rows = {
            r.pop("project_id"): r for r in apps.get_model("workers", "TrainingSettings").objects.values()
        }
        assert rows == {
            tuned.pk: {
                "query_strategy": "bald",
                "auto_retrain_every": 7,
                "gating_tolerance": 0.2,
                "training_config": {"epochs": 3, "arch": "attention_unet"},
            },
            plain.pk: {
                "query_strategy": "entropy",
                "auto_retrain_every": 0,
                "gating_tolerance": 0.01,
                "training_config": {},
            },
        }

        _migrate(_latest())  # the columns go; the settings stay
        assert training_settings_for(tuned.pk).auto_retrain_every == 7

        apps = _migrate(BEFORE)  # reversed: the values go back onto the projects
        Project = apps.get_model("annotations", "Project")
        back = Project.objects.get(pk=tuned.pk)
        assert (back.query_strategy, back.auto_retrain_every, back.gating_tolerance) == ("bald", 7, 0.2)
        assert back.training_config == {"epochs": 3, "arch": "attention_unet"}
    finally:
        _migrate(_latest())
