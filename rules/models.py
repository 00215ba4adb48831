from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
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
        # A guard metric broke its limit: alert the approvers, and pause the fired segments when
        # action_params {"pause": true} (the pause goes through caps and approval policy).
        ESCALATE_ALERT = "escalate_alert", "Escalate to approvers (optionally pause)"

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
    """One run of a rule over one window: the settings in `inputs`, the numbers that drove each
    segment's decision in `numbers` (columns; read them with `rules.decisions.evaluation_segment_rows`)."""

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
    inputs = models.JSONField(default=dict, help_text="Settings, decisions per outcome, fired segments.")
    numbers = models.BinaryField(default=bytes, editable=False,
                                 help_text="Per segment: values, baselines, statistics, decision (columns).")
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
    # Governance (rules.policy, rules.approvals): why the policy routed it, when its approval
    # level's SLA runs out (then it escalates), when it expires unapproved, and a revision that
    # every edit raises (part of the content an approval is bound to).
    policy_report = models.JSONField(default=list, blank=True, help_text="Every policy check and whether it held.")
    sla_due_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revision = models.PositiveIntegerField(default=0)
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
            models.Index(fields=["status", "sla_due_at"]),
            models.Index(fields=["status", "expires_at"]),
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
        # What get_status_display() shows, without its rebuilding the field's choices on each call
        # (a rules cycle's audit trail names thousands of changes).
        try:
            status = self.Status(self.status).label
        except ValueError:
            status = self.status
        return f"{self.field} {self.old_value} → {self.capped_value} ({status})"

    @property
    def target(self):
        return self.segment or self.creative or self.campaign


# --- Governance: approval policy, approvals, notifications, connectors ---------------------------

def default_level_sla_minutes() -> list[int]:
    return [60, 240]


def default_always_require_approval() -> list[str]:
    return [ApprovalPolicy.Gate.PAUSE_CAMPAIGN]


class ApprovalPolicy(models.Model):
    """When a change may apply by itself, and when it may not, who approves it and how fast.

    One policy per workspace (campaign blank), optionally one per campaign, which replaces the
    workspace's for the changes of that campaign (its segments and creatives included). A
    workspace without a policy uses the defaults of these fields (rules.policy).
    """

    class Gate(models.TextChoices):
        PAUSE_CAMPAIGN = "pause_campaign", "Pausing a campaign"
        PAUSE_SEGMENT = "pause_segment", "Pausing a segment"
        PAUSE_CREATIVE = "pause_creative", "Pausing a creative"
        RESUME = "resume", "Resuming anything paused"
        REALLOCATION = "reallocation", "Any budget reallocation"
        MANUAL = "manual", "Any manual change"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="approval_policies")
    campaign = models.ForeignKey(
        Campaign, null=True, blank=True, on_delete=models.CASCADE, related_name="approval_policies",
        help_text="Blank: the workspace's policy. Set: replaces it for this campaign's changes.",
    )
    auto_apply_max_pct = models.DecimalField(
        max_digits=6, decimal_places=2, default=Decimal("10"), validators=[MinValueValidator(Decimal("0"))],
        help_text="A change moving its value by more than this (in %) needs approval.",
    )
    auto_apply_max_daily_amount = models.DecimalField(
        max_digits=14, decimal_places=2, default=Decimal("500"), validators=[MinValueValidator(Decimal("0"))],
        help_text="Daily budget that auto-applied changes may move in 24 hours (workspace currency); "
                  "beyond it, changes need approval.",
    )
    always_require_approval = models.JSONField(
        default=default_always_require_approval, blank=True,
        help_text="Kinds of change that always need approval, whatever their size: " + ", ".join(Gate.values) + ".",
    )
    level_sla_minutes = models.JSONField(
        default=default_level_sla_minutes,
        help_text="Minutes each approval level has before the change escalates to the next, e.g. [60, 240] "
                  "for two levels.",
    )
    approvals_required = models.PositiveSmallIntegerField(
        default=1, help_text="Distinct approvers who must approve the same content (four eyes and more)."
    )
    pending_expiry_minutes = models.PositiveIntegerField(
        default=720, help_text="A change still waiting after this long expires: its data has gone stale."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace", "campaign"]
        verbose_name_plural = "approval policies"
        constraints = [
            models.UniqueConstraint(fields=["workspace"], condition=models.Q(campaign__isnull=True),
                                    name="one_workspace_approval_policy"),
            models.UniqueConstraint(fields=["workspace", "campaign"], condition=models.Q(campaign__isnull=False),
                                    name="one_approval_policy_per_campaign"),
            models.CheckConstraint(condition=models.Q(approvals_required__gte=1),
                                   name="approval_policy_needs_an_approval"),
            models.CheckConstraint(condition=models.Q(pending_expiry_minutes__gt=0),
                                   name="approval_policy_expiry_positive"),
        ]

    def __str__(self):
        return f"Approval policy of {self.campaign or self.workspace}"

    def clean(self):
        errors = {}
        levels = self.level_sla_minutes
        if not (isinstance(levels, list) and 1 <= len(levels) <= 9
                and all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in levels)):
            errors["level_sla_minutes"] = ("Give one positive number of minutes per level, e.g. [60, 240] "
                                           "(1 to 9 levels).")
        gates = self.always_require_approval
        if not isinstance(gates, list) or not set(gates) <= set(self.Gate.values):
            errors["always_require_approval"] = f"Choose among: {', '.join(self.Gate.values)}."
        if self.campaign_id is not None and self.campaign.workspace_id != self.workspace_id:
            errors["campaign"] = "The campaign belongs to another workspace."
        if errors:
            raise ValidationError(errors)

    @property
    def max_level(self) -> int:
        return len(self.level_sla_minutes)

    def sla_minutes(self, level: int) -> int:
        return self.level_sla_minutes[min(level, self.max_level) - 1]


