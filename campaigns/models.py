from dataclasses import dataclass
from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

from accounts.models import Workspace

from .metrics import DERIVED_METRICS, VIRTUAL_DENOMINATORS, DerivedMetric, MetricKind

_MONEY = {"max_digits": 14, "decimal_places": 4}
_NON_NEGATIVE = [MinValueValidator(Decimal("0"))]


class Channel(models.TextChoices):
    SEARCH = "search", "Search"
    SOCIAL = "social", "Social"
    DISPLAY = "display", "Display"
    VIDEO = "video", "Video"
    SHOPPING = "shopping", "Shopping"


class DeliveryStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    ARCHIVED = "archived", "Archived"


class Campaign(models.Model):
    class Objective(models.TextChoices):
        CONVERSIONS = "conversions", "Conversions"
        REVENUE = "revenue", "Revenue"
        TRAFFIC = "traffic", "Traffic"
        AWARENESS = "awareness", "Awareness"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=150)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    objective = models.CharField(max_length=16, choices=Objective.choices, default=Objective.CONVERSIONS)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.ACTIVE)
    daily_budget = models.DecimalField(**_MONEY, validators=_NON_NEGATIVE)
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True)
    external_id = models.CharField(max_length=100, blank=True, help_text="Id on the ad platform.")
    # Freshness: when metrics last arrived and the newest bucket they covered.
    metrics_received_at = models.DateTimeField(null=True, blank=True)
    metrics_latest_bucket = models.DateTimeField(null=True, blank=True)
    data_quality_flag = models.CharField(
        max_length=200, blank=True, help_text="Set by a data-quality check; rules skip flagged data."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="campaign_name_unique_in_workspace"),
            models.UniqueConstraint(
                fields=["workspace", "external_id"],
                condition=~models.Q(external_id=""),
                name="campaign_external_id_unique_in_workspace",
            ),
            models.CheckConstraint(condition=models.Q(daily_budget__gte=0), name="campaign_budget_non_negative"),
            models.CheckConstraint(
                condition=models.Q(end_date__isnull=True) | models.Q(end_date__gte=models.F("start_date")),
                name="campaign_end_after_start",
            ),
        ]

    def __str__(self):
        return self.name


class Segment(models.Model):
    """A micro-segment (ad set): who it targets, what it bids and spends, and its bounds."""

    CRITERIA_KEYS = ("device", "source", "geo", "intent", "audience", "daypart")

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="segments")
    name = models.CharField(max_length=150)
    criteria = models.JSONField(
        default=dict, blank=True, help_text='Attributes it targets, e.g. {"device": "mobile", "geo": "FR"}.'
    )
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.ACTIVE)
    bid = models.DecimalField(**_MONEY, validators=_NON_NEGATIVE)
    daily_budget = models.DecimalField(**_MONEY, validators=_NON_NEGATIVE)
    bid_floor = models.DecimalField(**_MONEY, default=Decimal("0"), validators=_NON_NEGATIVE)
    bid_ceiling = models.DecimalField(**_MONEY, validators=_NON_NEGATIVE)
    budget_floor = models.DecimalField(**_MONEY, default=Decimal("0"), validators=_NON_NEGATIVE)
    budget_ceiling = models.DecimalField(**_MONEY, validators=_NON_NEGATIVE)
    external_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["campaign", "name"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "name"], name="segment_name_unique_in_campaign"),
            models.CheckConstraint(
                condition=models.Q(bid_floor__lte=models.F("bid"), bid__lte=models.F("bid_ceiling")),
                name="segment_bid_within_bounds",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    budget_floor__lte=models.F("daily_budget"), daily_budget__lte=models.F("budget_ceiling")
                ),
                name="segment_budget_within_bounds",
            ),
        ]

    def __str__(self):
        return f"{self.campaign} / {self.name}"

    @property
    def workspace_id(self) -> int:
        return self.campaign.workspace_id


class Creative(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="creatives")
    name = models.CharField(max_length=150)
    headline = models.CharField(max_length=200)
    call_to_action = models.CharField(max_length=60, blank=True)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.ACTIVE)
    rotation_order = models.PositiveIntegerField(default=0, help_text="Lower serves first when rotating.")
    external_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["campaign", "rotation_order", "name"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "name"], name="creative_name_unique_in_campaign"),
        ]

    def __str__(self):
        return f"{self.campaign} / {self.name}"

    @property
    def workspace_id(self) -> int:
        return self.campaign.workspace_id


