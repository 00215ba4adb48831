from datetime import timedelta

import pytest

from campaigns.holdouts import holdout_assign
from campaigns.models import Channel, DeliveryStatus
from rules.models import Rule
from rules.selectors import (
    rules_due,
    rules_for_engine,
    rules_touching,
    scope_key,
    segments_in_scope,
    segments_in_scopes,
)
from tests.factories import CampaignFactory, SegmentFactory, UserFactory
from tests.rules.facts import NOW, SYSTEM, active_rule, trigger

pytestmark = pytest.mark.django_db

CTR = trigger(metric="ctr", kind="threshold", direction="below", threshold="0.01")


def test_rules_due__never_evaluated_or_interval_elapsed(workspace):
    never = active_rule(workspace, triggers=[CTR], name="never")
    due = active_rule(workspace, triggers=[CTR], name="due", evaluation_interval_minutes=15)
    recent = active_rule(workspace, triggers=[CTR], name="recent", evaluation_interval_minutes=60)
    paused = active_rule(workspace, triggers=[CTR], name="paused")
    Rule.objects.filter(pk=due.pk).update(last_evaluated_at=NOW - timedelta(minutes=15))
    Rule.objects.filter(pk=recent.pk).update(last_evaluated_at=NOW - timedelta(minutes=30))
    Rule.objects.filter(pk=paused.pk).update(status=Rule.Status.PAUSED)
    assert set(rules_due(now=NOW)) == {never, due}


def test_rules_touching__scope_by_campaigns_and_channel(workspace, other_workspace):
    search = CampaignFactory(workspace=workspace, channel=Channel.SEARCH)
    social = CampaignFactory(workspace=workspace, channel=Channel.SOCIAL)
    everything = active_rule(workspace, triggers=[CTR], name="everything")
    on_search = active_rule(workspace, triggers=[CTR], name="search only", campaigns=[search])
    social_channel = active_rule(workspace, triggers=[CTR], name="social channel", channel=Channel.SOCIAL)
    active_rule(other_workspace, triggers=[CTR], name="elsewhere")
    assert set(rules_touching(workspace_id=workspace.pk, campaign_ids=[search.pk])) == {everything, on_search}
    assert set(rules_touching(workspace_id=workspace.pk, campaign_ids=[social.pk])) == {everything, social_channel}


# --- scopes ----------------------------------------------------------------------------------


@pytest.fixture
def market(workspace, other_workspace):
    """Segments on two channels with criteria, and segments no rule may look at."""
    search = CampaignFactory(workspace=workspace, channel=Channel.SEARCH)
    social = CampaignFactory(workspace=workspace, channel=Channel.SOCIAL)
    segments = {
        "search mobile FR": SegmentFactory(campaign=search, criteria={"device": "mobile", "geo": "FR"}),
        "search desktop DE": SegmentFactory(campaign=search, criteria={"device": "desktop", "geo": "DE"}),
        "social mobile DE": SegmentFactory(campaign=social, criteria={"device": "mobile", "geo": "DE"}),
        "archived": SegmentFactory(campaign=search, status=DeliveryStatus.ARCHIVED),
        "of an archived campaign": SegmentFactory(campaign=CampaignFactory(
            workspace=workspace, channel=Channel.SEARCH, status=DeliveryStatus.ARCHIVED)),
        "held out": SegmentFactory(campaign=social, criteria={"device": "mobile", "geo": "DE"}),
        "elsewhere": SegmentFactory(campaign=CampaignFactory(workspace=other_workspace)),
    }
    holdout_assign(actor=SYSTEM, segments=[segments["held out"]], holder="experiment:1")
    return search, social, segments


# Each rule's scope, and the segments it holds.
SCOPES = {
    "everything": ({}, ["search mobile FR", "search desktop DE", "social mobile DE"]),
    "search campaign": ({"campaigns": "search"}, ["search mobile FR", "search desktop DE"]),
    "both campaigns": ({"campaigns": "both"}, ["search mobile FR", "search desktop DE", "social mobile DE"]),
    "social channel": ({"channel": Channel.SOCIAL}, ["social mobile DE"]),
    "mobile on search": ({"campaigns": "search", "segment_filter": {"device": "mobile"}}, ["search mobile FR"]),
    "DE on search channel": ({"channel": Channel.SEARCH, "segment_filter": {"geo": "DE"}}, ["search desktop DE"]),
    "mobile or tablet": ({"segment_filter": {"device": ["mobile", "tablet"]}},
                         ["search mobile FR", "social mobile DE"]),
    "tablet": ({"segment_filter": {"device": "tablet"}}, []),
}


def test_rules_for_engine__workspace_triggers_and_campaigns_read_in_four_queries__one_workspace_shared(
        workspace, other_workspace, django_assert_num_queries):
    campaign = CampaignFactory(workspace=workspace)
    rules = [active_rule(workspace, triggers=[CTR, CTR], name=f"rule {n}", campaigns=[campaign]) for n in range(3)]
    rules.append(active_rule(other_workspace, triggers=[CTR], name="elsewhere"))
    paused = active_rule(workspace, triggers=[CTR], name="paused")
    Rule.objects.filter(pk=paused.pk).update(status=Rule.Status.PAUSED)

    with django_assert_num_queries(4):
        engine_rules = list(rules_for_engine(rule_ids=[r.pk for r in [*rules, paused]], only_active=True))
        read = [(r.workspace.pk, len(r.triggers.all()), [c.pk for c in r.campaigns.all()]) for r in engine_rules]

    assert {r.pk for r in engine_rules} == {r.pk for r in rules}
    assert sorted(read) == sorted([(workspace.pk, 2, [campaign.pk])] * 3 + [(other_workspace.pk, 1, [])])
    assert len({id(r.workspace) for r in engine_rules if r.workspace_id == workspace.pk}) == 1


