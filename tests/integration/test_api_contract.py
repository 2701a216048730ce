"""The OpenAPI schema describes the API: schemathesis (pinned) runs every check it has against a real web
server (gunicorn on the test PostgreSQL), once as each project role, with bounded examples; zero failures.

A client written only from the schema must not break: every status code a view answers is documented,
list responses carry their pagination envelope, and a request the schema calls valid is accepted (or
refused only for a reason the schema cannot express, listed per operation in CONTENT_REFUSALS).

The two revoke operations are left out of the run: they end the very token the run authenticates with
(their behaviour is tested in tests/annotations/test_login_security.py). Follow-up work the API enqueues
goes to a Redis database no worker reads, so fuzzing never trains a model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from django.conf import settings

from annotations.models import Role
from annotations.services.auth import token_issue
from annotations.services.queue import case_claim_next
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.helpers import png_bytes
from tests.integration.conftest import ROOT
from workers.services.imports import image_import

pytestmark = pytest.mark.django_db(transaction=True)

ROLES = (Role.ANNOTATOR, Role.ML_ENGINEER, Role.DATA_MANAGER, Role.ADMIN)
MAX_EXAMPLES = int(os.environ.get("HITL_CONTRACT_EXAMPLES", "15"))  # per operation and role
SEED = os.environ.get("HITL_CONTRACT_SEED", "20261130")  # fixed: a CI failure reproduces exactly
SKIPPED_OPERATIONS = ("auth_token_revoke", "auth_token_revoke_all")
# Refusals of schema-valid requests for reasons no schema can state: the bytes of an upload are not an
# image (400) or exceed a pixel limit (413), the bytes of a bundle are not a MONAI bundle (400), a mask does not decode to the case's shape, a username names
# nobody, two label classes share a value (JSON Schema has no "unique by key"). Each is a 400 (or 413)
# with the API's error body; nothing else is relaxed, and no other operation is.
CONTENT_REFUSALS = {
    "images_import": ["400", "413"],
    "model_bundles_import": ["400", "413"],
    "annotations_submit": ["400"],
    "annotations_revise": ["400"],  # the same body as a submission: a mask that does not decode
    "members_add": ["400"],
    "projects_update": ["400"],
}


@pytest.fixture
def contract_server(monkeypatch, request):
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/13")  # no worker reads it
    return request.getfixturevalue("web_server")


def _world() -> dict[str, str]:
    """A project with an image and a held case, one member per role; returns role -> API token."""
    project = ProjectFactory(name="contract")
    users = {role: UserFactory(username=f"contract_{role}") for role in ROLES}
    for role, user in users.items():
        MembershipFactory(project=project, user=user, role=role)
    rng = np.random.default_rng(0)
    image_import(
        project=project,
        user=users[Role.DATA_MANAGER],
        data=png_bytes(rng.integers(0, 255, (24, 20), np.uint8)),
    )
    case_claim_next(project=project, reader=users[Role.ANNOTATOR])
    return {role: token_issue(user=user)[0] for role, user in users.items()}


def _schema_file(tmp_path) -> str:
    path = tmp_path / "schema.json"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="hitl.settings.test")
    subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--format", "openapi-json", "--file", str(path)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return str(path)


def _config(tmp_path) -> str:
    """schemathesis.toml: the per-operation content refusals above, nothing else relaxed."""
    lines = [
        "[checks.positive_data_acceptance]",
        'expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "429"]',
    ]
    for operation, extra in CONTENT_REFUSALS.items():
        statuses = ["2xx", "3xx", "401", "403", "404", "409", "429", *extra]
        lines += [
            "",
            "[[operations]]",
            f'include-operation-id = "{operation}"',
            "checks.positive_data_acceptance.expected-statuses = " + json.dumps(statuses),
        ]
    path = tmp_path / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_every_role_gets_what_the_schema_promises(contract_server, tmp_path):
    tokens = _world()
    schema, config = _schema_file(tmp_path), _config(tmp_path)
    failures = {}
    for role, token in tokens.items():
        cmd = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            config,
            "run",
            schema,
            "--url",
            contract_server.url,
            "-H",
            f"Authorization: Token {token}",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            SEED,
            "--workers",
            "1",
            "--request-timeout",
            "60",
            *(arg for op in SKIPPED_OPERATIONS for arg in ("--exclude-operation-id", op)),
        ]
        run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        print(f"\n===== {role}: exit {run.returncode}\n{run.stdout}")
        if run.returncode != 0:
            failures[role] = run.stdout[-20000:] + run.stderr[-2000:]
    assert not failures, "\n\n".join(f"--- {r}\n{out}" for r, out in failures.items())
    assert settings.CELERY_BROKER_URL  # the test process keeps its own broker