COUNTER_FIELDS = (
    "impressions",
    "clicks",
    "conversions",
    "micro_conversions",
    "sessions",
    "engaged_seconds",
    "bounces",
    "video_starts",
    "video_completions",
)
MONEY_FIELDS = ("revenue", "spend")


class MetricFact(models.Model):
    """Counters of one segment (and optionally creative and experiment variant) in one time bucket.

    `creative_key` is the creative's id or 0: a nullable column cannot take part in a
    portable unique key (NULLs never conflict), and the upsert relies on that key.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="metric_facts")
    creative = models.ForeignKey(Creative, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    creative_key = models.BigIntegerField(default=0)
    variant = models.CharField(max_length=64, blank=True, default="", help_text="Experiment variant key.")
    bucket_start = models.DateTimeField()
    impressions = models.BigIntegerField(default=0)
    clicks = models.BigIntegerField(default=0)
    conversions = models.BigIntegerField(default=0)
    micro_conversions = models.BigIntegerField(default=0)
    sessions = models.BigIntegerField(default=0)
    engaged_seconds = models.BigIntegerField(default=0)
    bounces = models.BigIntegerField(default=0)
    video_starts = models.BigIntegerField(default=0)
    video_completions = models.BigIntegerField(default=0)
    revenue = models.DecimalField(**_MONEY, default=Decimal("0"))
    spend = models.DecimalField(**_MONEY, default=Decimal("0"))
    ingested_at = models.DateTimeField()

    class Meta:
        ordering = ["bucket_start"]
        constraints = [
            models.UniqueConstraint(
                fields=["segment", "creative_key", "variant", "bucket_start"], name="metric_fact_unique_key"
            ),
            models.CheckConstraint(
                condition=models.Q(clicks__lte=models.F("impressions")), name="metric_fact_clicks_le_impressions"
            ),
            models.CheckConstraint(
                condition=models.Q(
                    impressions__gte=0, clicks__gte=0, conversions__gte=0, micro_conversions__gte=0,
                    sessions__gte=0, engaged_seconds__gte=0, bounces__gte=0, video_starts__gte=0,
                    video_completions__gte=0, revenue__gte=0, spend__gte=0,
                ),
                name="metric_fact_counters_non_negative",
            ),
        ]
        indexes = [
            models.Index(fields=["workspace", "bucket_start"]),
            models.Index(fields=["campaign", "bucket_start"]),
            models.Index(fields=["segment", "bucket_start"]),
        ]

    def __str__(self):
        return f"{self.segment_id} @ {self.bucket_start:%Y-%m-%d %H:%M}"


@dataclass(frozen=True)
class MomentColumns:
    """The MetricDay columns of one ratio metric's per-bucket moments over the day.

    A bucket's value is numerator / denominator of the bucket's totals. A virtual denominator
    (spend pace's budget) is the same in every bucket, so only the squares of the numerator are
    kept: `buckets` and `total` are None then.
    """

    buckets: str | None  # buckets with a non-zero denominator
    total: str | None  # sum of their values
    squares: str  # sum of the squares of their values (of the numerator, for a virtual denominator)


def moment_columns(metric: DerivedMetric) -> MomentColumns:
    if metric.denominator in VIRTUAL_DENOMINATORS:
        return MomentColumns(None, None, f"{metric.name}_squares")
    return MomentColumns(f"{metric.name}_buckets", f"{metric.name}_total", f"{metric.name}_squares")


# The metrics whose per-bucket values triggers judge (Welch, X-bar chart): rollups keep their moments.
ROLLUP_RATIOS = tuple(m for m in DERIVED_METRICS.values() if m.kind == MetricKind.RATIO)


class MetricDay(models.Model):
    """The facts of one segment over a part of one UTC day, summed: a rollup, rebuilt from the facts.

    Each (segment, day) has a row for the whole day (`hour` 0, `hours` 24) and, where buckets
    tile them, one per quarter of the day and per 2-hour block (`hours` from `hour`; see
    `campaigns.rollups.PART_HOURS`): a day holding the boundary of a rule's window can still be
    read from the parts the boundary is not in.
    Every stored counter of MetricFact is summed (as float8, as the engine reads them), and for
    each ratio metric of the registry the moments of its per-bucket values (`moment_columns`,
    added below the class from `ROLLUP_RATIOS`). Rows are written only by
    `campaigns.rollups.metric_days_refresh`, for days that no write has touched since
    (`StaleMetricDay`); the engine reads them instead of the facts while that day stays clean.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+", db_index=False)
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+", db_index=False)
    day = models.DateField()
    hour = models.PositiveSmallIntegerField(help_text="The first hour (UTC) of the part of the day summed.")
    hours = models.PositiveSmallIntegerField(help_text="How many hours are summed: 24 for the whole day.")

    class Meta:
        ordering = ["day", "segment", "hour", "-hours"]
        constraints = [models.UniqueConstraint(fields=["segment", "day", "hour", "hours"],
                                               name="metric_day_unique_segment_part")]
        indexes = [models.Index(fields=["workspace", "day", "hour", "hours"], name="metric_day_workspace_part")]

    def __str__(self):
        return f"{self.segment_id} on {self.day}, {self.hours} h from {self.hour:02d}:00"


def _metric_day_columns() -> dict[str, models.Field]:
    columns = {name: models.FloatField(default=0) for name in (*COUNTER_FIELDS, *MONEY_FIELDS)}
    for metric in ROLLUP_RATIOS:
        names = moment_columns(metric)
        if names.buckets:
            columns[names.buckets] = models.IntegerField(default=0)
            columns[names.total] = models.FloatField(default=0)
        columns[names.squares] = models.FloatField(default=0)
    return columns


for _name, _field in _metric_day_columns().items():
    MetricDay.add_to_class(_name, _field)


class StaleMetricDay(models.Model):
    """A UTC day of a workspace whose facts changed since its MetricDay rows were built (or never were).

    Database triggers on MetricFact (migration 0004) insert it, or raise its `version`, on every
    insert, update and delete of a fact of that day, whoever writes; a refresh deletes it only if
    `version` is still the one it read, so a write during the refresh keeps the day stale.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    day = models.DateField()
    version = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["workspace", "day"]
        constraints = [models.UniqueConstraint(fields=["workspace", "day"], name="stale_metric_day_unique")]

    def __str__(self):
        return f"{self.workspace_id} on {self.day} (version {self.version})"


class IngestionBatch(models.Model):
    """One accepted batch of metric facts: its outcome, and the idempotency key that guards replays.

    A key is bound to the fingerprint (SHA-256) of the payload it first came with: the same
    key with the same payload replays the stored outcome, with another payload it is refused.
    Batches sent without a key are recorded too, as the ingestion log.
    """

    class Source(models.TextChoices):
        ROWS = "rows", "Rows (API or code)"
        CSV = "csv", "CSV file"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    idempotency_key = models.CharField(max_length=255, blank=True)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the payload.")
    source = models.CharField(max_length=8, choices=Source.choices)
    actor_label = models.CharField(max_length=150)
    rows_received = models.PositiveIntegerField()
    rows_created = models.PositiveIntegerField()
    rows_updated = models.PositiveIntegerField()
    campaign_ids = models.JSONField(default=list)
    bucket_min = models.DateTimeField()
    bucket_max = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ingestion batches"
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="ingestion_batch_key_unique_in_workspace",
            ),
        ]

    def __str__(self):
        return f"Batch #{self.pk}: {self.rows_received} rows ({self.get_source_display()})"


class HoldoutAssignment(models.Model):
    """A segment kept out of automated adjustments while its holder needs it: rules never change it.

    Experiments hold segments out to measure what the adjustments are worth (incrementality).
    `holder` names who holds the segment (e.g. "experiment:12") as plain text, because campaigns
    imports no other app; a segment is adjustable again once no holder holds it.
    """

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="holdout_assignments")
    holder = models.CharField(max_length=64)
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["segment", "holder"]
        constraints = [
            models.UniqueConstraint(fields=["segment", "holder"], name="holdout_assignment_unique"),
        ]

    def __str__(self):
        return f"{self.segment} held out by {self.holder}"

    @property
    def workspace_id(self) -> int:
        return self.segment.campaign.workspace_id
