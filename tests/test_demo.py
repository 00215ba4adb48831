"""Tests for the demo commands: load_demo, simulate (backfill and stream) and run_platform's supervision."""

import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import ApiToken, Membership, Workspace
from accounts.roles import Role
from accounts.services import api_token_authenticate
from audit.models import AuditEvent
from campaigns.models import Campaign, Creative, IngestionBatch, MetricFact, Segment
from rules.models import Rule
from rulesplatform.management.commands.load_demo import DEMO_USERS, WORKSPACE
from rulesplatform.management.commands.run_platform import Child
from rulesplatform.management.commands.run_platform import Command as RunPlatform
from tests.factories import CampaignFactory, SegmentFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db

# A fixed past moment (ingestion refuses buckets after the real now), 10:07 UTC on a Monday.
NOW = datetime(2026, 3, 2, 10, 7, tzinfo=UTC)
BUCKETS_PER_DAY = 96  # the demo's 15-minute buckets


def _load_demo(**options) -> str:
    out = StringIO()
    call_command("load_demo", days=1, now=NOW, stdout=out, **options)
    return out.getvalue()


def _counts() -> dict[str, int]:
    models = (Workspace, get_user_model(), Membership, ApiToken, Campaign, Segment, Creative, Rule, MetricFact)
    return {model.__name__: model.objects.count() for model in models}


# --- load_demo ---------------------------------------------------------------------------------


def test_load_demo__run_twice__creates_the_same_objects_once():
    _load_demo()
    first = _counts()
    _load_demo()
    assert _counts() == first
    assert first["Campaign"] == 4 and first["Segment"] >= 24 and first["Rule"] >= 1


def test_load_demo__creates_a_member_per_role_with_its_printed_password():
    output = _load_demo()
    workspace = Workspace.objects.get(name=WORKSPACE["name"])
    memberships = {m.user.username: m for m in Membership.objects.filter(workspace=workspace).select_related("user")}
    assert {m.role for m in memberships.values()} == set(Role.values)
    assert {memberships["approver1"].approval_level, memberships["approver2"].approval_level} == {1, 2}
    for spec in DEMO_USERS:
        assert memberships[spec.username].user.check_password(spec.password)
        assert spec.password in output
    assert not get_user_model().objects.filter(is_superuser=True).exists()


def test_load_demo__prints_a_working_integrator_token_once():
    first_output = _load_demo()
    raw_key = next(word for word in first_output.split() if word.startswith("rp_"))
    token = api_token_authenticate(raw_key)
    assert token is not None and token.user.username == "integrator"
    assert "rp_" not in _load_demo()


def test_load_demo__uses_the_services__so_everything_is_audited_as_the_demo():
    _load_demo()
    demo_actions = set(AuditEvent.objects.filter(actor_label="system:demo").values_list("action", flat=True))
    expected = {"user.create", "workspace.create", "membership.create", "api_token.create", "campaign.create",
                "segment.create", "creative.create", "rule.create"}
    assert expected <= demo_actions


def test_load_demo__fills_the_history_up_to_the_last_completed_bucket():
    _load_demo()
    workspace = Workspace.objects.get(name=WORKSPACE["name"])
    facts = MetricFact.objects.filter(workspace=workspace)
    segments = Segment.objects.filter(campaign__workspace=workspace).count()
    assert facts.count() == segments * BUCKETS_PER_DAY
    assert max(facts.values_list("bucket_start", flat=True)) == datetime(2026, 3, 2, 9, 45, tzinfo=UTC)


def test_load_demo__reset__rebuilds_the_workspace_and_keeps_the_users():
    _load_demo()
    old_workspace = Workspace.objects.get(name=WORKSPACE["name"])
    users = set(get_user_model().objects.values_list("pk", flat=True))
    _load_demo(reset=True)
    assert Workspace.objects.get(name=WORKSPACE["name"]).pk != old_workspace.pk
    assert set(get_user_model().objects.values_list("pk", flat=True)) == users
    assert AuditEvent.objects.filter(action="workspace.delete", subject_id=str(old_workspace.pk)).exists()


# --- simulate ----------------------------------------------------------------------------------


@pytest.fixture
def fed_workspace():
    workspace = WorkspaceFactory(name="Fed", metric_bucket_minutes=60)
    campaign = CampaignFactory(workspace=workspace, channel="social")
    for device in ("mobile", "desktop"):
        # Budgets out of reach: the volumes are large, so rates are measured precisely.
        SegmentFactory(campaign=campaign, criteria={"device": device}, daily_budget=Decimal("50000"),
                       budget_ceiling=Decimal("100000"))
    return workspace


