import zoneinfo
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from .roles import Role, role_allows

_PERCENT = [MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))]


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"“{value}” is not a known time zone (e.g. Europe/Paris).")


def validate_bucket_minutes(value: int) -> None:
    # Buckets must tile a day exactly so that every bucket start is aligned the same way.
    if value <= 0 or 1440 % value:
        raise ValidationError("The metric bucket must divide a day (e.g. 15, 30, 60 minutes).")


class Workspace(models.Model):
    """An advertiser account: the unit of access, currency, time zone and guardrails."""

    name = models.CharField(max_length=120, unique=True)
    currency = models.CharField(max_length=3, default="EUR", help_text="ISO 4217 code, e.g. EUR.")
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    metric_bucket_minutes = models.PositiveIntegerField(default=60, validators=[validate_bucket_minutes])
    freshness_limit_minutes = models.PositiveIntegerField(
        default=180, help_text="Rules never move money on data older than this."
    )
    # Guardrails bound every rule's settings in this workspace.
    guardrail_max_step_pct = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("20"), validators=_PERCENT,
        help_text="Largest single change a rule may request, in % of the current value.",
    )
    guardrail_max_change_per_hour_pct = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("10"), validators=_PERCENT,
        help_text="Largest net change to one target within an hour, in %.",
    )
    guardrail_max_actions_per_rule_per_day = models.PositiveIntegerField(default=24)
    guardrail_max_channel_share_pct = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("60"), validators=_PERCENT,
        help_text="Largest share of a campaign's budget one channel may take, in %.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(metric_bucket_minutes__gt=0), name="workspace_bucket_positive"
            ),
        ]

    def __str__(self):
        return self.name


class Membership(models.Model):
    """A user's role in one workspace, with the limits an approver decides within."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    can_manage_config = models.BooleanField(
        default=False, help_text="Integrators only: may also manage campaigns and rules."
    )
    approval_level = models.PositiveSmallIntegerField(
        default=0, help_text="Approvers: the highest escalation level this person decides (0 = none)."
    )
    approval_limit_pct = models.DecimalField(
        max_digits=6, decimal_places=2, null=True, blank=True,
        help_text="Approvers: largest change in % they may approve (blank = no limit).",
    )
    approval_limit_amount = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True,
        help_text="Approvers: largest daily amount they may approve (blank = no limit).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workspace", "user"]
        constraints = [
            models.UniqueConstraint(fields=["user", "workspace"], name="one_membership_per_user_workspace"),
        ]

    def __str__(self):
        return f"{self.user} — {self.get_role_display()} in {self.workspace}"

    def allows(self, perm: str) -> bool:
        return role_allows(self.role, perm, can_manage_config=self.can_manage_config)


class ApiToken(models.Model):
    """An integrator's credential: shown once, stored as a SHA-256 hash, scoped to one workspace."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_tokens")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True, help_text="Public part, to recognise the token.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
