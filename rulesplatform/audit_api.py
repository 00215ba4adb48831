"""REST API for audit events and versions (/api/v1/audit/events/, /api/v1/versions/...).

It lives in the project package because reads are scoped by workspace roles (`accounts`),
which `audit` must not import. Every read sees only the caller's workspaces (a token: its
workspace); anything else answers 404.
"""

import django_filters
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from accounts.permissions import request_actor, token_of
from accounts.roles import Perm
from accounts.selectors import workspace_ids_for
from audit.exceptions import RestoreError
from audit.models import AuditEvent
from audit.registry import versioned_entry, versioned_labels
from audit.rollback import version_restore
from audit.selectors import (
    audit_events,
    latest_version,
    object_history,
    plain,
    version_children,
    version_diff,
    version_fields,
    version_info,
    visible_versions,
)
from rules.models import Change

from .api.exceptions import error_body
from .change_rollback import change_rollback
from .change_trail import change_trail


def _caller_workspace_ids(request) -> set[int]:
    return workspace_ids_for(request.user, Perm.VIEW, token=token_of(request))


# --- audit events ---------------------------------------------------------------------------


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id", "created_at", "workspace_id", "actor_kind", "actor_label", "actor_user", "action",
            "subject_type", "subject_id", "subject_repr", "before", "after", "reason", "request_id",
            "prev_hash", "hash",
        ]


class AuditEventFilter(django_filters.FilterSet):
    workspace = django_filters.NumberFilter(field_name="workspace_id")
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["workspace", "action", "actor_kind", "actor_label", "subject_type", "subject_id", "request_id"]


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Audit events of the caller's workspaces, newest first. Read-only: events are append-only."""

    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    ordering_fields = ["id", "created_at"]
    ordering = ["-id"]

    def get_queryset(self):
        return audit_events(workspace_ids=_caller_workspace_ids(self.request))


# --- versions -------------------------------------------------------------------------------


class VersionSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    model = serializers.CharField(source="content_type.model_class._meta.label_lower")
    object_id = serializers.CharField()
    object_repr = serializers.CharField()
    created_at = serializers.DateTimeField(source="revision.date_created")
    actor_kind = serializers.SerializerMethodField()
    actor_label = serializers.SerializerMethodField()
    action = serializers.SerializerMethodField()
    reason = serializers.CharField(source="revision.comment")
    request_id = serializers.SerializerMethodField()
    audit_event_ids = serializers.SerializerMethodField()

    def _info(self, version):
        cache = self.context.setdefault("_version_info", {})
        if version.pk not in cache:
            cache[version.pk] = version_info(version)
        return cache[version.pk]

    def get_actor_kind(self, version) -> str:
        return self._info(version).actor_kind

    def get_actor_label(self, version) -> str:
        return self._info(version).actor_label

    def get_action(self, version) -> str:
        return self._info(version).action

    def get_request_id(self, version) -> str:
        return self._info(version).request_id

    def get_audit_event_ids(self, version) -> list[int]:
        return self._info(version).event_ids


class VersionDetailSerializer(VersionSerializer):
    fields = serializers.SerializerMethodField(method_name="get_field_values")
    children = serializers.SerializerMethodField()

    def get_field_values(self, version) -> dict:
        return plain(version_fields(version))

    def get_children(self, version) -> dict:
        return plain(version_children(version))


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="Why this version is restored; kept on the new version.")


_MODEL_PARAM = OpenApiParameter(
    "model", OpenApiTypes.STR, required=True,
    description="Model label, e.g. campaigns.campaign, rules.rule, accounts.workspace.",
)
_OBJECT_PARAM = OpenApiParameter("object_id", OpenApiTypes.STR, required=True)


class VersionViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Versions of configured objects (who, why, when), diffs between two, and restores."""

    serializer_class = VersionDetailSerializer
    filter_backends = []

    def get_queryset(self):
        return visible_versions(workspace_ids=_caller_workspace_ids(self.request))

    @extend_schema(parameters=[_MODEL_PARAM, _OBJECT_PARAM], responses=VersionSerializer(many=True))
    def list(self, request):
        label, object_id = request.query_params.get("model", ""), request.query_params.get("object_id", "")
        entry = versioned_entry(label) if label else None
        if entry is None or not object_id:
            raise ValidationError({"model": [f"Give model (one of: {', '.join(versioned_labels())}) and object_id."]})
        history = object_history(entry.model, object_id, workspace_ids=_caller_workspace_ids(request))
        page = self.paginate_queryset(history)
        body = VersionSerializer(page, many=True, context=self.get_serializer_context())
        return self.get_paginated_response(body.data)

    @extend_schema(
        parameters=[OpenApiParameter("from", OpenApiTypes.INT, required=True),
                    OpenApiParameter("to", OpenApiTypes.INT, required=True)],
        responses=inline_serializer("VersionDiff", {
            "from_version": serializers.IntegerField(), "to_version": serializers.IntegerField(),
            "fields": serializers.ListField(child=serializers.DictField()),
            "children": serializers.DictField(),
        }),
        description="Field-by-field changes from one version to another of the same object, "
                    "including a rule's triggers (matched by position).",
    )
    @action(detail=False, methods=["get"])
    def diff(self, request):
        ids = {name: request.query_params.get(name, "") for name in ("from", "to")}
        if not all(value.isdigit() for value in ids.values()):
            raise ValidationError({"from": ["Give two version ids: ?from=<id>&to=<id>."]})
        versions = self.get_queryset()
        old, new = (get_object_or_404(versions, pk=int(ids[name])) for name in ("from", "to"))
        try:
            return Response(version_diff(old, new))
        except ValueError as exc:
            raise ValidationError({"to": [str(exc)]})

    @extend_schema(
        request=ReasonSerializer, responses={status.HTTP_201_CREATED: VersionSerializer},
        description="Restore this version as a new version (history is never rewritten). Needs the rollback "
                    "right and the object's own edit right; an active rule also needs activation rights.",
    )
    @action(detail=True, methods=["post"])
    def restore(self, request, pk=None):
        version = self.get_object()
        reason = ReasonSerializer(data=request.data)
        reason.is_valid(raise_exception=True)
        try:
            version_restore(actor=request_actor(request), version=version, reason=reason.validated_data["reason"])
        except RestoreError as exc:
            return Response(error_body(exc.code, exc.message, exc.extra), status=exc.status)
        newest = latest_version(version.content_type.model_class(), version.object_id)
        body = VersionSerializer(self.get_queryset().get(pk=newest.pk), context=self.get_serializer_context())
        return Response(body.data, status=status.HTTP_201_CREATED)


# --- rollback of an applied change ------------------------------------------------------------


class ChangeRollbackSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="Why the change is rolled back; kept on the rollback change.")
    force = serializers.BooleanField(
        default=False, help_text="Workspace admins: roll back even though the target moved since.",
    )


class ChangeRollbackView(APIView):
    """Roll back an applied change: the inverse change, through the change pipeline."""

    @extend_schema(
        request=ChangeRollbackSerializer,
        responses={status.HTTP_201_CREATED: inline_serializer("RollbackChange", {
            "id": serializers.IntegerField(), "status": serializers.CharField(),
            "old_value": serializers.CharField(), "capped_value": serializers.CharField(),
        })},
        description="Needs the rollback right. Refused (409) when the target moved since the change was "
                    "applied, unless a workspace admin sets force.",
    )
    def post(self, request, pk: int):
        change = get_object_or_404(Change.objects.filter(workspace_id__in=_caller_workspace_ids(request)), pk=pk)
        body = ChangeRollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        rollback = change_rollback(actor=request_actor(request), change=change, **body.validated_data)
        return Response(
            {"id": rollback.pk, "status": rollback.status, "old_value": rollback.old_value,
             "capped_value": rollback.capped_value},
            status=status.HTTP_201_CREATED,
        )


class ChangeTrailView(APIView):
    """What explains a change: the rule version it came from, the evaluation's inputs, its events."""

    @extend_schema(responses=inline_serializer("ChangeTrail", {
        "change": serializers.IntegerField(), "rule_version_id": serializers.IntegerField(allow_null=True),
        "rule_settings": serializers.DictField(), "rule_triggers": serializers.ListField(),
        "evaluation_inputs": serializers.DictField(allow_null=True), "events": AuditEventSerializer(many=True),
    }))
    def get(self, request, pk: int):
        change = get_object_or_404(Change.objects.filter(workspace_id__in=_caller_workspace_ids(request)), pk=pk)
        trail = change_trail(change)
        return Response({
            "change": change.pk,
            "rule_version_id": trail.rule_version.pk if trail.rule_version else None,
            "rule_settings": trail.rule_settings,
            "rule_triggers": trail.rule_triggers,
            "evaluation_inputs": trail.evaluation_inputs,
            "events": AuditEventSerializer(trail.events, many=True).data,
        })


router = SimpleRouter(trailing_slash=True)
router.register("audit/events", AuditEventViewSet, basename="audit-event")
router.register("versions", VersionViewSet, basename="version")
urlpatterns = [
    path("changes/<int:pk>/rollback/", ChangeRollbackView.as_view(), name="change-rollback"),
    path("changes/<int:pk>/trail/", ChangeTrailView.as_view(), name="change-trail"),
    *router.urls,
]
