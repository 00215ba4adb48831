"""REST API for rules, their evaluations and the changes they request (/api/v1/).

Views are thin: querysets are scoped to the caller's workspaces (another workspace's objects
answer 404); writes go through rules.services, previews through rules.engine, and the role
each needs comes from accounts.roles (edit: EDIT_RULES, preview: PREVIEW_RULES, activate /
pause / archive: ACTIVATE_RULES).
"""

import django_filters
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, permissions, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.permissions import WorkspaceRolePermission, request_actor, scope_to_caller
from accounts.roles import Perm

from . import services
from .engine import rule_preview
from .models import Change, Evaluation, Rule
from .serializers import (
    ChangeSerializer,
    EvaluationDetailSerializer,
    EvaluationSerializer,
    RulePreviewSerializer,
    RuleSerializer,
    StatusChangeSerializer,
)


class RuleFilter(django_filters.FilterSet):
    workspace = django_filters.NumberFilter(field_name="workspace_id")
    campaign = django_filters.NumberFilter(field_name="campaigns", distinct=True)

    class Meta:
        model = Rule
        fields = ["workspace", "status", "action", "campaign"]


class EvaluationFilter(django_filters.FilterSet):
    workspace = django_filters.NumberFilter(field_name="workspace_id")
    rule = django_filters.NumberFilter(field_name="rule_id")
    since = django_filters.IsoDateTimeFilter(field_name="window_end", lookup_expr="gte")

    class Meta:
        model = Evaluation
        fields = ["workspace", "rule", "outcome", "source", "since"]


class ChangeFilter(django_filters.FilterSet):
    workspace = django_filters.NumberFilter(field_name="workspace_id")
    rule = django_filters.NumberFilter(field_name="rule_id")
    segment = django_filters.NumberFilter(field_name="segment_id")
    evaluation = django_filters.NumberFilter(field_name="evaluation_id")

    class Meta:
        model = Change
        fields = ["workspace", "status", "kind", "field", "rule", "segment", "evaluation"]


_RULE_WRITES = "Needs a role that edits rules (marketer, admin, integrator with configuration rights)."
_STATUS_DOC = "Needs a role that activates rules (approver, admin). The reason is kept in the audit trail."


@extend_schema_view(
    create=extend_schema(description=f"A new rule, always a draft, with its triggers. {_RULE_WRITES}"),
    update=extend_schema(description=f"Replaces the rule's settings and triggers, raising its version. "
                                     f"An active rule is edited only by someone who may activate rules. "
                                     f"{_RULE_WRITES}"),
    partial_update=extend_schema(description=f"Changes some settings; `triggers`, when given, replace the "
                                             f"rule's triggers. Raises the version. {_RULE_WRITES}"),
)
class RuleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                  mixins.UpdateModelMixin, viewsets.GenericViewSet):
    """Rules of the caller's workspaces with their triggers. Rules are archived, never deleted:
    their evaluations and changes stay explainable."""

    queryset = Rule.objects.select_related("workspace", "owner").prefetch_related("triggers", "campaigns")
    serializer_class = RuleSerializer
    filterset_class = RuleFilter
    permission_classes = [permissions.IsAuthenticated, WorkspaceRolePermission]
    workspace_lookup = "workspace"
    ordering_fields = ["name", "created_at", "updated_at", "last_evaluated_at"]
    ordering = ["workspace_id", "name"]
    _ACTION_PERMS = {"activate": Perm.ACTIVATE_RULES, "pause": Perm.ACTIVATE_RULES,
                     "archive": Perm.ACTIVATE_RULES, "preview": Perm.PREVIEW_RULES}

    @property
    def write_perm(self) -> str:
        return self._ACTION_PERMS.get(self.action, Perm.EDIT_RULES)

    def get_queryset(self):
        return scope_to_caller(self.queryset, self.request, workspace_lookup=self.workspace_lookup)

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = services.rule_create(
            actor=request_actor(self.request), owner=self.request.user, workspace=data.pop("workspace"), **data
        )

    def perform_update(self, serializer):
        serializer.instance = services.rule_update(
            actor=request_actor(self.request), rule=serializer.instance, **serializer.validated_data
        )

    @extend_schema(request=StatusChangeSerializer, responses=RuleSerializer, description=_STATUS_DOC)
    @action(detail=True, methods=["post"])
    def activate(self, request, pk=None):
        return self._set_status(services.rule_activate)

    @extend_schema(request=StatusChangeSerializer, responses=RuleSerializer, description=_STATUS_DOC)
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._set_status(services.rule_pause)

    @extend_schema(request=StatusChangeSerializer, responses=RuleSerializer, description=_STATUS_DOC)
    @action(detail=True, methods=["post"])
    def archive(self, request, pk=None):
        return self._set_status(services.rule_archive)

    @extend_schema(
        request=None, responses=RulePreviewSerializer,
        description="Dry run: what the rule would decide and propose now, per segment, with every number behind "
                    "it and the capped change with its cap report. Writes nothing. Works on drafts too. Needs a "
                    "role that previews rules.",
    )
    @action(detail=True, methods=["post"])
    def preview(self, request, pk=None):
        result = rule_preview(actor=request_actor(request), rule=self.get_object(), now=timezone.now())
        return Response(RulePreviewSerializer(result).data)

    def _set_status(self, service):
        body = StatusChangeSerializer(data=self.request.data)
        body.is_valid(raise_exception=True)
        rule = service(actor=request_actor(self.request), rule=self.get_object(), reason=body.validated_data["reason"])
        return Response(RuleSerializer(self.get_queryset().get(pk=rule.pk), context=self.get_serializer_context()).data)


class EvaluationViewSet(viewsets.ReadOnlyModelViewSet):
    """Every run of a rule: outcome, one-sentence summary and (in detail) the numbers behind it."""

    queryset = Evaluation.objects.all()
    filterset_class = EvaluationFilter
    ordering_fields = ["window_end", "created_at"]
    ordering = ["-window_end", "-id"]

    def get_queryset(self):
        return scope_to_caller(self.queryset, self.request)

    def get_serializer_class(self):
        return EvaluationDetailSerializer if self.action == "retrieve" else EvaluationSerializer


class ChangeViewSet(viewsets.ReadOnlyModelViewSet):
    """Changes requested by rules, people, rollbacks and experiments, after caps, with their status."""

    queryset = Change.objects.select_related("segment__campaign", "creative__campaign", "campaign")
    serializer_class = ChangeSerializer
    filterset_class = ChangeFilter
    ordering_fields = ["created_at", "applied_at"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self):
        return scope_to_caller(self.queryset, self.request)
