import pytest
from django.core.exceptions import ValidationError

from annotations.models import Role
from annotations.services.projects import membership_add, membership_remove, project_create, project_update
from hitl.core.errors import ConflictError
from hitl.core.models import AuditEvent
from tests.factories import UserFactory

LABELS = [{"value": 1, "name": "liver", "color": "#aa0000"}]


@pytest.mark.django_db
def test_project_create_makes_creator_admin_and_audits():
    user = UserFactory()
    project = project_create(creator=user, name="Liver CT", label_classes=LABELS, modality="CT")
    assert set(project.memberships.values_list("user_id", "role")) == {(user.pk, Role.ADMIN)}
    assert AuditEvent.objects.filter(action="project.create", project=project, actor=user).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "labels",
    [
        [],
        [{"value": 0, "name": "bg", "color": "#000000"}],
        [{"value": 1, "name": "a", "color": "red"}],
        [{"value": 1, "name": "a", "color": "#000000"}, {"value": 1, "name": "b", "color": "#111111"}],
    ],
)
def test_project_create_rejects_bad_label_classes(labels):
    with pytest.raises(ValidationError):
        project_create(creator=UserFactory(), name="bad", label_classes=labels)


@pytest.mark.django_db
def test_field_level_permissions_on_update(project):
    actor = UserFactory()
    project_update(project=project, actor=actor, roles={Role.DATA_MANAGER}, changes={"readers_per_case": 3})
    with pytest.raises(PermissionError):
        project_update(
            project=project, actor=actor, roles={Role.DATA_MANAGER}, changes={"label_policy": "majority"}
        )
    with pytest.raises(ValidationError):
        project_update(project=project, actor=actor, roles={Role.ADMIN}, changes={"deid_salt": "x"})
    project.refresh_from_db()
    assert project.readers_per_case == 3 and project.label_policy != "majority"
    event = AuditEvent.objects.get(action="project.update")
    assert event.details == {"fields": ["readers_per_case"]}


@pytest.mark.django_db
def test_project_keeps_one_admin(project):
    actor = UserFactory()
    admin = membership_add(
        project=project, actor=actor, username=UserFactory(username="a1").username, role=Role.ADMIN
    )
    with pytest.raises(ConflictError) as err:  # a state the request conflicts with: 409 over the API
        membership_remove(project=project, actor=actor, membership_id=admin.pk)
    assert err.value.code == "last_admin"
    second = membership_add(
        project=project, actor=actor, username=UserFactory(username="a2").username, role=Role.ADMIN
    )
    membership_remove(project=project, actor=actor, membership_id=second.pk)
    assert list(project.memberships.values_list("pk", flat=True)) == [admin.pk]


@pytest.mark.django_db
def test_membership_add_unknown_user(project):
    with pytest.raises(ValidationError):
        membership_add(project=project, actor=UserFactory(), username="ghost", role=Role.ANNOTATOR)


@pytest.mark.django_db
def test_token_auth_for_scripts(client, project):
    user = UserFactory(username="script")
    bad = client.post(
        "/api/v1/auth/token", {"username": "script", "password": "nope"}, content_type="application/json"
    )
    assert bad.status_code == 401
    resp = client.post(
        "/api/v1/auth/token", {"username": "script", "password": "pw"}, content_type="application/json"
    )
    token = resp.json()["token"]
    listing = client.get("/api/v1/projects", HTTP_AUTHORIZATION=f"Token {token}")
    assert listing.status_code == 200 and listing.json()["count"] == 0
    assert user.pk
