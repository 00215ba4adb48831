"""REST API for campaigns, segments, creatives and metrics (/api/v1/).

Views are thin: querysets are scoped to the caller's workspaces (another workspace's objects
answer 404), writes go through campaigns.services and campaigns.ingestion (which answer 403
when the caller's role does not allow them, and audit).
"""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from accounts.permissions import request_actor, token_of
from accounts.roles import Perm
from accounts.selectors import workspace_ids_for
from accounts.throttling import MetricPushThrottle
from accounts.viewsets import ServiceBackedViewSet
from rulesplatform.api.schema import ApiErrorSerializer

from . import services
from .filters import CampaignFilter, CreativeFilter, SegmentFilter
from .ingestion import metrics_ingest, metrics_ingest_csv
from .models import Campaign, Creative, Segment
from .selectors import metric_timeseries
from .serializers import (
    CampaignSerializer,
    CreativeSerializer,
    IngestResultSerializer,
    MetricBatchSerializer,
    MetricCsvSerializer,
    SegmentSerializer,
    TimeseriesPointSerializer,
    TimeseriesQuerySerializer,
)


class _ConfigViewSet(ServiceBackedViewSet):
    """CRUD over one configured model, every write through its services."""

    write_perm = Perm.EDIT_CAMPAIGNS


_WRITES_DOC = "Reads need a role in the workspace; writes need one that edits campaigns (marketer, admin)."


@extend_schema_view(create=extend_schema(description=_WRITES_DOC))
class CampaignViewSet(_ConfigViewSet):
    """Campaigns of the caller's workspaces, with their metrics freshness and data-quality flag."""

    queryset = Campaign.objects.all()
    serializer_class = CampaignSerializer
    filterset_class = CampaignFilter
    workspace_lookup = "workspace"
    subject = "campaign"
    create_service = services.campaign_create
    update_service = services.campaign_update
    delete_service = services.campaign_delete
    ordering_fields = ["name", "created_at", "daily_budget", "metrics_latest_bucket"]
    ordering = ["workspace_id", "name"]


@extend_schema_view(create=extend_schema(description=_WRITES_DOC))
class SegmentViewSet(_ConfigViewSet):
    """Micro-segments (ad sets): targeting criteria, bid and budget within their floors and ceilings."""

    queryset = Segment.objects.select_related("campaign")
    serializer_class = SegmentSerializer
    filterset_class = SegmentFilter
    workspace_lookup = "campaign__workspace"
    subject = "segment"
    create_service = services.segment_create
    update_service = services.segment_update
    delete_service = services.segment_delete
    ordering_fields = ["name", "created_at", "bid", "daily_budget"]
    ordering = ["campaign_id", "name"]


@extend_schema_view(create=extend_schema(description=_WRITES_DOC))
class CreativeViewSet(_ConfigViewSet):
    queryset = Creative.objects.select_related("campaign")
    serializer_class = CreativeSerializer
    filterset_class = CreativeFilter
    workspace_lookup = "campaign__workspace"
    subject = "creative"
    create_service = services.creative_create
    update_service = services.creative_update
    delete_service = services.creative_delete
    ordering_fields = ["name", "created_at", "rotation_order"]
    ordering = ["campaign_id", "rotation_order", "name"]


# --- Metrics ------------------------------------------------------------------------------

_IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
    description="Optional, up to 255 characters. Re-sending the same key with the same payload returns the "
                "first outcome (replayed=true, status 200) and writes nothing; with another payload: 409.",
)
_INGEST_RESPONSES = {
    status.HTTP_201_CREATED: IngestResultSerializer,
    status.HTTP_200_OK: OpenApiResponse(IngestResultSerializer, description="A replay of an Idempotency-Key."),
    status.HTTP_400_BAD_REQUEST: OpenApiResponse(
        ApiErrorSerializer,
        description="The batch was rejected whole, nothing written (code `batch_rejected`): `details.errors` lists "
                    "{row, field, reason} (row = 0-based position in `rows`, or in the CSV's data rows), at most "
                    "1000; `details.error_count` is the total.",
    ),
    status.HTTP_409_CONFLICT: OpenApiResponse(ApiErrorSerializer, description="Idempotency-Key reused."),
}
_BATCH_DOC = (
    "All or nothing: every row is validated first (segment and creative of this workspace, counters whole and "
    "non-negative, clicks <= impressions, bucket_start with an offset, aligned to the workspace's bucket in UTC "
    "and not in the future, no key twice); a valid batch upserts on (segment, creative, variant, bucket_start), "
    "so re-sending a bucket replaces it. Needs a role that pushes metrics (marketer, admin, integrator)."
)


class MetricViewSet(viewsets.GenericViewSet):
    """Metric facts in (JSON rows or a CSV file) and time series out."""

    permission_classes = [permissions.IsAuthenticated]
    filter_backends = []
    pagination_class = None

    def get_throttles(self):
        throttles = super().get_throttles()
        if self.action in ("create", "csv"):
            throttles.append(MetricPushThrottle())
        return throttles

    @extend_schema(
        request=MetricBatchSerializer, parameters=[_IDEMPOTENCY_KEY], responses=_INGEST_RESPONSES,
        description=f'Body: {{"workspace": id, "rows": [...]}}. {_BATCH_DOC}',
    )
    def create(self, request):
        body = MetricBatchSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        result = metrics_ingest(
            actor=request_actor(request), workspace=body.validated_data["workspace"],
            rows=body.validated_data["rows"], idempotency_key=request.headers.get("Idempotency-Key"),
        )
        return _ingest_response(result)

    @extend_schema(
        request={"multipart/form-data": MetricCsvSerializer}, parameters=[_IDEMPOTENCY_KEY],
        responses=_INGEST_RESPONSES,
        description=f"Multipart upload: `workspace` and `file` (UTF-8 CSV, header row = the row keys). {_BATCH_DOC}",
    )
    @action(detail=False, methods=["post"], url_path="csv", parser_classes=[MultiPartParser, FormParser])
    def csv(self, request):
        body = MetricCsvSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        result = metrics_ingest_csv(
            actor=request_actor(request), workspace=body.validated_data["workspace"],
            file=body.validated_data["file"], idempotency_key=request.headers.get("Idempotency-Key"),
        )
        return _ingest_response(result)

    @extend_schema(
        parameters=[TimeseriesQuerySerializer], responses=TimeseriesPointSerializer(many=True),
        description="A derived metric per group and bucket over [start, end), from sums of its numerator and "
                    "denominator across the caller's workspaces (or the ones named). At most 93 days.",
    )
    @action(detail=False, methods=["get"])
    def timeseries(self, request):
        query = TimeseriesQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        workspace_ids = workspace_ids_for(request.user, Perm.VIEW, token=token_of(request))
        if "workspace" in params:
            workspace_ids &= set(params["workspace"])
        points = metric_timeseries(
            workspace_ids=workspace_ids, metric=params["metric"], group_by=params["group_by"],
            start=params["start"], end=params["end"],
            campaign_ids=params.get("campaign"), segment_ids=params.get("segment"),
        )
        return Response(TimeseriesPointSerializer(points, many=True).data)


def _ingest_response(result) -> Response:
    code = status.HTTP_200_OK if result.replayed else status.HTTP_201_CREATED
    return Response(IngestResultSerializer(result).data, status=code)
