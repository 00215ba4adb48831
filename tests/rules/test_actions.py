"""Each action through the change pipeline: what it asks for, what the caps leave, what is applied."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from campaigns.models import Channel, DeliveryStatus, Segment
from rules.actions import ActionInput, reallocations_for, split_exactly
from rules.models import Change
from tests.factories import CampaignFactory, CreativeFactory, SegmentFactory
from tests.rules.facts import add_buckets
from tests.rules.pipeline_builders import WINDOW_START, reloaded, rule_with_action, run

pytestmark = pytest.mark.django_db
D = Decimal


def caps_that_bound(planned) -> set[str]:
    return {entry["cap"] for entry in planned.cap_report if entry["bound"]}


# --- bids and budgets ----------------------------------------------------------------------

def test_bid_pct__a_raise_within_the_caps__is_applied_with_its_report(workspace):
    segment = SegmentFactory(campaign=CampaignFactory(workspace=workspace), bid=D("1.00"))
    rule = rule_with_action(workspace, "bid_pct", 10)

    [planned] = run(rule, [segment])

    assert (planned.old_value, planned.requested_value, planned.capped_value) == ("1.0000", "1.1000", "1.1000")
    assert planned.change.status == Change.Status.APPLIED and not planned.blocked
    assert caps_that_bound(planned) == set()
    assert reloaded(segment)[0].bid == D("1.1000")


def test_bid_pct__a_raise_beyond_the_max_step__is_capped_to_the_step(workspace):
    segment = SegmentFactory(campaign=CampaignFactory(workspace=workspace), bid=D("2.00"))
    rule = rule_with_action(workspace, "bid_pct", 15, max_step_pct=D("5"))

    [planned] = run(rule, [segment])

    assert (planned.requested_value, planned.capped_value) == ("2.3000", "2.1000")
    assert caps_that_bound(planned) == {"max_step"}
    assert reloaded(segment)[0].bid == D("2.1000")


def test_set_bid__below_the_segment_floor__stops_at_the_floor(workspace):
    segment = SegmentFactory(campaign=CampaignFactory(workspace=workspace), bid=D("0.11"), bid_floor=D("0.10"))
    rule = rule_with_action(workspace, "set_bid", "0.05")

    [planned] = run(rule, [segment])

    assert planned.capped_value == "0.1000"
    assert caps_that_bound(planned) >= {"target_bounds"}


def test_budget_pct__a_raise_in_a_single_channel_workspace__is_blocked_by_the_channel_share(workspace):
    segment = SegmentFactory(campaign=CampaignFactory(workspace=workspace), daily_budget=D("100"))
    rule = rule_with_action(workspace, "budget_pct", 5)

    [planned] = run(rule, [segment])

    assert planned.blocked and planned.change.status == Change.Status.BLOCKED
    assert caps_that_bound(planned) == {"channel_share"}
    assert reloaded(segment)[0].daily_budget == D("100")


def test_budget_pct__raises_in_one_run__share_the_channel_headroom(workspace):
    # Search holds 200 of 1200, limit 20%: room for (0.2 x 1200 - 200) / 0.8 = 50 in total.
    # The first segment takes +40, leaving (0.2 x 1240 - 240) / 0.8 = 10 for the second.
    campaign = CampaignFactory(workspace=workspace, channel=Channel.SEARCH)
    first, second = (SegmentFactory(campaign=campaign, daily_budget=D("100")) for _ in range(2))
    SegmentFactory(campaign=CampaignFactory(workspace=workspace, channel=Channel.SOCIAL), daily_budget=D("1000"),
                   budget_ceiling=D("1000"))
    workspace.guardrail_max_step_pct = workspace.guardrail_max_change_per_hour_pct = D("100")
    workspace.save()  # so that the channel share is what binds
    rule = rule_with_action(workspace, "budget_pct", 40, max_step_pct=D("50"), max_change_per_window_pct=D("50"),
                            max_channel_share_pct=D("20"))

    planned = run(rule, [first, second])

    assert [p.capped_value for p in planned] == ["140.0000", "110.0000"]
    assert caps_that_bound(planned[0]) == set() and caps_that_bound(planned[1]) == {"channel_share"}
    assert (D("240") + 10) / (D("1240") + 10) == D("0.2")


# --- statuses and creatives ---------------------------------------------------------------------

def test_pause_segment__pauses_only_active_fired_segments(workspace):
    campaign = CampaignFactory(workspace=workspace)
    active, paused = SegmentFactory(campaign=campaign), SegmentFactory(campaign=campaign, status=DeliveryStatus.PAUSED)
    rule = rule_with_action(workspace, "pause_segment")

    planned = run(rule, [active, paused])

    assert [(p.target, p.old_value, p.capped_value) for p in planned] == [(active, "active", "paused")]
    assert reloaded(active)[0].status == DeliveryStatus.PAUSED


def test_resume_segment__resumes_a_paused_segment_but_never_an_archived_one(workspace):
    campaign = CampaignFactory(workspace=workspace)
    paused = SegmentFactory(campaign=campaign, status=DeliveryStatus.PAUSED)
    archived = SegmentFactory(campaign=campaign, status=DeliveryStatus.ARCHIVED)
    rule = rule_with_action(workspace, "resume_segment")

    planned = run(rule, [paused, archived])

    assert [p.target for p in planned] == [paused]
    assert reloaded(paused, archived)[0].status == DeliveryStatus.ACTIVE
    assert archived.status == DeliveryStatus.ARCHIVED


def test_pause_creative__pauses_the_campaign_creatives_but_keeps_the_first_in_rotation(workspace):
    campaign = CampaignFactory(workspace=workspace)
    first, second, third = (CreativeFactory(campaign=campaign, rotation_order=i) for i in range(3))
    rule = rule_with_action(workspace, "pause_creative")

    planned = run(rule, [SegmentFactory(campaign=campaign)])

    assert [p.target for p in planned] == [second, third]
    assert [c.status for c in reloaded(first, second, third)] == ["active", "paused", "paused"]


def test_pause_creative__with_listed_creatives__pauses_only_those(workspace):
    campaign = CampaignFactory(workspace=workspace)
    first, second = CreativeFactory(campaign=campaign, rotation_order=0), CreativeFactory(campaign=campaign,
                                                                                          rotation_order=1)
    rule = rule_with_action(workspace, "pause_creative", action_params={"creative_ids": [first.pk]})

    run(rule, [SegmentFactory(campaign=campaign)])

    assert [c.status for c in reloaded(first, second)] == ["paused", "active"]


def test_rotate_creative__moves_the_first_active_creative_to_the_back(workspace):
    campaign = CampaignFactory(workspace=workspace)
    first = CreativeFactory(campaign=campaign, rotation_order=1)
    second = CreativeFactory(campaign=campaign, rotation_order=2)
    CreativeFactory(campaign=campaign, rotation_order=7, status=DeliveryStatus.PAUSED)
    rule = rule_with_action(workspace, "rotate_creative")

    [planned] = run(rule, [SegmentFactory(campaign=campaign), SegmentFactory(campaign=campaign)])

    assert (planned.target, planned.field, planned.old_value, planned.capped_value) == (first, "rotation_order", "1",
                                                                                        "8")
    assert list(campaign.creatives.filter(status="active").values_list("pk", flat=True)) == [second.pk, first.pk]


# --- reallocation ---------------------------------------------------------------------------------

def _campaign_with_ranked_segments(workspace, *, budgets, roas, **segment_fields):
    """Segments with these budgets; those with a ROAS get one bucket of facts in the window."""
    campaign = CampaignFactory(workspace=workspace)
    segments = []
    for budget, value in zip(budgets, roas, strict=True):
        segment = SegmentFactory(campaign=campaign, daily_budget=D(budget), **segment_fields)
        if value is not None:
            add_buckets(segment, [{"impressions": 1000, "clicks": 50, "spend": 10, "revenue": 10 * value}])
        segments.append(segment)
    return campaign, segments


def _total(campaign) -> Decimal:
    return sum(Segment.objects.filter(campaign=campaign).values_list("daily_budget", flat=True), D(0))


def test_reallocate__moves_the_cut_to_the_best_non_firing_segments_and_conserves_the_total(workspace):
    campaign, (a, b, best, second, worst) = _campaign_with_ranked_segments(
        workspace, budgets=["100", "100", "100", "100", "100"], roas=[1, 1, 4, 3, 2])
    rule = rule_with_action(workspace, "reallocate_budget", 10)
    before = _total(campaign)

    planned = run(rule, [a, b])

    assert {p.target.pk: p.capped_value for p in planned} == {
        a.pk: "90.0000", b.pk: "90.0000", best.pk: "110.0000", second.pk: "110.0000"}
    assert {p.change.status for p in planned} == {Change.Status.APPLIED}
    assert len({p.change.batch_id for p in planned}) == 1
    assert _total(campaign) == before
    assert reloaded(worst)[0].daily_budget == D("100")


@pytest.mark.parametrize(
    ("budgets", "ceilings", "pct"),
    [
        # The best receiver is 5 below its ceiling: it takes 5, the second 10; the givers give 15, not 20.
        (["100", "100", "100", "100"], ["500", "500", "105", "500"], 10),
        # Odd amounts: cuts of 3.3333 and 7.7777, split over receivers with a remainder unit.
        (["33.3333", "77.7777", "50.0001", "60"], ["500", "500", "500", "500"], 10),
        # Both receivers at their ceiling: nothing can move, so nothing is cut.
        (["100", "100", "100", "100"], ["500", "500", "100", "100"], 10),
        # A cut larger than the max step (10%): each side capped, the total still kept.
        (["100", "80", "95.5", "120"], ["500", "500", "101", "500"], 40),
    ],
)
def test_reallocate__when_caps_bind__the_campaign_total_is_conserved_exactly(workspace, budgets, ceilings, pct):
    campaign, segments = _campaign_with_ranked_segments(workspace, budgets=budgets, roas=[None, None, 5, 4],
                                                        budget_floor=D("1"))
    for segment, ceiling in zip(segments, ceilings, strict=True):
        Segment.objects.filter(pk=segment.pk).update(budget_ceiling=D(ceiling))
    rule = rule_with_action(workspace, "reallocate_budget", pct)
    before = _total(campaign)

    planned = run(rule, segments[:2])

    assert _total(campaign) == before
    gave = sum(D(p.old_value) - D(p.capped_value) for p in planned[:2])
    took = sum(D(p.capped_value) - D(p.old_value) for p in planned[2:])
    assert gave == took >= 0
    assert all(D(p.capped_value) <= D(ceiling) for p, ceiling in zip(planned[2:], ceilings[2:], strict=True))


def test_reallocate__a_receiver_at_its_ceiling__reduces_the_givers_and_says_so(workspace):
    campaign, (a, b, best, second) = _campaign_with_ranked_segments(
        workspace, budgets=["100", "100", "100", "100"], roas=[None, None, 5, 4])
    Segment.objects.filter(pk=best.pk).update(budget_ceiling=D("105"))
    rule = rule_with_action(workspace, "reallocate_budget", 10)

    planned = {p.target.pk: p for p in run(rule, [a, b])}

    assert planned[best.pk].capped_value == "105.0000" and "target_bounds" in caps_that_bound(planned[best.pk])
    assert planned[a.pk].capped_value == "92.5000" and "budget_conservation" in caps_that_bound(planned[a.pk])
    assert planned[b.pk].capped_value == "92.5000"


def test_reallocate__ranks_the_receivers_in_one_aggregate_query(workspace):
    campaign, (a, *others) = _campaign_with_ranked_segments(workspace, budgets=["100"] * 5, roas=[1, 2, 3, 4, 5])
    rule = rule_with_action(workspace, "reallocate_budget", 10, action_params={"rank_metric": "roas",
                                                                               "receiver_count": 3})
    a = Segment.objects.select_related("campaign").get(pk=a.pk)

    with CaptureQueriesContext(connection) as queries:
        [plan] = reallocations_for(ActionInput(rule, [a], WINDOW_START, WINDOW_START.replace(hour=12)))

    assert len(queries) == 1
    assert [s.pk for s in plan.receivers] == [others[3].pk, others[2].pk, others[1].pk]


def test_split_exactly__sums_to_the_total_and_gives_remainders_to_the_first_parts():
    assert split_exactly(D("1.0000"), [D(1)] * 3) == [D("0.3334"), D("0.3333"), D("0.3333")]
    parts = split_exactly(D("15"), [D("10"), D("10"), D("0")])
    assert parts == [D("7.5000"), D("7.5000"), D("0")] and sum(parts) == D("15")


# --- alert and dry run ------------------------------------------------------------------------------

def test_alert__records_one_audit_event_per_window_and_no_change(workspace):
    segment = SegmentFactory(campaign=CampaignFactory(workspace=workspace))
    rule = rule_with_action(workspace, "alert")

    assert run(rule, [segment]) == [] and run(rule, [segment]) == []

    assert not Change.objects.exists()
    [event] = AuditEvent.objects.filter(action="rule.alert")
    assert event.after["segment_ids"] == [segment.pk] and event.after["rule"] == rule.pk


def test_dry_run__returns_the_plan_and_writes_nothing(workspace):
    segment = SegmentFactory(campaign=CampaignFactory(workspace=workspace), bid=D("1.00"))
    rule = rule_with_action(workspace, "bid_pct", 10)
    events = AuditEvent.objects.count()

    [planned] = run(rule, [segment], dry_run=True)

    assert planned.capped_value == "1.1000" and planned.change is None
    assert not Change.objects.exists() and AuditEvent.objects.count() == events
    assert reloaded(segment)[0].bid == D("1.00")


def test_fired_segments_of_another_workspace__are_never_touched(workspace, other_workspace):
    foreign = SegmentFactory(campaign=CampaignFactory(workspace=other_workspace), bid=D("1.00"))
    rule = rule_with_action(workspace, "bid_pct", 10)

    assert run(rule, [foreign]) == []
    assert reloaded(foreign)[0].bid == D("1.00")