def test_simulate_backfill__ingests_through_the_service_as_the_simulator(fed_workspace):
    out = StringIO()
    call_command("simulate", workspace="Fed", backfill_days=2, now=NOW, stdout=out)
    assert MetricFact.objects.filter(workspace=fed_workspace).count() == 2 * 2 * 24
    events = AuditEvent.objects.filter(action="metrics.ingest", workspace_id=fed_workspace.pk)
    assert events.count() == 2 and set(events.values_list("actor_label", flat=True)) == {"system:simulator"}
    assert IngestionBatch.objects.filter(workspace=fed_workspace, actor_label="system:simulator").count() == 2
    assert "[  2/2]" in out.getvalue()  # a progress line per day


def test_simulate_backfill__fills_missing_days_and_keeps_history_already_ingested(fed_workspace):
    call_command("simulate", workspace="Fed", backfill_days=1, now=NOW, stdout=StringIO())
    newest = max(MetricFact.objects.values_list("bucket_start", flat=True))
    before = dict(MetricFact.objects.filter(bucket_start__lt=newest).values_list("pk", "clicks"))
    segment = Segment.objects.filter(campaign__workspace=fed_workspace).first()
    segment.bid *= 3  # a rule moved the bid since: the past must not be rewritten with it
    segment.save()

    call_command("simulate", workspace="Fed", backfill_days=2, now=NOW, stdout=StringIO())

    assert MetricFact.objects.count() == 2 * 2 * 24
    assert dict(MetricFact.objects.filter(pk__in=before).values_list("pk", "clicks")) == before


def test_simulate_stream__sends_the_bucket_still_filling_each_tick(fed_workspace):
    out = StringIO()
    call_command("simulate", workspace="Fed", stream=True, ticks=2, interval=0, stdout=out)
    assert out.getvalue().count("rows, bucket") == 2
    newest = MetricFact.objects.filter(workspace=fed_workspace).order_by("-bucket_start").first()
    assert newest.bucket_start > datetime.now(UTC) - timedelta(hours=1)
    assert AuditEvent.objects.filter(action="metrics.ingest", actor_label="system:simulator").count() == 2


def _ctr_by_device(**bucket_filter) -> dict[str, float]:
    facts = MetricFact.objects.filter(**bucket_filter).select_related("segment")
    totals = {}
    for fact in facts:
        clicks, impressions = totals.get(fact.segment.criteria["device"], (0, 0))
        totals[fact.segment.criteria["device"]] = (clicks + fact.clicks, impressions + fact.impressions)
    return {device: clicks / impressions for device, (clicks, impressions) in totals.items()}


def test_simulate_stream__incident_with_a_lead__rewrites_the_buckets_since_it_began(fed_workspace):
    call_command("simulate", workspace="Fed", backfill_days=1, stdout=StringIO())
    now = datetime.now(UTC)
    since_incident = {"bucket_start__gte": now - timedelta(hours=12), "bucket_start__lt": now - timedelta(hours=1)}
    before = _ctr_by_device(**since_incident)

    call_command("simulate", workspace="Fed", stream=True, ticks=1, interval=0, incident=["mobile_engagement_drop"],
                 incident_lead=12 * 60, stdout=StringIO())

    after = _ctr_by_device(**since_incident)
    assert after["mobile"] == pytest.approx(0.4 * before["mobile"], rel=0.15)
    assert after["desktop"] == pytest.approx(before["desktop"], rel=0.05)


def test_simulate__without_backfill_or_stream__is_refused(fed_workspace):
    with pytest.raises(CommandError, match="Nothing to do"):
        call_command("simulate", workspace="Fed")


def test_simulate__unknown_workspace__is_refused():
    with pytest.raises(CommandError, match="No workspace named"):
        call_command("simulate", workspace="Nowhere", backfill_days=1)


# --- run_platform supervision ---------------------------------------------------------------------


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_platform__child_dies__names_it_and_stops_the_others():
    out, err = StringIO(), StringIO()
    command = RunPlatform(stdout=out, stderr=err)
    survivor = Child("sleeper", _python("import time; print('up', flush=True); time.sleep(60)"))
    crasher = Child("crasher", _python("import time; time.sleep(1); print('bye'); raise SystemExit(3)"))
    assert command._supervise([survivor, crasher], banner="started") == 1
    assert survivor.process.returncode is not None  # stopped, not left running
    assert "crasher exited with code 3" in err.getvalue()
    assert "sleeper  | up" in out.getvalue() and "crasher  | bye" in out.getvalue()
