"""API shapes of rules (with nested triggers), evaluations, changes and previews.

Serializers parse types only; the rules of a valid rule (metric registry, guardrails,
windows) are checked once, by `rules.services`, whose errors come back as 400 with
`details` keyed by field (`triggers[0].threshold` for a nested trigger).
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Workspace
from campaigns.models import Campaign
from campaigns.serializers import ScopedParentField

from .decisions import evaluation_inputs
from .models import Change, Evaluation, Rule, Trigger
from .services import RULE_FIELDS
from .targets import target_type
from .validation import TRIGGER_FIELDS


class TriggerSerializer(serializers.ModelSerializer):
    # Free text here so that an unknown metric gets the registry's message (with the known ones).
    metric = serializers.CharField(max_length=32, help_text="A metric of the registry, e.g. ctr, cpa, roas.")

    class Meta:
        model = Trigger
        fields = ["id", "position", *TRIGGER_FIELDS]
        read_only_fields = ["id", "position"]


class RuleSerializer(serializers.ModelSerializer):
    workspace = ScopedParentField(model=Workspace, workspace_lookup="id")
    campaigns = ScopedParentField(model=Campaign, workspace_lookup="workspace", many=True, required=False,
                                  help_text="Campaigns in scope; empty = every campaign of the workspace.")
    triggers = TriggerSerializer(many=True, required=False, help_text="Replaced as a whole when given.")

    class Meta:
        model = Rule
        fields = [
            "id", "workspace", "status", "version", "owner", "campaigns", *RULE_FIELDS, "triggers",
            "last_evaluated_at", "created_at", "updated_at",
        ]
        read_only_fields = ["status", "version", "owner", "last_evaluated_at", "created_at", "updated_at"]
        # Uniqueness and every business rule are checked once, by the service.
        validators = []

    def get_fields(self):
        fields = super().get_fields()
        if self.instance is not None:
            fields["workspace"].read_only = True  # a rule never moves to another workspace
        return fields


class StatusChangeSerializer(serializers.Serializer):
    """The body of a status change (a rule activated, an experiment started, ...): why, for the audit."""

    reason = serializers.CharField(required=False, allow_blank=True, default="",
                                   help_text="Why; kept in the audit trail.")


class EvaluationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Evaluation
        fields = ["id", "workspace", "rule", "rule_version", "window_end", "source", "outcome", "summary",
                  "created_at"]
        read_only_fields = fields


class EvaluationDetailSerializer(EvaluationSerializer):
    inputs = serializers.SerializerMethodField()

    class Meta(EvaluationSerializer.Meta):
        fields = [*EvaluationSerializer.Meta.fields, "inputs"]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField())
    def get_inputs(self, evaluation: Evaluation) -> dict:
        """Settings, and under "segments" per segment: decision, reason, and per trigger every number behind it."""
        return evaluation_inputs(evaluation)


class ChangeSerializer(serializers.ModelSerializer):
    target_type = serializers.SerializerMethodField()
    target_name = serializers.SerializerMethodField()

    class Meta:
        model = Change
        fields = [
            "id", "workspace", "kind", "rule", "rule_version", "evaluation", "campaign", "segment", "creative",
            "target_type", "target_name", "field", "old_value", "requested_value", "capped_value", "cap_report",
            "status", "approval_level", "batch_id", "requested_by", "reason", "error", "created_at", "applied_at",
        ]
        read_only_fields = fields

    def get_target_type(self, change: Change) -> str:
        return target_type(change.target)

    def get_target_name(self, change: Change) -> str:
        return str(change.target)


class PlannedChangeSerializer(serializers.Serializer):
    target_type = serializers.SerializerMethodField()
    target_id = serializers.IntegerField(source="target.pk")
    target_name = serializers.CharField(source="target")
    field = serializers.CharField()
    old_value = serializers.CharField()
    requested_value = serializers.CharField()
    capped_value = serializers.CharField()
    cap_report = serializers.ListField(child=serializers.DictField())
    blocked = serializers.BooleanField()

    def get_target_type(self, planned) -> str:
        return target_type(planned.target)


class RulePreviewSerializer(serializers.Serializer):
    rule = serializers.IntegerField(source="rule.pk")
    rule_version = serializers.IntegerField(source="rule.version")
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    outcome = serializers.ChoiceField(choices=Evaluation.Outcome.choices)
    summary = serializers.CharField()
    decisions = serializers.SerializerMethodField()
    planned_changes = PlannedChangeSerializer(many=True)

    @extend_schema_field(serializers.ListField(child=serializers.DictField()))
    def get_decisions(self, result) -> list[dict]:
        """Per segment: decision, reason, and per trigger every number behind it."""
        return result.decisions
