"""Reads of rules, their scopes, evaluations and changes."""

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.db.models import BigIntegerField, Case, Func, Q, QuerySet, Value, When

from campaigns.holdouts import exclude_held_out
from campaigns.models import Campaign, DeliveryStatus, Segment

from .models import Rule


def rules_due(*, now: datetime) -> QuerySet[Rule]:
    """Active rules never evaluated, or whose last evaluation is at least their interval old."""
    active = Rule.objects.filter(status=Rule.Status.ACTIVE)
    # Intervals are few distinct values: one condition per value keeps the test in SQL,
    # portable across databases (no interval arithmetic on columns).
    intervals = active.order_by().values_list("evaluation_interval_minutes", flat=True).distinct()
    due = Q(last_evaluated_at__isnull=True)
    for minutes in intervals:
        due |= Q(evaluation_interval_minutes=minutes, last_evaluated_at__lte=now - timedelta(minutes=minutes))
    return active.filter(due)


def rules_touching(*, workspace_id: int, campaign_ids: list[int]) -> QuerySet[Rule]:
    """Active rules of the workspace whose scope covers at least one of these campaigns."""
    channels = Campaign.objects.filter(workspace_id=workspace_id, pk__in=campaign_ids).values("channel")
    return (
        Rule.objects.filter(workspace_id=workspace_id, status=Rule.Status.ACTIVE)
        .filter(Q(campaigns__isnull=True) | Q(campaigns__in=campaign_ids))
        .filter(Q(channel="") | Q(channel__in=channels))
        .distinct()
    )


def segments_in_scope(rule: Rule) -> QuerySet[Segment]:
    """The live segments a rule looks at: its workspace, campaigns, channel and segment criteria.

    Segments held out by an experiment (campaigns.holdouts) are never in scope: they measure
    what the adjustments are worth, so no rule may adjust them.
    Reads `rule.campaigns.all()`, so a prefetched rule costs no extra query.
    """
    return _live_segments(rule.workspace_id).filter(*_scope_conditions(rule)).order_by("pk")


@dataclass(frozen=True)
class ScopeMembers:
    """The segments of several scopes of one workspace, as `segments_in_scopes` reads them."""

    columns: dict[str, list]  # per field asked for, its values for every segment in at least one scope, by pk
    members: dict[Hashable, np.ndarray]  # per scope, the positions in `columns` of its segments (ascending)


def segments_in_scopes(scopes: Mapping[Hashable, Rule], *, fields: Sequence[str]) -> ScopeMembers:
    """`segments_in_scope` of each of these rules (one per scope, all of one workspace), in one query.

    A scope is its workspace's live segments that meet all of its conditions. The query reads
    each live segment once with, per distinct condition of all the scopes, one bit telling
    whether the segment meets it (packed into integers of `_BITS` bits); a scope's segments are
    those with all of its conditions' bits. The database evaluates the very conditions
    `segments_in_scope` filters on, so both always agree, and there are far fewer distinct
    conditions than scopes (a campaign, a channel or a criterion serves many). Per-scope queries
    cost ~1 ms each in Django alone, and a cycle has hundreds of scopes.
    """
    [workspace_id] = {rule.workspace_id for rule in scopes.values()}
    conditions = {key: _scope_conditions(rule) for key, rule in scopes.items()}
    # Conditions are told apart by their repr: Q equality takes 1 and True (JSON 1 and true) for one.
    by_repr = {repr(q): q for qs in conditions.values() for q in qs}
    bit, distinct = {name: n for n, name in enumerate(by_repr)}, list(by_repr.values())
    words = {f"_scope_bits_{n}": _bit_word(distinct[start:start + _BITS])
             for n, start in enumerate(range(0, len(distinct), _BITS))}
    rows = list(_live_segments(workspace_id).annotate(**words).order_by("pk").values_list(*fields, *words))
    met = np.array([row[len(fields):] for row in rows], dtype=np.int64).reshape(len(rows), len(words))
    members = {key: np.flatnonzero(_meets_all(met, [bit[repr(q)] for q in qs])) for key, qs in conditions.items()}
    in_any = np.zeros(len(rows), dtype=bool)
    for positions in members.values():
        in_any[positions] = True
    # A segment in no scope is dropped: positions count the segments kept.
    kept = [row for row, keep in zip(rows, in_any.tolist(), strict=True) if keep]
    position = np.cumsum(in_any) - 1
    return ScopeMembers({name: [row[n] for row in kept] for n, name in enumerate(fields)},
                        {key: position[rows_met] for key, rows_met in members.items()})


# Bits per integer: SQLite and PostgreSQL integers are signed 64-bit; the sign bit stays clear.
_BITS = 63


def _bit_word(conditions: list[Q]) -> Func:
    """The sum of 2**i for each i-th condition the row meets (an integer of `_BITS` bits)."""
    # In ascending powers of two, each partial sum fits the integer type the database gives its
    # last term's literal, so no intermediate sum overflows.
    terms = [Case(When(q, then=Value(1 << i)), default=Value(0)) for i, q in enumerate(conditions)]
    # One flat sum: a chain of 63 additions costs Django more to build and compile than the query to run.
    return Func(*terms, template="(%(expressions)s)", arg_joiner=" + ", output_field=BigIntegerField())


def _meets_all(words: np.ndarray, bits: list[int]) -> np.ndarray:
    """Per row, whether all these bits are set (no bits: every row)."""
    met = np.ones(len(words), dtype=bool)
    for word in range(words.shape[1]):
        mask = sum(1 << (bit - word * _BITS) for bit in bits if bit // _BITS == word)
        if mask:
            met &= (words[:, word] & mask) == mask
    return met


def _live_segments(workspace_id: int) -> QuerySet[Segment]:
    """The workspace's segments any rule may look at: not archived (nor their campaign), not held out."""
    return exclude_held_out(Segment.objects.filter(campaign__workspace_id=workspace_id)).exclude(
        Q(status=DeliveryStatus.ARCHIVED) | Q(campaign__status=DeliveryStatus.ARCHIVED)
    )


def _scope_conditions(rule: Rule) -> list[Q]:
    """What narrows a rule's scope among its workspace's live segments (all must hold): campaigns, channel, criteria."""
    conditions = []
    campaign_ids = [c.pk for c in rule.campaigns.all()]
    if campaign_ids:
        conditions.append(Q(campaign_id__in=sorted(campaign_ids)))
    if rule.channel:
        conditions.append(Q(campaign__channel=rule.channel))
    for key, value in (rule.segment_filter or {}).items():
        lookup = f"criteria__{key}__in" if isinstance(value, list) else f"criteria__{key}"
        conditions.append(Q(**{lookup: value}))
    return conditions


def scope_key(rule: Rule) -> tuple:
    """Rules with equal keys look at the same segments: their aggregates are shared."""
    campaign_ids = tuple(sorted(c.pk for c in rule.campaigns.all()))
    criteria = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in rule.segment_filter.items()))
    return rule.workspace_id, campaign_ids, rule.channel, criteria


def rules_for_engine(*, rule_ids: list[int], only_active: bool) -> QuerySet[Rule]:
    """The rules with all the engine reads of them: their workspace, triggers and campaigns, in four queries.

    The workspace is prefetched, not joined: rules of one workspace share one Workspace instead of
    building a copy per rule (a cycle reads a thousand rules of one workspace).
    """
    rules = Rule.objects.filter(pk__in=rule_ids).prefetch_related("workspace", "triggers", "campaigns")
    return rules.filter(status=Rule.Status.ACTIVE) if only_active else rules
