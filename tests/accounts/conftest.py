import pytest
from rest_framework.test import APIClient

from accounts.services import api_token_create
from audit.actors import Actor


@pytest.fixture
def issue_token(workspace):
    """issue_token(user, workspace=...) -> (ApiToken, raw key), issued by the system."""

    def make(user, *, workspace=workspace, name="CI pipeline"):
        return api_token_create(actor=Actor.system("tests"), workspace=workspace, user=user, name=name)

    return make


@pytest.fixture
def token_client():
    """token_client(raw_key) -> an APIClient sending `Authorization: Bearer <raw_key>`."""

    def make(raw_key: str):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        return client

    return make
