"""The campaigns admin: scoped by role, every save through a service, and the CSV upload page."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts.roles import Role
from audit.models import AuditEvent
from campaigns.ingestion import metrics_ingest
from campaigns.models import Campaign, IngestionBatch, MetricFact, Segment
from tests.campaigns.builders import fact_row
from tests.factories import SegmentFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/campaigns/metricfact/"
UPLOAD = "/admin/campaigns/metricfact/upload-csv/"


@pytest.fixture
def browser(member):
    """browser(role) -> a Django test client signed in as a member with that role."""

    def make(role=Role.MARKETER) -> Client:
        client = Client()
        client.force_login(member(role))
        return client

    return make


def _inline_management(prefix: str, total: int, initial: int = 0) -> dict:
    return {f"{prefix}-TOTAL_FORMS": total, f"{prefix}-INITIAL_FORMS": initial,
            f"{prefix}-MIN_NUM_FORMS": 0, f"{prefix}-MAX_NUM_FORMS": 1000}


def test_campaign_add__with_a_segment_inline__goes_through_the_services(browser, workspace):
    response = browser().post("/admin/campaigns/campaign/add/", {
        "workspace": workspace.pk, "name": "Autumn", "channel": "search", "objective": "conversions",
        "status": "active", "daily_budget": "500", "start_date": "2026-09-01", "external_id": "",
        **_inline_management("segments", 1), **_inline_management("creatives", 0),
        "segments-0-name": "Mobile", "segments-0-status": "active", "segments-0-criteria": '{"device": "mobile"}',
        "segments-0-bid_floor": "0.1", "segments-0-bid": "1", "segments-0-bid_ceiling": "2",
        "segments-0-budget_floor": "10", "segments-0-daily_budget": "50", "segments-0-budget_ceiling": "100",
        "segments-0-external_id": "",
    })
    assert response.status_code == 302, response.content.decode()[-3000:]
    campaign = Campaign.objects.get(name="Autumn")
    assert campaign.segments.get().criteria == {"device": "mobile"}
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    assert actions == ["campaign.create", "segment.create"]


def test_segment_change__outside_its_bounds__shows_the_error_and_changes_nothing(browser, segment):
    url = f"/admin/campaigns/segment/{segment.pk}/change/"
    data = {"name": segment.name, "status": "active", "criteria": "{}", "external_id": "", "bid_floor": "0.10",
            "bid": "9", "bid_ceiling": "5", "budget_floor": "10", "daily_budget": "100", "budget_ceiling": "500"}
    response = browser().post(url, data)
    assert response.status_code == 200
    assert "errornote" in response.content.decode()
    assert Segment.objects.get(pk=segment.pk).bid == 1

    response = browser().post(url, {**data, "bid": "2"})
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="segment.update")
    assert (event.before["bid"], event.after["bid"]) == ("1.0000", "2.0000")


def test_campaign_delete__in_the_admin__is_audited(browser, campaign):
    response = browser().post(f"/admin/campaigns/campaign/{campaign.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Campaign.objects.exists()
    assert AuditEvent.objects.filter(action="campaign.delete").count() == 1


def test_approver__sees_campaigns_but_cannot_add_or_upload(browser, campaign):
    approver = browser(Role.APPROVER)
    assert approver.get("/admin/campaigns/campaign/").status_code == 200
    assert approver.get("/admin/campaigns/campaign/add/").status_code == 403
    changelist = approver.get(CHANGELIST)
    assert changelist.status_code == 200 and UPLOAD not in changelist.content.decode()
    assert approver.get(UPLOAD).status_code == 403


def test_other_workspace_campaign__is_not_reachable(browser, other_segment):
    client = browser(Role.ADMIN)
    assert other_segment.campaign.name not in client.get("/admin/campaigns/campaign/").content.decode()
    response = client.get(f"/admin/campaigns/campaign/{other_segment.campaign_id}/change/")
    assert response.status_code == 302  # Django's "doesn't exist" redirect, never the page


def test_metric_facts_and_batches__are_read_only_and_listed(browser, workspace, segment, system_actor):
    metrics_ingest(actor=system_actor, workspace=workspace, rows=[fact_row(segment)])
    client = browser()
    assert client.get(CHANGELIST).status_code == 200
    fact = MetricFact.objects.get()
    assert client.post(f"/admin/campaigns/metricfact/{fact.pk}/change/", {}).status_code == 403
    assert client.get("/admin/campaigns/ingestionbatch/").status_code == 200
    assert client.get(f"/admin/campaigns/ingestionbatch/{IngestionBatch.objects.get().pk}/delete/").status_code == 403


def _upload(client, workspace, content: str, **extra):
    file = SimpleUploadedFile("metrics.csv", content.encode(), content_type="text/csv")
    return client.post(UPLOAD, {"workspace": workspace.pk, "file": file, "idempotency_key": "", **extra})


def test_csv_upload__good_file__ingests_and_reports_the_counts(browser, workspace, segment):
    client = browser()
    assert UPLOAD in client.get(CHANGELIST).content.decode()
    response = _upload(client, workspace, f"segment,bucket_start,impressions,clicks\n"
                                          f"{segment.pk},2026-03-02T10:00:00Z,100,2\n")
    assert response.status_code == 302
    assert MetricFact.objects.get().clicks == 2
    page = client.get(response.url).content.decode()
    assert "1 rows ingested: 1 created, 0 updated" in page


def test_csv_upload__bad_file__lists_each_problem_by_line_and_writes_nothing(browser, workspace, segment):
    content = (f"segment,bucket_start,impressions,clicks\n{segment.pk},2026-03-02T10:00:00Z,100,2\n"
               f"{segment.pk},2026-03-02T11:00:00Z,100,-2\n")
    response = _upload(browser(), workspace, content)
    assert response.status_code == 200
    page = response.content.decode()
    assert "<td>3</td><td>1</td><td>clicks</td><td>negative</td>" in page
    assert not MetricFact.objects.exists()


def test_csv_upload__into_a_workspace_the_user_cannot_push_to__is_not_offered(browser, other_workspace, segment):
    response = _upload(browser(), other_workspace, "segment,bucket_start\n1,2026-03-02T10:00:00Z\n")
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()


def test_segment_changelist__shows_only_the_users_workspaces(browser, segment, other_segment):
    SegmentFactory(campaign=segment.campaign, name="Visible twin")
    page = browser().get("/admin/campaigns/segment/").content.decode()
    assert "Visible twin" in page and other_segment.name not in page
