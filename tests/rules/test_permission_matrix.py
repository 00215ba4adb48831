"""Who may do what in the governance, role by role, in the admin (Django test client) and the API.

Each cell checks the outcome, not only the status: an allowed action has its effect, a denied
one has none (403, or the admin's login page for an integrator, who never uses the admin).
"""

from decimal import Decimal

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.roles import Role
from rules.models import ApprovalPolicy, Change, NotificationEndpoint, PlatformConnector
from tests.factories import CampaignFactory, MembershipFactory, SegmentFactory
from tests.rules.governance_builders import policy, propose_bid

pytestmark = pytest.mark.django_db

ROLES = {
    "marketer": {"role": Role.MARKETER},
    "approver": {"role": Role.APPROVER, "approval_level": 1},
    "admin": {"role": Role.ADMIN},
    "integrator": {"role": Role.INTEGRATOR, "can_manage_config": True},
}
ALLOWED = {
    "propose_manual_change": {"marketer", "admin"},
    "view_approval_queue": {"approver", "admin"},
    "approve": {"approver", "admin"},
    "reject": {"approver", "admin"},
    "escalate": {"approver", "admin"},
    "edit_approval_policy": {"admin"},
    "manage_notification_endpoints": {"admin"},
    "manage_connectors": {"admin"},
}
CELLS = [(role, action) for role in ROLES for action in ALLOWED]


class World:
    """A workspace with a strict policy, a segment, and a change waiting at level 1 (requested by a worker)."""

    def __init__(self, workspace, role: str):
        self.workspace = workspace
        self.policy = policy(workspace, auto_apply_max_pct=Decimal("5"))
        self.segment = SegmentFactory(campaign=CampaignFactory(workspace=workspace), bid=Decimal("1.00"))
        self.pending = propose_bid(self.segment, "1.1000")
        self.user = MembershipFactory(workspace=workspace, **ROLES[role]).user

    def status_of_pending(self) -> str:
        return Change.objects.get(pk=self.pending.pk).status

    def manual_changes(self) -> int:
        return Change.objects.filter(kind=Change.Kind.MANUAL).count()


# --- API ------------------------------------------------------------------------------------------

def api_cell(world: World, action: str) -> tuple[int, bool]:
    client = APIClient()
    client.force_authenticate(user=world.user)
    pending = world.pending.pk
    if action == "propose_manual_change":
        response = client.post("/api/v1/manual-changes/", {"target_type": "segment", "target_id": world.segment.pk,
                                                           "field": "bid", "value": "1.02", "reason": "test"})
        return response.status_code, world.manual_changes() == 1
    if action == "view_approval_queue":
        response = client.get("/api/v1/approvals/queue/")
        listed = response.status_code == 200 and [i["change"]["id"] for i in response.json()["results"]] == [pending]
        return response.status_code, listed
    if action in ("approve", "reject", "escalate"):
        response = client.post(f"/api/v1/changes/{pending}/{action}/", {"comment": "because"})
        return response.status_code, world.status_of_pending() != Change.Status.PENDING
    if action == "edit_approval_policy":
        response = client.patch(f"/api/v1/approval-policies/{world.policy.pk}/", {"auto_apply_max_pct": "7.00"})
        return response.status_code, ApprovalPolicy.objects.get().auto_apply_max_pct == Decimal("7")
    if action == "manage_notification_endpoints":
        response = client.post("/api/v1/notification-endpoints/", {"workspace": world.workspace.pk, "name": "Ops",
                                                                    "url": "https://hooks.example.com/rules"})
        return response.status_code, NotificationEndpoint.objects.exists()
    response = client.post("/api/v1/connectors/", {"workspace": world.workspace.pk, "name": "Sandbox",
                                                   "kind": "sandbox"})
    return response.status_code, PlatformConnector.objects.exists()


@pytest.mark.parametrize(("role", "action"), CELLS)
def test_api__permission_matrix(workspace, role, action):
    world = World(workspace, role)

    status, effect = api_cell(world, action)

    if role in ALLOWED[action]:
        assert status in (200, 201) and effect, (status, effect)
    else:
        assert status == 403 and not effect, (status, effect)


# --- admin ------------------------------------------------------------------------------------------

def admin_cell(world: World, action: str) -> tuple[int, bool]:
    client = Client()
    client.force_login(world.user)
    pending = world.pending.pk
    ws = world.workspace.pk
    if action == "propose_manual_change":
        response = client.post("/admin/rules/manualchange/add/", {
            "segment": world.segment.pk, "campaign": "", "creative": "", "field": "bid", "value": "1.02",
            "reason_text": "test"})
        return response.status_code, world.manual_changes() == 1
    if action == "view_approval_queue":
        response = client.get("/admin/rules/approvalrequest/")
        return response.status_code, response.status_code == 200 and f'id="approval-{pending}"' in response.text
    if action in ("approve", "reject", "escalate"):
        response = client.post(f"/admin/rules/approvalrequest/{pending}/decide/{action}/", {"comment": "because"})
        return response.status_code, world.status_of_pending() != Change.Status.PENDING
    if action == "edit_approval_policy":
        response = client.post(f"/admin/rules/approvalpolicy/{world.policy.pk}/change/", {
            "auto_apply_max_pct": "7", "auto_apply_max_daily_amount": "500", "always_require_approval": "[]",
            "level_sla_minutes": "[60, 240]", "approvals_required": "1", "pending_expiry_minutes": "720"})
        return response.status_code, ApprovalPolicy.objects.get().auto_apply_max_pct == Decimal("7")
    if action == "manage_notification_endpoints":
        response = client.post("/admin/rules/notificationendpoint/add/", {
            "workspace": ws, "name": "Ops", "url": "https://hooks.example.com/rules", "events": "[]",
            "enabled": "on"})
        return response.status_code, NotificationEndpoint.objects.exists()
    response = client.post("/admin/rules/platformconnector/add/", {
        "workspace": ws, "name": "Sandbox", "kind": "sandbox", "url": "", "enabled": "on", "timeout_seconds": "10",
        "failure_threshold": "5", "cool_down_seconds": "60"})
    return response.status_code, PlatformConnector.objects.exists()


@pytest.mark.parametrize(("role", "action"), CELLS)
def test_admin__permission_matrix(workspace, role, action):
    world = World(workspace, role)

    status, effect = admin_cell(world, action)

    if role in ALLOWED[action]:
        assert status in (200, 302) and effect, (status, effect)
    elif role == "integrator":
        assert status == 302 and not effect, (status, effect)  # to the login page: no admin for integrators
    else:
        assert status == 403 and not effect, (status, effect)
