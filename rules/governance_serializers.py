"""API shapes of the governance: decisions, manual changes, the approval queue, policies,
notification endpoints and deliveries, connectors and pushes. Types only: the rules are the
services' (rules.approvals, rules.manual_changes, rules.policy, rules.notifications, rules.pushes)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Workspace
from campaigns.models import Campaign
from campaigns.serializers import ScopedParentField

from .binding import content_hash
from .models import (
    Approval,
    ApprovalPolicy,
    Change,
    ChangePush,
    NotificationDelivery,
    NotificationEndpoint,
    NotificationEvent,
    PlatformConnector,
)
from .policy import POLICY_FIELDS
from .serializers import ChangeSerializer


class ChangePushSerializer(serializers.ModelSerializer):
    connector_name = serializers.CharField(source="connector.name", read_only=True)

    class Meta:
        model = ChangePush
        fields = ["id", "workspace", "change", "connector", "connector_name", "status", "attempts", "last_status_code",
                  "last_error", "created_at", "last_attempt_at", "succeeded_at"]
        read_only_fields = fields


class GovernedChangeSerializer(ChangeSerializer):
    """A change with where it stands in the approval workflow and on its way to the platforms."""

    content_hash = serializers.SerializerMethodField(
        help_text="Send it back with a decision to bind the decision to this content.")
    pushes = ChangePushSerializer(many=True, read_only=True)

    class Meta(ChangeSerializer.Meta):
        fields = [*ChangeSerializer.Meta.fields, "policy_report", "sla_due_at", "expires_at", "revision",
                  "content_hash", "pushes"]
        read_only_fields = fields

    def get_content_hash(self, change: Change) -> str:
        return content_hash(change)


class ApprovalSerializer(serializers.ModelSerializer):
    class Meta:
        model = Approval
        fields = ["id", "change", "decision", "level", "user", "actor_label", "comment", "content_hash", "created_at"]
        read_only_fields = fields


class DecisionSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="",
                                    help_text="Why; required to reject or escalate.")
    content_hash = serializers.CharField(required=False, allow_null=True, default=None,
                                         help_text="The content_hash you decided on (from the queue); refused with "
                                                   "409 if the change was revised since.")


class ReviseSerializer(serializers.Serializer):
    value = serializers.CharField(help_text="The new value (number, status or rotation order).")
    reason = serializers.CharField(help_text="Why; kept in the audit trail.")


class ManualChangeSerializer(serializers.Serializer):
    target_type = serializers.ChoiceField(choices=["segment", "campaign", "creative"])
    target_id = serializers.IntegerField()
    field = serializers.ChoiceField(choices=Change.Field.choices, help_text="Which fields a target has: "
                                    "segment bid/daily_budget/status, campaign daily_budget/status, creative "
                                    "status/rotation_order.")
    value = serializers.CharField(help_text="A number for bid and daily budget, active/paused for status.")
    reason = serializers.CharField(help_text="Why; required, kept in the audit trail.")


class QueueItemSerializer(serializers.Serializer):
    change = GovernedChangeSerializer()
    content_hash = serializers.CharField()
    explanation = serializers.JSONField(allow_null=True, help_text="The evaluation's numbers for the target segment.")
    evaluation_summary = serializers.CharField()
    size_pct = serializers.DecimalField(source="size.pct", max_digits=12, decimal_places=2)
    size_amount = serializers.DecimalField(source="size.amount", max_digits=16, decimal_places=2)
    risk = serializers.ChoiceField(choices=["low", "medium", "high"])
    age_seconds = serializers.SerializerMethodField()
    sla_left_seconds = serializers.SerializerMethodField()
    expires_in_seconds = serializers.SerializerMethodField()
    may_approve = serializers.BooleanField()
    limit_problems = serializers.ListField(child=serializers.CharField(),
                                           help_text="Why you may only escalate it (empty: you may approve).")
    may_escalate = serializers.BooleanField()

    def get_age_seconds(self, item) -> int:
        return int(item.age.total_seconds())

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_sla_left_seconds(self, item):
        return int(item.sla_left.total_seconds()) if item.sla_left is not None else None

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_expires_in_seconds(self, item):
        return int(item.expires_in.total_seconds()) if item.expires_in is not None else None


class ApprovalPolicySerializer(serializers.ModelSerializer):
    workspace = ScopedParentField(model=Workspace, workspace_lookup="id")
    campaign = ScopedParentField(model=Campaign, workspace_lookup="workspace", required=False, allow_null=True,
                                 help_text="Blank: the workspace's policy; set: this campaign's.")
    always_require_approval = serializers.ListField(
        child=serializers.ChoiceField(choices=ApprovalPolicy.Gate.choices), required=False)
    level_sla_minutes = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False,
                                              help_text="SLA minutes per approval level, e.g. [60, 240].")

    class Meta:
        model = ApprovalPolicy
        fields = ["id", "workspace", "campaign", *POLICY_FIELDS, "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
        validators = []  # one policy per workspace / campaign: the database and the service say so

    def get_fields(self):
        fields = super().get_fields()
        if self.instance is not None:
            fields["workspace"].read_only = fields["campaign"].read_only = True
        return fields


class NotificationEndpointSerializer(serializers.ModelSerializer):
    workspace = ScopedParentField(model=Workspace, workspace_lookup="id")
    events = serializers.ListField(child=serializers.ChoiceField(choices=NotificationEvent.choices), required=False,
                                   help_text="Events to send; empty = every event.")

    class Meta:
        model = NotificationEndpoint
        fields = ["id", "workspace", "name", "url", "events", "enabled", "created_at"]
        read_only_fields = ["created_at"]
        validators = []

    def get_fields(self):
        fields = super().get_fields()
        if self.instance is not None:
            fields["workspace"].read_only = True
        return fields


class NotificationDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = NotificationDelivery
        fields = ["id", "workspace", "event", "channel", "endpoint", "recipient", "change", "subject", "status",
                  "attempts", "last_status_code", "last_error", "created_at", "last_attempt_at", "delivered_at"]
        read_only_fields = fields


class PlatformConnectorSerializer(serializers.ModelSerializer):
    workspace = ScopedParentField(model=Workspace, workspace_lookup="id")

    class Meta:
        model = PlatformConnector
        fields = ["id", "workspace", "name", "kind", "url", "enabled", "timeout_seconds", "failure_threshold",
                  "cool_down_seconds", "breaker_state", "consecutive_failures", "breaker_changed_at", "created_at"]
        read_only_fields = ["breaker_state", "consecutive_failures", "breaker_changed_at", "created_at"]
        validators = []

    def get_fields(self):
        fields = super().get_fields()
        if self.instance is not None:
            fields["workspace"].read_only = fields["kind"].read_only = True
        return fields


class SecretShownOnceSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="The signing secret: shown in this response only. Keep it.")
