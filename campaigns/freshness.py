"""When a campaign's metrics are too old, or untrustworthy, to act on: the one rule.

The rules engine refuses to change anything on such data, and the dashboards and the admin's
"today" page show the same verdict, so what a person sees as stale is exactly what a rule skips.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from accounts.models import Workspace

FRESH, STALE, FLAGGED, NO_DATA = "fresh", "stale", "flagged", "no data"


@dataclass(frozen=True)
class MetricsFreshness:
    state: str  # FRESH, STALE, FLAGGED or NO_DATA
    age_minutes: int | None  # None when no metrics were received yet
    limit_minutes: int
    flag: str  # the data-quality check's note, when flagged

    @property
    def is_fresh(self) -> bool:
        return self.state == FRESH


def metrics_freshness(*, received_at: datetime | None, latest_bucket: datetime | None, quality_flag: str,
                      workspace: Workspace, now: datetime) -> MetricsFreshness:
    """From a campaign's `metrics_received_at`, `metrics_latest_bucket` and `data_quality_flag`.

    A flag wins over everything; then data never received; then age above the workspace's limit.
    """
    limit = workspace.freshness_limit_minutes
    age = None
    if received_at is not None and latest_bucket is not None:
        # The newest bucket's data is as recent as that bucket's end.
        newest = latest_bucket + timedelta(minutes=workspace.metric_bucket_minutes)
        age = now - min(received_at, newest)
    if quality_flag:
        state = FLAGGED
    elif age is None:
        state = NO_DATA
    else:
        state = STALE if age > timedelta(minutes=limit) else FRESH
    age_minutes = None if age is None else int(age.total_seconds() // 60)
    return MetricsFreshness(state, age_minutes, limit, quality_flag)
