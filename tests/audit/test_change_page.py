"""The change page: rule version, evaluation inputs, approvals, pushes, and rollback from the admin."""

from decimal import Decimal

import pytest
from django.test import Client

from accounts.roles import Role
from rules.changes import change_apply, change_propose
from rules.models import Change
from tests.factories import MembershipFactory, SegmentFactory

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def applied_change(workspace, admin_actor):
    segment = SegmentFactory(campaign__workspace=workspace, bid=Decimal("1.0000"))
    change, _ = change_propose(
        actor=admin_actor, target=segment, field=Change.Field.BID, old_value="1.0000", requested_value="0.9000",
        capped_value="0.9000", cap_report=[], idempotency_key="manual:test:1", kind=Change.Kind.MANUAL,
        rule=None, rule_version=None, batch_id="", reason="test",
    )
    change.refresh_from_db()
    if change.status != Change.Status.APPLIED:
        change = change_apply(actor=admin_actor, change=change)
    return change


def test_change_page__shows_trail_approvals_and_pushes(admin_user, applied_change):
    response = _client(admin_user).get(f"/admin/rules/change/{applied_change.pk}/change/")

    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="change-trail"' in body and 'id="change-approvals"' in body and 'id="change-pushes"' in body
    assert "change.apply" in body or "change.applied" in body
    assert 'id="rollback-form"' in body


def test_change_page__rollback_form__restores_the_old_value(admin_user, applied_change):
    response = _client(admin_user).post(
        f"/admin/rules/change/{applied_change.pk}/rollback/", {"reason": "wrong segment"}, follow=True
    )

    assert response.status_code == 200
    applied_change.segment.refresh_from_db()
    assert applied_change.segment.bid == Decimal("1.0000")
    assert Change.objects.filter(kind=Change.Kind.ROLLBACK, status=Change.Status.APPLIED).count() == 1


def test_change_page__marketer__sees_no_rollback_and_cannot_post_one(member, applied_change):
    marketer = member(Role.MARKETER)
    client = _client(marketer)

    page = client.get(f"/admin/rules/change/{applied_change.pk}/change/")
    client.post(f"/admin/rules/change/{applied_change.pk}/rollback/", {"reason": "try"})

    assert 'id="rollback-form"' not in page.content.decode()
    applied_change.segment.refresh_from_db()
    assert applied_change.segment.bid == Decimal("0.9000")


def test_change_page__other_workspace__is_not_shown(other_workspace, applied_change):
    outsider = MembershipFactory(workspace=other_workspace, role=Role.ADMIN).user

    response = _client(outsider).get(f"/admin/rules/change/{applied_change.pk}/change/")

    # The admin answers a change outside the person's workspaces as "does not exist".
    assert response.status_code == 302
    assert "change-trail" not in response.content.decode()
