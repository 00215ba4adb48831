import pytest
from rest_framework.test import APIClient

from accounts.roles import Role
from audit.actors import Actor
from rulesplatform.celery import app
from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory


@pytest.fixture
def workspace(db):
    return WorkspaceFactory(name="Acme")


@pytest.fixture
def other_workspace(db):
    return WorkspaceFactory(name="Globex")


@pytest.fixture
def member(workspace):
    """member(role) -> a user holding that role in `workspace`."""

    def make(role: str = Role.MARKETER, **fields):
        return MembershipFactory(workspace=workspace, role=role, **fields).user

    return make


@pytest.fixture
def admin_user(member):
    return member(Role.ADMIN)


@pytest.fixture
def admin_actor(admin_user):
    return Actor.for_user(admin_user)


@pytest.fixture
def system_actor():
    return Actor.system("tests")


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def client_for(api_client):
    """client_for(user) -> an APIClient logged in as that user (session auth)."""

    def make(user):
        client = APIClient()
        client.force_authenticate(user=user)
        return client

    return make


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_superuser=True)


@pytest.fixture
def eager_tasks():
    """`.delay()` runs the task in place, and its errors surface in the test."""
    previous = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous
