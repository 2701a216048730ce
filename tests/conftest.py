import pytest
from rest_framework.test import APIClient

from annotations.models import Role
from tests.factories import MembershipFactory, ProjectFactory, UserFactory


@pytest.fixture(autouse=True)
def _isolated_media(request, settings, tmp_path):
    """A fresh media folder per test, so "nothing was stored" can be checked exactly. Integration tests
    keep the session's folder: their worker process writes there."""
    if request.node.get_closest_marker("integration") is None:
        settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def project(db):
    return ProjectFactory()


@pytest.fixture
def other_project(db):
    return ProjectFactory()


@pytest.fixture
def member(project):
    """member(role) -> a user holding `role` in `project`."""

    def make(role: str, username: str | None = None):
        user = UserFactory(**({"username": username} if username else {}))
        MembershipFactory(project=project, user=user, role=role)
        return user

    return make


@pytest.fixture
def client_for():
    def make(user):
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def data_manager(member):
    return member(Role.DATA_MANAGER)


@pytest.fixture
def dm_client(client_for, data_manager):
    return client_for(data_manager)
