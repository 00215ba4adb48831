"""API shapes of experiments (with nested variants), their power analysis and results.

Serializers parse types only; what makes an experiment valid (metric registry, arms that fit
its kind, guardrails) is checked once, by `experiments.services`, whose errors come back as
400 with `details` keyed by field (`variants[1].segment` for an arm).
"""

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Workspace
from campaigns.models import Campaign, Creative, Segment
from campaigns.serializers import ScopedParentField

from .models import Experiment, ExperimentResult, Variant
from .power import campaign_power_analysis
from .services import EXPERIMENT_FIELDS
from .validation import VARIANT_FIELDS


class VariantSerializer(serializers.ModelSerializer):
    key = serializers.CharField(max_length=64, help_text="The `variant` value of this arm's metric facts.")
    creative = ScopedParentField(model=Creative, workspace_lookup="campaign__workspace", required=False,
                                 allow_null=True)
    segment = ScopedParentField(model=Segment, workspace_lookup="campaign__workspace", required=False,
                                allow_null=True)

    class Meta:
        model = Variant
        fields = ["id", *VARIANT_FIELDS]
        read_only_fields = ["id"]
        validators = []


class ExperimentSerializer(serializers.ModelSerializer):
    workspace = ScopedParentField(model=Workspace, workspace_lookup="id")
    campaign = ScopedParentField(model=Campaign, workspace_lookup="workspace")
    variants = VariantSerializer(many=True, required=False, help_text="Replaced as a whole when given.")
    winner = serializers.SlugRelatedField(slug_field="key", read_only=True)

    class Meta:
        model = Experiment
        fields = [
            "id", "workspace", "campaign", *EXPERIMENT_FIELDS, "variants", "status", "created_by", "approved_by",
            "approved_at", "started_at", "ended_at", "end_reason", "planned_sample_per_arm", "decision", "winner",
            "deployment", "created_at", "updated_at",
        ]
        read_only_fields = [
            "status", "created_by", "approved_by", "approved_at", "started_at", "ended_at", "end_reason",
            "planned_sample_per_arm", "decision", "winner", "deployment", "created_at", "updated_at",
        ]
        validators = []

    def get_fields(self):
        fields = super().get_fields()
        if self.instance is not None:
            # An experiment never moves to another workspace or campaign.
            fields["workspace"].read_only = fields["campaign"].read_only = True
        return fields


class PowerAnalysisSerializer(serializers.Serializer):
    metric = serializers.CharField()
    unit = serializers.CharField(help_text="What the sample counts: the rate's denominator, or segment-buckets.")
    baseline = serializers.FloatField(allow_null=True)
    daily_sample = serializers.FloatField(help_text="The campaign's sample per day over the last 7 days.")
    smallest_arm_share = serializers.FloatField()
    alpha_per_comparison = serializers.FloatField()
    sample_per_arm = serializers.IntegerField(allow_null=True)
    expected_days = serializers.IntegerField(allow_null=True)
    problem = serializers.CharField(allow_blank=True)


class ExperimentDetailSerializer(ExperimentSerializer):
    power_analysis = serializers.SerializerMethodField(
        help_text="Sample per arm and expected duration from the campaign's last 7 days of traffic."
    )

    class Meta(ExperimentSerializer.Meta):
        fields = [*ExperimentSerializer.Meta.fields, "power_analysis"]

    @extend_schema_field(PowerAnalysisSerializer)
    def get_power_analysis(self, experiment: Experiment) -> dict:
        variants = list(experiment.variants.all())
        return campaign_power_analysis(experiment, variants, now=timezone.now()).as_dict()


class ExperimentResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = ExperimentResult
        fields = ["id", "computed_at", "method", "decision", "summary", "srm_chi2", "srm_p_value", "srm_blocked",
                  "variants"]
        read_only_fields = fields


class ChartsSerializer(serializers.Serializer):
    effects = serializers.CharField(help_text="SVG: each variant's effect with its interval (latest run).")
    lift_over_time = serializers.CharField(help_text="SVG: cumulative lift per variant over the runs.")


class ExperimentResultsSerializer(serializers.Serializer):
    latest = ExperimentResultSerializer(allow_null=True)
    history = ExperimentResultSerializer(many=True)
    charts = ChartsSerializer()
