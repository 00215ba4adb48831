from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from accounts.models import Workspace
from campaigns.metrics import metric_choices
from campaigns.models import Campaign, Channel, Creative, Segment


class Rule(models.Model):
    """A marketer's rule: triggers over a scope of segments, and a capped action when they fire."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        ARCHIVED = "archived", "Archived"

    class Match(models.TextChoices):
        ALL = "all", "All triggers"
        ANY = "any", "Any trigger"

    class Action(models.TextChoices):
        BID_PCT = "bid_pct", "Change bid by %"
        BUDGET_PCT = "budget_pct", "Change budget by %"
        SET_BID = "set_bid", "Set bid"
        SET_BUDGET = "set_budget", "Set budget"
        PAUSE_SEGMENT = "pause_segment", "Pause segment"
        RESUME_SEGMENT = "resume_segment", "Resume segment"
        PAUSE_CREATIVE = "pause_creative", "Pause creative"
        RESUME_CREATIVE = "resume_creative", "Resume creative"
        ROTATE_CREATIVE = "rotate_creative", "Rotate creative"
        REALLOCATE_BUDGET = "reallocate_budget", "Reallocate budget to the best segments"
        ALERT = "alert", "Alert only"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="rules")
    name = models.CharField(max_length=150)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_rules")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    version = models.PositiveIntegerField(default=1, help_text="Raised on every saved edit.")

    # Scope: which segments the rule looks at. Empty means "no restriction" on that axis.
    campaigns = models.ManyToManyField(Campaign, blank=True, related_name="rules")
    channel = models.CharField(max_length=16, choices=Channel.choices, blank=True)
    segment_filter = models.JSONField(
        default=dict, blank=True, help_text='Segment criteria to match, e.g. {"device": "mobile"}.'
    )
    match = models.CharField(max_length=3, choices=Match.choices, default=Match.ALL)
    evaluation_interval_minutes = models.PositiveIntegerField(default=15)
    active_hours_start = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(23)], help_text="Hour (workspace time) it starts."
    )
    active_hours_end = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(24)], help_text="Hour (workspace time) it stops."
    )

    # Action and its parameters: `action_value` is the % for *_pct and reallocation, the value for set_*.
    action = models.CharField(max_length=24, choices=Action.choices)
    action_value = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    action_params = models.JSONField(default=dict, blank=True, help_text="e.g. {\"rank_metric\": \"roas\"}.")

    # Caps: every capped change records which of these bound it.
    max_step_pct = models.DecimalField(max_digits=6, decimal_places=2, default=Decimal("10"),
                                       validators=[MinValueValidator(Decimal("0"))])
    max_change_per_window_pct = models.DecimalField(max_digits=6, decimal_places=2, default=Decimal("10"),
                                                    validators=[MinValueValidator(Decimal("0"))])
    cap_window_minutes = models.PositiveIntegerField(default=60)
    cooldown_minutes = models.PositiveIntegerField(default=60)
    max_actions_per_day = models.PositiveIntegerField(default=10)
    value_floor = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    value_ceiling = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    max_channel_share_pct = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True)

    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="rule_name_unique_in_workspace"),
        ]

    def __str__(self):
        return self.name


class Trigger(models.Model):
    """One condition of a rule, evaluated per segment over the current window."""

    class Kind(models.TextChoices):
        THRESHOLD = "threshold", "Absolute threshold"
        RELATIVE_CHANGE = "relative_change", "Relative change vs baseline"
        SIGNIFICANT_CHANGE = "significant_change", "Statistically significant change vs baseline"
        CONTROL_LIMIT = "control_limit", "Outside control limit (SPC)"

    class Direction(models.TextChoices):
        ABOVE = "above", "Above / rises"
        BELOW = "below", "Below / falls"
        EITHER = "either", "Either way"

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="triggers")
    position = models.PositiveSmallIntegerField(default=0)
    metric = models.CharField(max_length=32, choices=metric_choices())
    kind = models.CharField(max_length=24, choices=Kind.choices)
    direction = models.CharField(max_length=8, choices=Direction.choices, default=Direction.BELOW)
    threshold = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True,
        help_text="Threshold: the metric value. Relative change: the change in % (e.g. 20).",
    )
    window_minutes = models.PositiveIntegerField(default=60)
    baseline_minutes = models.PositiveIntegerField(default=7 * 24 * 60, help_text="Window before the current one.")
    confidence = models.DecimalField(
        max_digits=5, decimal_places=4, default=Decimal("0.95"),
        validators=[MinValueValidator(Decimal("0.5")), MaxValueValidator(Decimal("0.9999"))],
    )
    k_sigma = models.DecimalField(max_digits=4, decimal_places=2, default=Decimal("3"))
    consecutive_windows = models.PositiveSmallIntegerField(default=1)
    min_sample = models.PositiveIntegerField(default=100, help_text="Minimum denominator (e.g. impressions).")

    class Meta:
        ordering = ["rule", "position", "id"]

    def __str__(self):
        return f"{self.get_kind_display()} on {self.metric}"


class Evaluation(models.Model):
    """One run of a rule over one window: the numbers that drove it are kept in `inputs`."""

    class Outcome(models.TextChoices):
        FIRED = "fired", "Fired"
        NOT_FIRED = "not_fired", "Not fired"
        INSUFFICIENT_DATA = "insufficient_data", "Insufficient data"
        SKIPPED_STALE = "skipped_stale", "Skipped: stale data"
        SKIPPED_INACTIVE_HOURS = "skipped_inactive_hours", "Skipped: outside active hours"
        BLOCKED_BY_CAP = "blocked_by_cap", "Blocked by cap"

    class Source(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        EVENT = "event", "New data"
        MANUAL = "manual", "Manual"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="evaluations")
    rule_version = models.PositiveIntegerField()
    window_end = models.DateTimeField()
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.SCHEDULE)
    outcome = models.CharField(max_length=24, choices=Outcome.choices)
    summary = models.TextField(blank=True)
    inputs = models.JSONField(default=dict, help_text="Per segment: values, baselines, statistics, decision.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-window_end", "-id"]
        indexes = [models.Index(fields=["rule", "window_end"])]

    def __str__(self):
        return f"{self.rule} @ {self.window_end:%Y-%m-%d %H:%M}: {self.get_outcome_display()}"


class Change(models.Model):
    """A requested change to one field of one target, after caps; applied at most once."""

    class Status(models.TextChoices):
        PROPOSED = "proposed", "Proposed"
        PENDING = "pending", "Pending approval"
        ESCALATED = "escalated", "Escalated"
        APPROVED = "approved", "Approved"
        APPLIED = "applied", "Applied"
        REJECTED = "rejected", "Rejected"
        EXPIRED = "expired", "Expired"
        BLOCKED = "blocked", "Blocked by cap"
        CONFLICTED = "conflicted", "Conflicted: target moved"
        FAILED = "failed", "Failed"

    class Kind(models.TextChoices):
        RULE = "rule", "Rule"
        MANUAL = "manual", "Manual"
        ROLLBACK = "rollback", "Rollback"
        EXPERIMENT = "experiment", "Experiment"

    class Field(models.TextChoices):
        BID = "bid", "Bid"
        DAILY_BUDGET = "daily_budget", "Daily budget"
        STATUS = "status", "Status"
        ROTATION_ORDER = "rotation_order", "Rotation order"
        NONE = "none", "None (alert)"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.RULE)
    rule = models.ForeignKey(Rule, null=True, blank=True, on_delete=models.SET_NULL, related_name="changes")
    rule_version = models.PositiveIntegerField(null=True, blank=True)
    evaluation = models.ForeignKey(
        Evaluation, null=True, blank=True, on_delete=models.SET_NULL, related_name="changes"
    )
    # Exactly one target: a segment, a creative or a campaign.
    campaign = models.ForeignKey(Campaign, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.CASCADE, related_name="changes")
    creative = models.ForeignKey(Creative, null=True, blank=True, on_delete=models.CASCADE, related_name="changes")
    field = models.CharField(max_length=16, choices=Field.choices)
    # Values are stored as canonical strings (Decimal or status) so one column fits every field.
    old_value = models.CharField(max_length=64, blank=True)
    requested_value = models.CharField(max_length=64, blank=True)
    capped_value = models.CharField(max_length=64, blank=True)
    cap_report = models.JSONField(default=list, blank=True, help_text="Every cap considered and whether it bound.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PROPOSED)
    approval_level = models.PositiveSmallIntegerField(default=0)
    batch_id = models.CharField(max_length=64, blank=True, help_text="Changes that apply together (reallocation).")
    idempotency_key = models.CharField(max_length=200, unique=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["segment", "field", "applied_at"]),
            models.Index(fields=["rule", "created_at"]),
            models.Index(fields=["workspace", "status"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(segment__isnull=False, creative__isnull=True, campaign__isnull=True)
                    | models.Q(segment__isnull=True, creative__isnull=False, campaign__isnull=True)
                    | models.Q(segment__isnull=True, creative__isnull=True, campaign__isnull=False)
                ),
                name="change_has_exactly_one_target",
            ),
        ]

    def __str__(self):
        return f"{self.field} {self.old_value} → {self.capped_value} ({self.get_status_display()})"

    @property
    def target(self):
        return self.segment or self.creative or self.campaign
