from django.core.exceptions import ObjectDoesNotExist
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.exceptions import NotFound
from accounts.models import Workspace
from accounts.permissions import scope_to_caller

from .ingestion import MAX_BATCH_ROWS
from .metrics import metric_choices
from .models import COUNTER_FIELDS, MONEY_FIELDS, Campaign, Creative, Segment
from .selectors import GROUPINGS


class ScopedParentField(serializers.PrimaryKeyRelatedField):
    """The parent an object is created in (workspace or campaign), among those the caller can see.

    An id outside the caller's workspaces answers 404, as for any object of another workspace;
    whether the caller's role may write there is the service's decision (403).
    """

    def __init__(self, *, model, workspace_lookup: str, **kwargs):
        self.workspace_lookup = workspace_lookup
        super().__init__(queryset=model.objects.all(), **kwargs)

    def get_queryset(self):
        return scope_to_caller(super().get_queryset(), self.context["request"],
                               workspace_lookup=self.workspace_lookup)

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("incorrect_type", data_type=type(data).__name__)
        try:
            return self.get_queryset().get(pk=data)
        except ObjectDoesNotExist:
            raise NotFound(f"No such {self.queryset.model._meta.verbose_name} in your workspaces.") from None
        except (TypeError, ValueError):
            self.fail("incorrect_type", data_type=type(data).__name__)


class _FixedParentMixin:
    """The parent is chosen at creation and never changes (the service refuses a move)."""

    parent_field: str

    def get_fields(self):
        fields = super().get_fields()
        if self.instance is not None:
            fields[self.parent_field].read_only = True
        return fields


class CampaignSerializer(_FixedParentMixin, serializers.ModelSerializer):
    parent_field = "workspace"
    workspace = ScopedParentField(model=Workspace, workspace_lookup="id")

    class Meta:
        model = Campaign
        fields = [
            "id", "workspace", "name", "channel", "objective", "status", "daily_budget", "start_date", "end_date",
            "external_id", "metrics_received_at", "metrics_latest_bucket", "data_quality_flag",
            "created_at", "updated_at",
        ]
        read_only_fields = [
            "metrics_received_at", "metrics_latest_bucket", "data_quality_flag", "created_at", "updated_at",
        ]
        # Uniqueness and bounds are checked once, by the service (full_clean + constraints).
        validators = []


class _CampaignChildSerializer(_FixedParentMixin, serializers.ModelSerializer):
    """A segment or a creative: created in a campaign of the caller's workspaces, never moved."""

    parent_field = "campaign"
    campaign = ScopedParentField(model=Campaign, workspace_lookup="workspace")
    workspace = serializers.IntegerField(source="campaign.workspace_id", read_only=True)


class SegmentSerializer(_CampaignChildSerializer):
    class Meta:
        model = Segment
        fields = [
            "id", "workspace", "campaign", "name", "criteria", "status", "bid", "bid_floor", "bid_ceiling",
            "daily_budget", "budget_floor", "budget_ceiling", "external_id", "created_at", "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        validators = []


class CreativeSerializer(_CampaignChildSerializer):
    class Meta:
        model = Creative
        fields = [
            "id", "workspace", "campaign", "name", "headline", "call_to_action", "status", "rotation_order",
            "external_id", "created_at", "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        validators = []


# --- Metrics ------------------------------------------------------------------------------


def _metric_row_fields() -> dict:
    fields = {
        "segment": serializers.IntegerField(required=False, help_text="Segment id (or give segment_external_id)."),
        "segment_external_id": serializers.CharField(required=False, help_text="The segment's id on the ad platform."),
        "creative": serializers.IntegerField(required=False, allow_null=True, help_text="Creative id (optional)."),
        "variant": serializers.CharField(required=False, allow_blank=True, help_text="Experiment variant key."),
        "bucket_start": serializers.DateTimeField(
            help_text="ISO-8601 with a UTC offset, aligned to the workspace bucket (in UTC); not in the future."
        ),
    }
    for name in COUNTER_FIELDS:
        fields[name] = serializers.IntegerField(required=False, min_value=0, help_text="Whole number; absent = 0.")
    for name in MONEY_FIELDS:
        fields[name] = serializers.DecimalField(
            max_digits=14, decimal_places=4, required=False, min_value=0, coerce_to_string=False,
            help_text="Number or decimal string; absent = 0.",
        )
    return fields


# Documents one row for the schema; rows are validated as a whole batch by campaigns.ingestion.
MetricRowSerializer = type("MetricRowSerializer", (serializers.Serializer,), _metric_row_fields())


@extend_schema_field(MetricRowSerializer(many=True))
class MetricRowsField(serializers.ListField):
    child = serializers.DictField()

    def __init__(self, **kwargs):
        super().__init__(allow_empty=False, max_length=MAX_BATCH_ROWS, **kwargs)


class MetricBatchSerializer(serializers.Serializer):
    workspace = ScopedParentField(model=Workspace, workspace_lookup="id")
    rows = MetricRowsField()


class MetricCsvSerializer(serializers.Serializer):
    workspace = ScopedParentField(model=Workspace, workspace_lookup="id")
    file = serializers.FileField(help_text="UTF-8 CSV, header row = the row keys of POST /metrics/.")


class IngestResultSerializer(serializers.Serializer):
    rows_received = serializers.IntegerField()
    rows_created = serializers.IntegerField()
    rows_updated = serializers.IntegerField()
    campaign_ids = serializers.ListField(child=serializers.IntegerField())
    replayed = serializers.BooleanField(help_text="True when this answers a repeated Idempotency-Key: nothing written.")


class TimeseriesQuerySerializer(serializers.Serializer):
    MAX_DAYS = 93

    metric = serializers.ChoiceField(choices=metric_choices())
    group_by = serializers.ChoiceField(choices=list(GROUPINGS), default="segment")
    start = serializers.DateTimeField(help_text="Inclusive.")
    end = serializers.DateTimeField(help_text="Exclusive.")
    workspace = serializers.ListField(child=serializers.IntegerField(), required=False,
                                      help_text="Narrow to these workspaces (default: all of yours).")
    campaign = serializers.ListField(child=serializers.IntegerField(), required=False)
    segment = serializers.ListField(child=serializers.IntegerField(), required=False)

    def validate(self, attrs):
        if attrs["end"] <= attrs["start"]:
            raise serializers.ValidationError({"end": "Must be after start."})
        if (attrs["end"] - attrs["start"]).days > self.MAX_DAYS:
            raise serializers.ValidationError({"end": f"At most {self.MAX_DAYS} days after start."})
        return attrs


class TimeseriesPointSerializer(serializers.Serializer):
    group = serializers.CharField(help_text="Segment id, campaign id or channel, after group_by.")
    bucket_start = serializers.DateTimeField()
    numerator = serializers.FloatField()
    denominator = serializers.FloatField()
    value = serializers.FloatField(allow_null=True, help_text="numerator / denominator (scaled); null when 0/0.")
