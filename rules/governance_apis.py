"""REST API of the governance (/api/v1/): the approval queue, decisions on changes, manual changes,
approval policies, notification endpoints and deliveries, connectors and their pushes.

Views are thin: querysets are scoped to the caller's workspaces (another workspace's objects
answer 404); every write goes through a service, which decides 403s (roles, approval levels and
limits, four eyes) and conflicts (409) with named errors (rules.exceptions).
"""

from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.exceptions import NotFound, PermissionDenied
from accounts.permissions import WorkspaceRolePermission, request_actor, scope_to_caller, token_of
from accounts.roles import Perm
from accounts.selectors import workspace_ids_for
from accounts.viewsets import ServiceBackedViewSet
from campaigns.models import Campaign, Creative, Segment

from . import approvals as decisions
from . import notifications, policy, pushes
from .approval_queue import approval_queue
from .governance_serializers import (
    ApprovalPolicySerializer,
    ApprovalSerializer,
    ChangePushSerializer,
    DecisionSerializer,
    GovernedChangeSerializer,
    ManualChangeSerializer,
    NotificationDeliverySerializer,
    NotificationEndpointSerializer,
    PlatformConnectorSerializer,
    QueueItemSerializer,
    ReviseSerializer,
)
from .manual_changes import change_propose_manual
from .models import ApprovalPolicy, Change, ChangePush, NotificationDelivery, NotificationEndpoint, PlatformConnector

_TARGETS = {"segment": (Segment, "campaign__workspace"), "campaign": (Campaign, "workspace"),
            "creative": (Creative, "campaign__workspace")}
_CHANGES = Change.objects.select_related("segment__campaign", "creative__campaign", "campaign", "rule")


class ApprovalQueueViewSet(viewsets.GenericViewSet):
    """What waits for the caller's decision: levels they decide, never their own changes."""

    permission_classes = [permissions.IsAuthenticated]
    serializer_class = QueueItemSerializer
    filter_backends = []

    @extend_schema(description="Changes pending or escalated at a level the caller decides, in the caller's "
                               "workspaces, excluding changes they requested or whose rule they own; soonest SLA "
                               "first. Needs a role that decides changes (approver, admin).")
    def list(self, request):
        token = token_of(request)
        if not request.user.is_superuser and not workspace_ids_for(request.user, Perm.DECIDE_CHANGES, token=token):
            raise PermissionDenied("You decide no changes in your workspaces.")
        items = approval_queue(user=request.user, token=token, now=timezone.now())
        page = self.paginate_queryset(items)
        return self.get_paginated_response(QueueItemSerializer(page, many=True, context={"request": request}).data)


_DECISION_DOC = ("Needs an approver (or admin) who decides the change's level; four eyes: never the requester "
                 "or the rule's owner. A reallocation batch is decided as one.")


class ChangeDecisionViewSet(viewsets.GenericViewSet):
    """Decisions on a change waiting for approval (the change itself: /changes/{id}/)."""

    queryset = _CHANGES
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = GovernedChangeSerializer
    filter_backends = []

    def get_queryset(self):
        return scope_to_caller(self.queryset, self.request)

    @extend_schema(request=DecisionSerializer, responses=GovernedChangeSerializer,
                   description=f"Approve, within the caller's limits; applied once the policy's number of approvers "
                               f"is reached (409 `change_content_changed` if `content_hash` no longer matches; 403 "
                               f"`above_approval_limit`: escalate instead). {_DECISION_DOC}")
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._decide(decisions.change_approve)

    @extend_schema(request=DecisionSerializer, responses=GovernedChangeSerializer,
                   description=f"Reject; a comment is required. {_DECISION_DOC}")
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._decide(decisions.change_reject)

    @extend_schema(request=DecisionSerializer, responses=GovernedChangeSerializer,
                   description=f"Hand to the next approval level; a comment is required. {_DECISION_DOC}")
    @action(detail=True, methods=["post"])
    def escalate(self, request, pk=None):
        return self._decide(decisions.change_escalate)

    @extend_schema(request=ReviseSerializer, responses=GovernedChangeSerializer,
                   description="Edit the value of a waiting change (capped again, routed again; earlier approvals "
                               "no longer count). Needs a role that proposes changes; the editor becomes its "
                               "requester.")
    @action(detail=True, methods=["post"])
    def revise(self, request, pk=None):
        body = ReviseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        change = decisions.change_revise(actor=request_actor(request), change=self.get_object(), **body.validated_data)
        return self._answer(change)

    @extend_schema(responses=ApprovalSerializer(many=True),
                   description="Every decision on the change, with the content hash it was bound to.")
    @action(detail=True, methods=["get"])
    def approvals(self, request, pk=None):
        change = self.get_object()
        return Response(ApprovalSerializer(change.approvals.all(), many=True).data)

    def _decide(self, service):
        body = DecisionSerializer(data=self.request.data)
        body.is_valid(raise_exception=True)
        change = service(actor=request_actor(self.request), change=self.get_object(), **body.validated_data)
        return self._answer(change)

    def _answer(self, change: Change) -> Response:
        return Response(GovernedChangeSerializer(self.get_queryset().get(pk=change.pk),
                                                 context=self.get_serializer_context()).data)


_IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
    description="Optional, up to 100 characters: a retry with the same key returns the change recorded first.")