class Approval(models.Model):
    """One decision on a change (or the policy's auto-approval), bound to the content it saw."""

    class Decision(models.TextChoices):
        AUTO = "auto", "Auto-approved by the policy"
        APPROVE = "approve", "Approved"
        REJECT = "reject", "Rejected"
        ESCALATE = "escalate", "Escalated"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    change = models.ForeignKey(Change, on_delete=models.CASCADE, related_name="approvals")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    level = models.PositiveSmallIntegerField(help_text="The change's approval level when decided (0: auto).")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    actor_label = models.CharField(max_length=150)
    comment = models.TextField(blank=True)
    content_hash = models.CharField(max_length=64, help_text="SHA-256 of the change's content when decided.")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["change", "created_at", "id"]
        indexes = [models.Index(fields=["change", "decision"])]

    def __str__(self):
        return f"{self.get_decision_display()} by {self.actor_label} (change #{self.change_id})"


class NotificationEvent(models.TextChoices):
    CHANGE_PENDING = "change.pending", "A change awaits approval"
    CHANGE_ESCALATED = "change.escalated", "A change was escalated"
    CHANGE_APPLIED = "change.applied", "An approved change was applied"
    CHANGE_REJECTED = "change.rejected", "A change was rejected"
    CHANGE_EXPIRED = "change.expired", "A change expired unapproved"
    CHANGE_NOT_APPLIED = "change.not_applied", "An approved change could not be applied"
    ALERT_ESCALATED = "alert.escalated", "A guard metric broke its limit"


