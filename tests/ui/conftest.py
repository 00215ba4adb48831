import pytest
from django.test import Client

from tests.ui.builders import build_dashboard_data


@pytest.fixture
def data(workspace):
    return build_dashboard_data(workspace)


@pytest.fixture
def browser_as(member):
    """browser_as(role) -> a Django test client logged in as a new member of `workspace` with that role."""

    def login(role, **fields):
        client = Client()
        client.force_login(member(role, **fields))
        return client

    return login