class ManualChangeViewSet(viewsets.GenericViewSet):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = ManualChangeSerializer
    filter_backends = []

    @extend_schema(request=ManualChangeSerializer, parameters=[_IDEMPOTENCY_KEY],
                   responses={status.HTTP_201_CREATED: GovernedChangeSerializer},
                   description="Propose a change by hand: capped by the workspace guardrails, routed by the "
                               "approval policy, applied at once when it auto-approves (else pending). Needs a role "
                               "that proposes changes (marketer, admin).")
    def create(self, request):
        body = ManualChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        model, lookup = _TARGETS[data["target_type"]]
        target = scope_to_caller(model.objects.all(), request, workspace_lookup=lookup).filter(
            pk=data["target_id"]).first()
        if target is None:
            raise NotFound(f"No such {data['target_type']} in your workspaces.")
        change = change_propose_manual(
            actor=request_actor(request), target=target, field=data["field"], value=data["value"],
            reason=data["reason"], idempotency_key=request.headers.get("Idempotency-Key", "")[:100],
        )
        fresh = scope_to_caller(_CHANGES, request).get(pk=change.pk)
        return Response(GovernedChangeSerializer(fresh, context={"request": request}).data,
                        status=status.HTTP_201_CREATED)


# --- configuration: policies, endpoints, connectors ----------------------------------------------

class _ConfigViewSet(ServiceBackedViewSet):
    """CRUD through services; reads for any role in the workspace, writes for workspace admins."""

    write_perm = Perm.MANAGE_WORKSPACE


class ApprovalPolicyViewSet(_ConfigViewSet):
    """Per workspace, optionally per campaign: auto-apply limits, gates, levels with SLAs, expiry."""

    queryset = ApprovalPolicy.objects.select_related("campaign")
    serializer_class = ApprovalPolicySerializer
    subject = "policy"
    create_service = policy.approval_policy_create
    update_service = policy.approval_policy_update
    delete_service = policy.approval_policy_delete

    def perform_update(self, serializer):
        fields = {k: v for k, v in serializer.validated_data.items() if k not in ("workspace", "campaign")}
        serializer.instance = policy.approval_policy_update(actor=request_actor(self.request),
                                                            policy=serializer.instance, **fields)


class _SecretOnCreateMixin:
    """The signing secret is in the creation's response, and never again."""

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        instance, secret = type(self).create_service(actor=request_actor(request), **serializer.validated_data)
        data = {**self.get_serializer(instance).data, "secret": secret}
        return Response(data, status=status.HTTP_201_CREATED)


def _with_secret(serializer_class, name: str):
    return inline_serializer(name=name, fields={**serializer_class().get_fields(), "secret": serializers.CharField(
        help_text="The signing secret: in this response only. Keep it.")})


_SIGNED = 'signed with HMAC-SHA256 (header X-Rules-Signature: t=<unix>,v1=<hex of "<t>.<body>">)'


@extend_schema_view(create=extend_schema(responses={201: _with_secret(NotificationEndpointSerializer,
                                                                      "NotificationEndpointCreated")},
                                         description=f"A webhook for governance events, {_SIGNED}."))
class NotificationEndpointViewSet(_SecretOnCreateMixin, _ConfigViewSet):
    queryset = NotificationEndpoint.objects.all()
    serializer_class = NotificationEndpointSerializer
    subject = "endpoint"
    create_service = notifications.notification_endpoint_create
    update_service = notifications.notification_endpoint_update
    delete_service = notifications.notification_endpoint_delete


@extend_schema_view(create=extend_schema(responses={201: _with_secret(PlatformConnectorSerializer,
                                                                      "PlatformConnectorCreated")},
                                         description="Where applied changes are pushed. A webhook connector's "
                                                     "pushes are signed like notification webhooks."))
class PlatformConnectorViewSet(_SecretOnCreateMixin, _ConfigViewSet):
    """Connectors are disabled, never deleted: their pushes stay on record."""

    http_method_names = ["get", "post", "put", "patch", "head", "options"]
    queryset = PlatformConnector.objects.all()
    serializer_class = PlatformConnectorSerializer
    subject = "connector"
    create_service = pushes.connector_create
    update_service = pushes.connector_update


class NotificationDeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    """The delivery log: every e-mail and webhook call, with each attempt's outcome (workspace admins)."""

    queryset = NotificationDelivery.objects.all()
    serializer_class = NotificationDeliverySerializer
    filterset_fields = ["status", "channel", "event", "change"]

    def get_queryset(self):
        return scope_to_caller(self.queryset, self.request, perm=Perm.MANAGE_WORKSPACE)


class ChangePushViewSet(viewsets.ReadOnlyModelViewSet):
    """Applied changes on their way to the connectors: pending, succeeded or failed, with attempts."""

    queryset = ChangePush.objects.select_related("connector")
    serializer_class = ChangePushSerializer
    filterset_fields = ["status", "change", "connector"]
    permission_classes = [permissions.IsAuthenticated, WorkspaceRolePermission]
    workspace_lookup = "workspace"
    write_perm = Perm.MANAGE_WORKSPACE

    def get_queryset(self):
        return scope_to_caller(self.queryset, self.request)

    @extend_schema(request=None, responses={200: ChangePushSerializer,
                                            409: OpenApiResponse(description="Only a failed push is sent again.")},
                   description="Send a failed push again. Needs a workspace admin.")
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        push = pushes.change_push_retry(actor=request_actor(request), push=self.get_object())
        return Response(ChangePushSerializer(push).data)
