"""The campaigns REST API: every endpoint per role, workspace isolation, errors, metrics in and out."""

import io
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.roles import Role
from accounts.services import api_token_create
from audit.models import AuditEvent
from campaigns.models import Campaign, Creative, MetricFact, Segment
from tests.campaigns.builders import BUCKET, HOUR, fact_row
from tests.factories import CampaignFactory, CreativeFactory, MembershipFactory, SegmentFactory

pytestmark = pytest.mark.django_db

# Who may do what (accounts/roles.py): everyone reads; marketers, admins and integrators granted
# configuration edit; everyone but approvers pushes metrics.
ROLES = ["marketer", "approver", "admin", "integrator", "integrator+config"]
EDITS = {"marketer", "admin", "integrator+config"}
PUSHES = {"marketer", "admin", "integrator", "integrator+config"}


@pytest.fixture
def as_role(workspace, member, admin_actor, client_for):
    """as_role(name) -> an APIClient of a member holding that role; integrators use an API token."""

    def make(name: str) -> APIClient:
        if not name.startswith("integrator"):
            return client_for(member(Role(name)))
        user = member(Role.INTEGRATOR, can_manage_config=name.endswith("+config"))
        _, raw_key = api_token_create(actor=admin_actor, workspace=workspace, user=user, name="ci")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        return client

    return make


def _expected(role: str, allowed: set[str], success: int) -> int:
    return success if role in allowed else 403


CAMPAIGN = {"name": "Summer", "channel": "social", "daily_budget": "300.00", "start_date": "2026-06-01"}
SEGMENT = {"name": "Desktop DE", "criteria": {"device": "desktop"}, "bid": "1.20", "bid_floor": "0.50",
           "bid_ceiling": "3.00", "daily_budget": "80", "budget_floor": "20", "budget_ceiling": "200"}


# --- Reads --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_reads__every_role__lists_and_retrieves_its_workspace_objects(role, as_role, segment, creative):
    client = as_role(role)
    for url, pk in (("campaigns", segment.campaign_id), ("segments", segment.pk), ("creatives", creative.pk)):
        listing = client.get(f"/api/v1/{url}/")
        assert listing.status_code == 200, listing.content
        assert [item["id"] for item in listing.json()["results"]] == [pk]
        assert client.get(f"/api/v1/{url}/{pk}/").status_code == 200


