from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from accounts.models import Workspace
from campaigns.metrics import metric_choices
from campaigns.models import Campaign, Creative, Segment

_PERCENT_ABOVE_ZERO = [MinValueValidator(Decimal("0.01")), MaxValueValidator(Decimal("100"))]


class Experiment(models.Model):
    """A controlled test in one campaign: a control and variants, how to judge them, and what happens after.

    Life cycle: draft -> approved (an approver other than its creator) -> running -> stopped
    (by a person, or by a guardrail's harm) or concluded (the analysis reached a decision).
    """

    class Kind(models.TextChoices):
        CREATIVE = "creative", "Creative"
        BID = "bid", "Bid"
        AUDIENCE = "audience", "Audience"
        HOLDOUT = "holdout", "Holdout (incrementality of the adjustments)"

    class Method(models.TextChoices):
        FIXED = "fixed", "Fixed horizon"
        SEQUENTIAL = "sequential", "Sequential (always valid)"
        BAYESIAN = "bayesian", "Bayesian"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        APPROVED = "approved", "Approved"
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        CONCLUDED = "concluded", "Concluded"

    class Deployment(models.TextChoices):
        NONE = "", "Nothing to deploy"
        PENDING = "pending", "Proposed, waiting for approval"
        DEPLOYED = "deployed", "Deployed"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="experiments")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=150)
    hypothesis = models.TextField(blank=True, help_text="What should change, for whom, and why.")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    primary_metric = models.CharField(max_length=32, choices=metric_choices())
    guardrails = models.JSONField(
        default=list, blank=True,
        help_text='Metrics that must not get worse, with the harm that stops the test in % of the control: '
                  '[{"metric": "bounce_rate", "max_harm_pct": 5}].',
    )
    minimum_detectable_effect_pct = models.DecimalField(
        max_digits=6, decimal_places=2, default=Decimal("10"), validators=_PERCENT_ABOVE_ZERO,
        help_text="Smallest relative change worth detecting, in % of the control (power analysis).",
    )
    alpha = models.DecimalField(max_digits=5, decimal_places=4, default=Decimal("0.05"),
                                validators=[MinValueValidator(Decimal("0.0001")), MaxValueValidator(Decimal("0.5"))])
    power = models.DecimalField(max_digits=5, decimal_places=4, default=Decimal("0.80"),
                                validators=[MinValueValidator(Decimal("0.5")), MaxValueValidator(Decimal("0.9999"))])
    method = models.CharField(max_length=12, choices=Method.choices, default=Method.SEQUENTIAL)
    min_sample_per_arm = models.PositiveIntegerField(
        default=1000, help_text="No decision before every arm has this much of the metric's denominator.",
    )
    auto_deploy = models.BooleanField(
        default=False, help_text="Deploy a winner at once (through caps and policy); otherwise propose it.",
    )
    bandit = models.BooleanField(default=False, help_text="Re-weight budget across the arms each cycle (Thompson).")
    bandit_floor_pct = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("10"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("50"))],
        help_text="Share of the budget every arm keeps in bandit mode, in %.",
    )

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DRAFT)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                                   related_name="+")
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    approved_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.TextField(blank=True)
    # Fixed at start from the power analysis, so that the horizon does not move while it runs.
    planned_sample_per_arm = models.PositiveBigIntegerField(null=True, blank=True)
    decision = models.CharField(max_length=24, blank=True)
    winner = models.ForeignKey("Variant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    deployment = models.CharField(max_length=12, choices=Deployment.choices, blank=True, default=Deployment.NONE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="experiment_name_unique_in_workspace"),
        ]

    def __str__(self):
        return self.name

    @property
    def holder(self) -> str:
        """How this experiment names itself as the holder of held-out segments (campaigns.holdouts)."""
        return f"experiment:{self.pk}"


class Variant(models.Model):
    """One arm: its key (the `variant` of the metric facts it owns), its share of traffic and what it runs.

    Facts belong to an arm when they carry its key; untagged facts of its linked segment (and
    creative) belong to it too, since an arm that is its own ad set needs no tagging.
    """

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=64, help_text="The `variant` value of this arm's metric facts.")
    name = models.CharField(max_length=150)
    is_control = models.BooleanField(default=False)
    weight = models.DecimalField(
        max_digits=7, decimal_places=4, default=Decimal("1"), validators=[MinValueValidator(Decimal("0.0001"))],
        help_text="Intended share of the traffic (any positive scale; bandit mode rewrites it).",
    )
    creative = models.ForeignKey(Creative, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    bid = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True,
                              help_text="Bid experiments: the bid this arm's segment runs at.")

    class Meta:
        ordering = ["experiment", "-is_control", "key"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "key"], name="variant_key_unique_in_experiment"),
            models.UniqueConstraint(fields=["experiment"], condition=models.Q(is_control=True),
                                    name="one_control_per_experiment"),
        ]

    def __str__(self):
        return f"{self.name} ({self.key})"

    @property
    def workspace_id(self) -> int:
        return self.experiment.workspace_id


class ExperimentResult(models.Model):
    """One analysis run: every number behind it, so results can be explained and charted over time."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="results")
    computed_at = models.DateTimeField()
    method = models.CharField(max_length=12, choices=Experiment.Method.choices)
    decision = models.CharField(max_length=24)
    summary = models.TextField()
    srm_chi2 = models.FloatField(null=True, blank=True)
    srm_p_value = models.FloatField(null=True, blank=True)
    srm_blocked = models.BooleanField(default=False)
    # Per arm: counters, value, effect vs control with its interval, p-value or chance to win,
    # its own decision, and per guardrail the same numbers with whether it shows harm.
    variants = models.JSONField(default=list)

    class Meta:
        ordering = ["experiment", "computed_at", "id"]
        indexes = [models.Index(fields=["experiment", "computed_at"])]

    def __str__(self):
        return f"{self.experiment} @ {self.computed_at:%Y-%m-%d %H:%M}: {self.decision}"
