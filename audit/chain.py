"""Checking the hash chain of audit events: every row re-hashed, every link followed."""

from collections.abc import Callable
from dataclasses import dataclass

from .models import AuditEvent
from .services import GENESIS_HASH

_BATCH = 2000


@dataclass(frozen=True)
class ChainReport:
    checked: int
    broken_event_id: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_event_id is None


def verify_chain(*, progress: Callable[[int], None] | None = None, progress_every: int = 10_000) -> ChainReport:
    """Walk the events in id order; stop at the first whose hash or link does not hold.

    An edited row no longer matches its own hash; a deleted or inserted row breaks the
    `prev_hash` link of the row after it. Either way the first broken row is named.
    """
    expected_prev = GENESIS_HASH
    checked = 0
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=_BATCH):
        if event.prev_hash != expected_prev:
            return ChainReport(checked, event.pk, "its prev_hash does not match the event before it "
                                                  "(an event was deleted, inserted or re-hashed)")
        if event.compute_hash() != event.hash:
            return ChainReport(checked, event.pk, "its content no longer matches its hash (the row was edited)")
        expected_prev = event.hash
        checked += 1
        if progress is not None and checked % progress_every == 0:
            progress(checked)
    return ChainReport(checked)