class NotificationEndpoint(models.Model):
    """An outbound webhook for governance events, signed with its own secret (shown once)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="notification_endpoints")
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=80, editable=False)
    events = models.JSONField(default=list, blank=True, help_text="Events to send; empty = every event.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workspace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="notification_endpoint_name_unique"),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        if not isinstance(self.events, list) or not set(self.events) <= set(NotificationEvent.values):
            raise ValidationError({"events": f"Choose among: {', '.join(NotificationEvent.values)}."})
        _require_http(self.url)

    def wants(self, event: str) -> bool:
        return self.enabled and (not self.events or event in self.events)


class NotificationDelivery(models.Model):
    """One e-mail or webhook call: what was sent to whom, every attempt's outcome."""

    class Channel(models.TextChoices):
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=32, choices=NotificationEvent.choices)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    endpoint = models.ForeignKey(NotificationEndpoint, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="deliveries")
    recipient = models.CharField(max_length=500, help_text="E-mail address or webhook URL.")
    change = models.ForeignKey(Change, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    subject = models.CharField(max_length=200)
    payload = models.JSONField(default=dict, help_text="The webhook body, or the e-mail's text.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "notification deliveries"
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self):
        return f"{self.event} → {self.recipient} ({self.get_status_display()})"


class PlatformConnector(models.Model):
    """Where a workspace's applied changes are pushed: an ad platform behind a webhook, or the sandbox.

    The circuit breaker's state lives on the row so that every worker shares it (rules.pushes):
    after `failure_threshold` consecutive failures the breaker opens and pushes wait; after
    `cool_down_seconds` one trial push is let through (half-open); its success closes it.
    """

    class Kind(models.TextChoices):
        SANDBOX = "sandbox", "Sandbox (records what it receives)"
        WEBHOOK = "webhook", "Webhook (integrator's endpoint)"

    class Breaker(models.TextChoices):
        CLOSED = "closed", "Closed"
        OPEN = "open", "Open"
        HALF_OPEN = "half_open", "Half-open (trial)"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="platform_connectors")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    url = models.URLField(max_length=500, blank=True)
    secret = models.CharField(max_length=80, blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    timeout_seconds = models.PositiveSmallIntegerField(default=10)
    failure_threshold = models.PositiveSmallIntegerField(default=5)
    cool_down_seconds = models.PositiveIntegerField(default=60)
    breaker_state = models.CharField(max_length=10, choices=Breaker.choices, default=Breaker.CLOSED, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    breaker_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="platform_connector_name_unique"),
            models.CheckConstraint(condition=models.Q(kind="sandbox") | ~models.Q(url=""),
                                   name="platform_connector_webhook_has_url"),
            models.CheckConstraint(condition=models.Q(failure_threshold__gte=1),
                                   name="platform_connector_threshold_positive"),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        if self.kind == self.Kind.WEBHOOK:
            if not self.url:
                raise ValidationError({"url": "A webhook connector needs the URL of the integrator's endpoint."})
            _require_http(self.url)


def _require_http(url: str) -> None:
    # URLField also accepts ftp://; our calls are HTTP POSTs.
    if url and not url.lower().startswith(("http://", "https://")):
        raise ValidationError({"url": "Give an http:// or https:// address."})


class ChangePush(models.Model):
    """One applied change on its way to one connector: never lost, retried until it succeeds or gives up."""

    class Status(models.TextChoices):
        PENDING = "pending", "Push pending"
        SUCCEEDED = "succeeded", "Pushed"
        FAILED = "failed", "Push failed"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    change = models.ForeignKey(Change, on_delete=models.CASCADE, related_name="pushes")
    # RESTRICT: a connector with pushes is disabled, never deleted, unless its whole workspace goes.
    connector = models.ForeignKey(PlatformConnector, on_delete=models.RESTRICT, related_name="pushes")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    succeeded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["change", "connector"], name="one_push_per_change_and_connector"),
        ]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self):
        return f"Change #{self.change_id} → {self.connector} ({self.get_status_display()})"


class SandboxReceipt(models.Model):
    """What the sandbox "ad platform" received: one row per delivery key, however often it was sent."""

    connector = models.ForeignKey(PlatformConnector, on_delete=models.CASCADE, related_name="sandbox_receipts")
    delivery_key = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["connector", "delivery_key"], name="sandbox_receipt_key_unique"),
        ]

    def __str__(self):
        return f"{self.delivery_key} @ {self.connector}"


class ApprovalRequest(Change):
    """A change as an approver sees it: the admin's approval queue (rules.governance_admin)."""

    class Meta:
        proxy = True
        verbose_name = "approval request"
        verbose_name_plural = "approval queue"


class ManualChange(Change):
    """A change proposed by a person: the admin's page to propose one (rules.governance_admin)."""

    class Meta:
        proxy = True
        verbose_name = "manual change"
