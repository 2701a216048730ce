"""The Django admin: every model registered for operators lists and opens for a superuser, and is closed to
everyone else."""

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

EXPECTED = {"ExplanationReport", "ExportJob", "OutboxMessage", "TrainingRun", "ModelVersion", "Project"}


def test_operator_models_are_registered():
    assert EXPECTED <= {model.__name__ for model in admin.site._registry}


@pytest.mark.parametrize(
    "model", sorted(admin.site._registry, key=lambda m: m.__name__), ids=lambda m: m.__name__
)
def test_every_registered_model_lists_for_a_superuser(client, model):
    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    assert client.get(url).status_code == 200


def test_the_admin_is_closed_to_non_staff(client):
    client.force_login(UserFactory(username="reader"))
    resp = client.get(reverse("admin:core_outboxmessage_changelist"))
    assert resp.status_code == 302 and "/admin/login/" in resp["Location"]
