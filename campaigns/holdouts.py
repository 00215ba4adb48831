"""Holdouts: segments kept out of automated adjustments, so that their lift can be measured.

A holder (an experiment, named as text, e.g. "experiment:12") holds segments; while any holder
holds a segment, rules leave it alone (`exclude_held_out` is applied to every rule's scope and
to the segments a reallocation may give budget to). These services are the storage only: the
holder's own service decides who may start and end a holdout, and calls them in its transaction.
"""

from collections.abc import Iterable

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet

from audit.actors import Actor
from audit.services import audit_record

from .models import HoldoutAssignment, Segment


def exclude_held_out(segments: QuerySet[Segment]) -> QuerySet[Segment]:
    """The segments that no holder holds out."""
    return segments.exclude(Exists(HoldoutAssignment.objects.filter(segment=OuterRef("pk"))))


def held_out_segment_ids(*, workspace_id: int) -> set[int]:
    rows = HoldoutAssignment.objects.filter(segment__campaign__workspace_id=workspace_id)
    return set(rows.values_list("segment_id", flat=True))


@transaction.atomic
def holdout_assign(*, actor: Actor, segments: Iterable[Segment], holder: str, reason: str = "") -> int:
    """Hold these segments out for `holder`; holding a segment twice for one holder changes nothing."""
    created = 0
    for segment in segments:
        assignment, is_new = HoldoutAssignment.objects.select_related("segment__campaign").get_or_create(
            segment=segment, holder=holder, defaults={"reason": reason[:200]}
        )
        if is_new:
            created += 1
            audit_record(actor=actor, action="holdout.assign", subject=assignment,
                         workspace_id=segment.campaign.workspace_id, reason=reason,
                         after={"segment": segment.pk, "holder": holder})
    return created


@transaction.atomic
def holdout_release(*, actor: Actor, holder: str, reason: str = "") -> int:
    """End every holdout of `holder`; returns how many segments it released."""
    assignments = list(HoldoutAssignment.objects.select_for_update(of=("self",)).filter(holder=holder)
                       .select_related("segment__campaign"))
    for assignment in assignments:
        audit_record(actor=actor, action="holdout.release", subject=assignment,
                     workspace_id=assignment.segment.campaign.workspace_id, reason=reason,
                     before={"segment": assignment.segment_id, "holder": holder})
    HoldoutAssignment.objects.filter(pk__in=[a.pk for a in assignments]).delete()
    return len(assignments)