def test_reads__without_credentials__are_refused(segment):
    response = APIClient().get("/api/v1/campaigns/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_campaign__detail__shows_freshness_and_data_quality(as_role, campaign):
    body = as_role("marketer").get(f"/api/v1/campaigns/{campaign.pk}/").json()
    assert {"metrics_received_at", "metrics_latest_bucket", "data_quality_flag", "workspace"} <= set(body)


# --- Edits per role -----------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_campaign_create__per_role(role, as_role, workspace):
    response = as_role(role).post("/api/v1/campaigns/", {**CAMPAIGN, "workspace": workspace.pk})
    assert response.status_code == _expected(role, EDITS, 201), response.content
    assert Campaign.objects.filter(name="Summer").exists() == (role in EDITS)


@pytest.mark.parametrize("role", ROLES)
def test_campaign_update_and_delete__per_role(role, as_role, campaign):
    client = as_role(role)
    response = client.patch(f"/api/v1/campaigns/{campaign.pk}/", {"daily_budget": "1500"})
    assert response.status_code == _expected(role, EDITS, 200), response.content
    assert response.status_code != 200 or response.json()["daily_budget"] == "1500.0000"
    assert client.delete(f"/api/v1/campaigns/{campaign.pk}/").status_code == _expected(role, EDITS, 204)


@pytest.mark.parametrize("role", ROLES)
def test_segment_create_update_delete__per_role(role, as_role, campaign, segment):
    client = as_role(role)
    created = client.post("/api/v1/segments/", {**SEGMENT, "campaign": campaign.pk})
    assert created.status_code == _expected(role, EDITS, 201), created.content
    assert client.patch(f"/api/v1/segments/{segment.pk}/", {"bid": "1.50"}).status_code == _expected(role, EDITS, 200)
    assert client.delete(f"/api/v1/segments/{segment.pk}/").status_code == _expected(role, EDITS, 204)


@pytest.mark.parametrize("role", ROLES)
def test_creative_create_update_delete__per_role(role, as_role, campaign, creative):
    client = as_role(role)
    created = client.post("/api/v1/creatives/", {"campaign": campaign.pk, "name": "V2", "headline": "New"})
    assert created.status_code == _expected(role, EDITS, 201), created.content
    assert client.patch(f"/api/v1/creatives/{creative.pk}/", {"status": "paused"}).status_code == \
        _expected(role, EDITS, 200)
    assert client.delete(f"/api/v1/creatives/{creative.pk}/").status_code == _expected(role, EDITS, 204)


def test_segment_create__through_a_token__is_audited_as_the_token(as_role, campaign):
    as_role("integrator+config").post("/api/v1/segments/", {**SEGMENT, "campaign": campaign.pk})
    event = AuditEvent.objects.get(action="segment.create")
    assert event.actor_kind == "token"


def test_segment_create__outside_its_bounds__answers_400_with_the_error_body(as_role, campaign):
    response = as_role("marketer").post("/api/v1/segments/", {**SEGMENT, "campaign": campaign.pk, "bid": "4"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert not Segment.objects.filter(name="Desktop DE").exists()


def test_segment_update__the_campaign__cannot_be_changed(as_role, segment, workspace):
    original = segment.campaign_id
    other = CampaignFactory(workspace=workspace)
    response = as_role("marketer").patch(f"/api/v1/segments/{segment.pk}/", {"campaign": other.pk, "name": "N"})
    assert (response.status_code, response.json()["campaign"]) == (200, original)
    segment.refresh_from_db()
    assert (segment.campaign_id, segment.name) == (original, "N")


def test_lists__filter_and_order(as_role, workspace, campaign):
    CampaignFactory(workspace=workspace, name="A video", channel="video")
    SegmentFactory(campaign=campaign, name="B"), SegmentFactory(campaign=campaign, name="A")
    client = as_role("marketer")
    assert [c["name"] for c in client.get("/api/v1/campaigns/?channel=video").json()["results"]] == ["A video"]
    ordered = client.get(f"/api/v1/segments/?campaign={campaign.pk}&ordering=-name").json()["results"]
    assert [s["name"] for s in ordered] == ["B", "A"]
    assert client.get("/api/v1/segments/?channel=video").json()["count"] == 0


# --- Other workspaces: 404 ----------------------------------------------------------------


@pytest.fixture
def elsewhere(other_workspace):
    """Objects of another workspace."""
    segment = SegmentFactory(campaign__workspace=other_workspace)
    return {"campaigns": segment.campaign, "segments": segment, "creatives": CreativeFactory(campaign=segment.campaign)}


@pytest.mark.parametrize("role", ["admin", "integrator+config"])
def test_other_workspace_objects__answer_404_and_are_not_listed(role, as_role, elsewhere):
    client = as_role(role)
    for url, obj in elsewhere.items():
        assert client.get(f"/api/v1/{url}/").json()["count"] == 0
        assert client.get(f"/api/v1/{url}/{obj.pk}/").status_code == 404
        assert client.patch(f"/api/v1/{url}/{obj.pk}/", {"name": "x"}).status_code == 404
        assert client.delete(f"/api/v1/{url}/{obj.pk}/").status_code == 404
    assert Creative.objects.filter(pk=elsewhere["creatives"].pk).exists()


def test_create_into_another_workspace__answers_404(as_role, other_workspace, elsewhere):
    client = as_role("admin")
    response = client.post("/api/v1/campaigns/", {**CAMPAIGN, "workspace": other_workspace.pk})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert client.post("/api/v1/segments/", {**SEGMENT, "campaign": elsewhere["campaigns"].pk}).status_code == 404
    assert client.post("/api/v1/campaigns/", {**CAMPAIGN, "workspace": 10**9}).status_code == 404


def test_token__is_confined_to_its_workspace_even_for_an_admin_of_another(
    workspace, other_workspace, admin_actor, elsewhere
):
    integrator = MembershipFactory(workspace=workspace, role=Role.INTEGRATOR).user
    MembershipFactory(workspace=other_workspace, user=integrator, role=Role.ADMIN)
    _, raw_key = api_token_create(actor=admin_actor, workspace=workspace, user=integrator, name="ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert client.get(f"/api/v1/campaigns/{elsewhere['campaigns'].pk}/").status_code == 404
    assert client.post("/api/v1/campaigns/", {**CAMPAIGN, "workspace": other_workspace.pk}).status_code == 404
    push = {"workspace": other_workspace.pk, "rows": [fact_row(elsewhere["segments"])]}
    assert client.post("/api/v1/metrics/", push).status_code == 404


# --- Metrics in ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_metrics_push__per_role(role, as_role, workspace, segment):
    response = as_role(role).post("/api/v1/metrics/", {"workspace": workspace.pk, "rows": [fact_row(segment)]})
    assert response.status_code == _expected(role, PUSHES, 201), response.content
    if role in PUSHES:
        assert response.json() == {"rows_received": 1, "rows_created": 1, "rows_updated": 0,
                                   "campaign_ids": [segment.campaign_id], "replayed": False}
    assert MetricFact.objects.exists() == (role in PUSHES)


def test_metrics_push__bad_batch__answers_400_listing_the_rows(as_role, workspace, segment):
    rows = [fact_row(segment), fact_row(segment, bucket=BUCKET + HOUR, clicks=5000)]
    response = as_role("integrator").post("/api/v1/metrics/", {"workspace": workspace.pk, "rows": rows})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "batch_rejected"
    assert error["details"]["errors"] == [{"row": 1, "field": "clicks", "reason": "more clicks than impressions"}]
    assert (error["details"]["error_count"], error["details"]["errors_truncated"]) == (1, False)
    assert not MetricFact.objects.exists()


def test_metrics_push__rows_not_a_list_of_objects__answers_400(as_role, workspace):
    response = as_role("integrator").post("/api/v1/metrics/", {"workspace": workspace.pk, "rows": [1, 2]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_metrics_push__idempotency_key__replays_200_then_conflicts_409(as_role, workspace, segment):
    client = as_role("integrator")
    body = {"workspace": workspace.pk, "rows": [fact_row(segment)]}
    assert client.post("/api/v1/metrics/", body, HTTP_IDEMPOTENCY_KEY="b-1").status_code == 201
    replay = client.post("/api/v1/metrics/", body, HTTP_IDEMPOTENCY_KEY="b-1")
    assert (replay.status_code, replay.json()["replayed"]) == (200, True)
    body["rows"][0]["clicks"] = 1
    conflict = client.post("/api/v1/metrics/", body, HTTP_IDEMPOTENCY_KEY="b-1")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize("role", ["marketer", "approver", "integrator"])
def test_metrics_csv__per_role(role, as_role, workspace, segment):
    content = f"segment,bucket_start,impressions,clicks,spend\n{segment.pk},2026-03-02T10:00:00Z,100,3,1.5\n"
    upload = io.BytesIO(content.encode())
    upload.name = "metrics.csv"
    response = as_role(role).post("/api/v1/metrics/csv/", {"workspace": workspace.pk, "file": upload},
                                  format="multipart")
    assert response.status_code == _expected(role, PUSHES, 201), response.content
    if role in PUSHES:
        assert MetricFact.objects.get().spend == Decimal("1.5")


def test_metrics_csv__bad_file__answers_400_with_rows(as_role, workspace, segment):
    upload = io.BytesIO(f"segment,bucket_start,clicks\n{segment.pk},2026-03-02T10:00:00,1\n".encode())
    upload.name = "m.csv"
    response = as_role("marketer").post("/api/v1/metrics/csv/", {"workspace": workspace.pk, "file": upload},
                                        format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["details"]["errors"] == [
        {"row": 0, "field": "bucket_start", "reason": "has no UTC offset (e.g. 2026-03-01T14:00:00+01:00 or ...Z)"},
        {"row": 0, "field": "clicks", "reason": "more clicks than impressions"},
    ]


# --- Metrics out --------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_timeseries__per_role__returns_the_metric(role, as_role, workspace, segment, system_actor):
    from campaigns.ingestion import metrics_ingest

    metrics_ingest(actor=system_actor, workspace=workspace,
                   rows=[fact_row(segment), fact_row(segment, bucket=BUCKET + HOUR, impressions=200, clicks=1)])
    response = as_role(role).get("/api/v1/metrics/timeseries/", {
        "metric": "ctr", "group_by": "segment", "start": BUCKET.isoformat(), "end": (BUCKET + 2 * HOUR).isoformat(),
        "campaign": segment.campaign_id,
    })
    assert response.status_code == 200, response.content
    assert [(p["group"], p["numerator"], p["denominator"], p["value"]) for p in response.json()] == [
        (str(segment.pk), 30.0, 1000.0, 0.03), (str(segment.pk), 1.0, 200.0, 0.005),
    ]


def test_timeseries__other_workspace_data__is_not_included(as_role, other_segment, other_workspace, system_actor):
    from campaigns.ingestion import metrics_ingest

    metrics_ingest(actor=system_actor, workspace=other_workspace, rows=[fact_row(other_segment)])
    response = as_role("admin").get("/api/v1/metrics/timeseries/", {
        "metric": "ctr", "start": BUCKET.isoformat(), "end": (BUCKET + HOUR).isoformat(),
        "workspace": other_workspace.pk,
    })
    assert (response.status_code, response.json()) == (200, [])


@pytest.mark.parametrize("params", [
    {"metric": "nope", "start": "2026-03-02T10:00:00Z", "end": "2026-03-02T11:00:00Z"},
    {"metric": "ctr", "start": "2026-03-02T10:00:00Z", "end": "2026-03-02T09:00:00Z"},
    {"metric": "ctr", "start": "2026-01-01T00:00:00Z", "end": "2026-06-01T00:00:00Z"},
    {"metric": "ctr", "group_by": "device", "start": "2026-03-02T10:00:00Z", "end": "2026-03-02T11:00:00Z"},
], ids=["unknown metric", "end before start", "too long", "unknown grouping"])
def test_timeseries__bad_query__answers_400(params, as_role):
    response = as_role("marketer").get("/api/v1/metrics/timeseries/", params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_schema__documents_the_metrics_endpoints(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    push = schema["paths"]["/api/v1/metrics/"]["post"]
    assert {"200", "201", "400", "409"} <= set(push["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in push["parameters"])
    assert "multipart/form-data" in schema["paths"]["/api/v1/metrics/csv/"]["post"]["requestBody"]["content"]
    assert {"/api/v1/campaigns/{id}/", "/api/v1/segments/", "/api/v1/creatives/", "/api/v1/metrics/timeseries/"} \
        <= set(schema["paths"])
