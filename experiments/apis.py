"""REST API for experiments (/api/v1/experiments/).

Views are thin: querysets are scoped to the caller's workspaces (another workspace's
experiments answer 404); writes go through experiments.services, whose role checks decide
(edit: EDIT_RULES; approve the launch: LAUNCH_EXPERIMENTS, not the creator; start and stop:
EDIT_RULES or LAUNCH_EXPERIMENTS; deploy a proposed winner: DECIDE_CHANGES).
"""

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, permissions, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.permissions import WorkspaceRolePermission, request_actor, scope_to_caller
from accounts.roles import Perm
from rules.serializers import StatusChangeSerializer

from . import services
from .charts import effects_chart, lift_chart
from .models import Experiment
from .selectors import experiment_results
from .serializers import (
    ExperimentDetailSerializer,
    ExperimentResultsSerializer,
    ExperimentSerializer,
)


class ExperimentFilter(django_filters.FilterSet):
    workspace = django_filters.NumberFilter(field_name="workspace_id")
    campaign = django_filters.NumberFilter(field_name="campaign_id")

    class Meta:
        model = Experiment
        fields = ["workspace", "campaign", "status", "kind", "method"]


_EDIT_DOC = "Needs a role that edits rules and experiments (marketer, admin, integrator with configuration rights)."
_RUN_DOC = "Needs a role that edits or launches experiments. The reason is kept in the audit trail."


@extend_schema_view(
    create=extend_schema(description=f"A new experiment, always a draft, with its arms. {_EDIT_DOC}"),
    update=extend_schema(description=f"Replaces a draft's settings and arms; an approved experiment goes back "
                                     f"to draft. {_EDIT_DOC}"),
    partial_update=extend_schema(description=f"Changes some settings; `variants`, when given, replace the arms. "
                                             f"{_EDIT_DOC}"),
    retrieve=extend_schema(description="The experiment with its power analysis (sample per arm and expected "
                                       "duration from the campaign's last 7 days of traffic)."),
)
class ExperimentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                        mixins.UpdateModelMixin, viewsets.GenericViewSet):
    """Experiments of the caller's workspaces with their arms. Experiments are stopped, never deleted."""

    queryset = Experiment.objects.select_related("workspace", "campaign", "winner").prefetch_related("variants")
    filterset_class = ExperimentFilter
    permission_classes = [permissions.IsAuthenticated, WorkspaceRolePermission]
    workspace_lookup = "workspace"
    ordering_fields = ["name", "created_at", "started_at"]
    ordering = ["workspace_id", "-created_at"]
    # The services decide the rest (start and stop accept either of two rights).
    _ACTION_PERMS = {"approve": Perm.LAUNCH_EXPERIMENTS, "deploy": Perm.DECIDE_CHANGES, "start": Perm.VIEW,
                     "stop": Perm.VIEW}

    @property
    def write_perm(self) -> str:
        return self._ACTION_PERMS.get(self.action, Perm.EDIT_RULES)

    def get_queryset(self):
        return scope_to_caller(self.queryset, self.request, workspace_lookup=self.workspace_lookup)

    def get_serializer_class(self):
        return ExperimentDetailSerializer if self.action == "retrieve" else ExperimentSerializer

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = services.experiment_create(
            actor=request_actor(self.request), workspace=data.pop("workspace"), campaign=data.pop("campaign"),
            variants=[dict(v) for v in data.pop("variants", [])], **data,
        )

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        variants = data.pop("variants", None)
        serializer.instance = services.experiment_update(
            actor=request_actor(self.request), experiment=serializer.instance,
            variants=None if variants is None else [dict(v) for v in variants], **data,
        )

    @extend_schema(request=StatusChangeSerializer, responses=ExperimentSerializer,
                   description="Approve the launch (four eyes: not by its creator). Needs a role that launches "
                               "experiments (approver, admin).")
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._run(services.experiment_approve)

    @extend_schema(request=StatusChangeSerializer, responses=ExperimentSerializer,
                   description=f"Start an approved experiment: fixes the planned sample and, for a holdout, "
                               f"holds the holdout arm's segment out of the rules. {_RUN_DOC}")
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._run(services.experiment_start)

    @extend_schema(request=StatusChangeSerializer, responses=ExperimentSerializer, description=f"Stop. {_RUN_DOC}")
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return self._run(services.experiment_stop)

    @extend_schema(request=StatusChangeSerializer, responses=ExperimentSerializer,
                   description="Submit the proposed deployment of the winner (losers paused, budget moved) to the "
                               "change pipeline: applied when the approval policy allows, else pending approval. "
                               "Needs a role that decides changes.")
    @action(detail=True, methods=["post"])
    def deploy(self, request, pk=None):
        return self._run(services.experiment_deploy)

    @extend_schema(responses=ExperimentResultsSerializer,
                   description="Every analysis run with all its numbers, the latest first-class, and the charts "
                               "as inline SVG: each variant's effect with its interval, and the lift over time.")
    @action(detail=True, methods=["get"])
    def results(self, request, pk=None):
        experiment = self.get_object()
        history = list(experiment_results(experiment))
        latest = history[-1] if history else None
        charts = {"effects": effects_chart(experiment, latest), "lift_over_time": lift_chart(experiment, history)}
        body = {"latest": latest, "history": history, "charts": charts}
        return Response(ExperimentResultsSerializer(body).data)

    def _run(self, service):
        body = StatusChangeSerializer(data=self.request.data)
        body.is_valid(raise_exception=True)
        experiment = service(actor=request_actor(self.request), experiment=self.get_object(),
                             reason=body.validated_data["reason"])
        return Response(ExperimentSerializer(self.get_queryset().get(pk=experiment.pk),
                                             context=self.get_serializer_context()).data)