def _scope_rules(workspace, search, social) -> dict[str, Rule]:
    campaigns = {"search": [search], "both": [search, social]}
    rules = {}
    for name, (scope, _) in SCOPES.items():
        fields = {**scope, "campaigns": campaigns.get(scope.get("campaigns"), [])}
        rules[name] = active_rule(workspace, triggers=[CTR], name=name, **fields)
    engine_rules = {rule.pk: rule for rule in rules_for_engine(rule_ids=[r.pk for r in rules.values()],
                                                               only_active=True)}
    return {name: engine_rules[rule.pk] for name, rule in rules.items()}  # campaigns prefetched, as the engine reads


def test_segments_in_scope__campaigns_channel_and_criteria__never_held_out_nor_archived(workspace, market):
    search, social, segments = market
    for name, rule in _scope_rules(workspace, search, social).items():
        expected = [segments[s].pk for s in SCOPES[name][1]]
        assert list(segments_in_scope(rule).values_list("id", flat=True)) == expected, name


def test_segments_in_scopes__each_scope_holds_exactly_segments_in_scope__in_one_query(
        workspace, market, django_assert_num_queries):
    search, social, segments = market
    rules = _scope_rules(workspace, search, social)

    with django_assert_num_queries(1):
        scopes = segments_in_scopes({scope_key(rule): rule for rule in rules.values()}, fields=("id", "name"))

    ids, names = scopes.columns["id"], scopes.columns["name"]
    for name, rule in rules.items():
        in_scope = [ids[position] for position in scopes.members[scope_key(rule)]]
        assert in_scope == list(segments_in_scope(rule).values_list("id", flat=True)), name
    assert sorted(ids) == ids and names == [segments[s].name for s in SCOPES["everything"][1]]


def test_segments_in_scopes__a_segment_in_no_scope__is_not_read(workspace, market):
    search, social, segments = market
    rules = _scope_rules(workspace, search, social)
    narrow = [rules["social channel"], rules["mobile on search"], rules["tablet"]]

    scopes = segments_in_scopes({scope_key(rule): rule for rule in narrow}, fields=("id",))

    assert scopes.columns["id"] == [segments["search mobile FR"].pk, segments["social mobile DE"].pk]
    assert [scopes.members[scope_key(rule)].tolist() for rule in narrow] == [[1], [0], []]


def test_segments_in_scopes__more_conditions_than_bits_in_one_integer(workspace):
    campaign, empty_campaign = CampaignFactory(workspace=workspace), CampaignFactory(workspace=workspace)
    by_geo = {geo: SegmentFactory(campaign=campaign, criteria={"geo": geo}) for geo in ("G0", "G62", "G63", "G69")}
    # 70 distinct conditions, then rules whose conditions' bits lie in both integers (made in bulk: only read here).
    owner = UserFactory()
    rules = Rule.objects.bulk_create(Rule(workspace=workspace, owner=owner, name=f"geo {n}", action="alert",
                                          segment_filter={"geo": f"G{n}"}) for n in range(70))
    both_words = Rule.objects.bulk_create(Rule(workspace=workspace, owner=owner, name=f"G0 of {c}", action="alert",
                                               segment_filter={"geo": "G0"}) for c in (campaign, empty_campaign))
    for rule, of in zip(both_words, (campaign, empty_campaign), strict=True):
        rule.campaigns.set([of])
    expected = {rule.pk: [by_geo[geo].pk] if (geo := rule.segment_filter["geo"]) in by_geo else [] for rule in rules}
    expected |= {both_words[0].pk: [by_geo["G0"].pk], both_words[1].pk: []}

    scopes = segments_in_scopes({scope_key(rule): rule for rule in [*rules, *both_words]}, fields=("id",))

    assert {rule.pk: [scopes.columns["id"][p] for p in scopes.members[scope_key(rule)]]
            for rule in [*rules, *both_words]} == expected


def test_segments_in_scopes__conditions_equal_in_python_but_not_in_json__are_told_apart(workspace):
    campaign = CampaignFactory(workspace=workspace)
    SegmentFactory(campaign=campaign, criteria={"audience": 1, "device": "mobile"})
    SegmentFactory(campaign=campaign, criteria={"audience": True, "device": "mobile"})
    # Not text, as validation wants: made in bulk, as data written before validation could be.
    rules = Rule.objects.bulk_create([
        Rule(workspace=workspace, owner=UserFactory(), name="one", action="alert", segment_filter={"audience": 1}),
        Rule(workspace=workspace, owner=UserFactory(), name="true", action="alert",
             segment_filter={"audience": True, "device": "mobile"}),
    ])

    scopes = segments_in_scopes({scope_key(rule): rule for rule in rules}, fields=("id",))

    for rule in rules:
        in_scope = [scopes.columns["id"][p] for p in scopes.members[scope_key(rule)]]
        assert in_scope == list(segments_in_scope(rule).values_list("id", flat=True)), rule.name
