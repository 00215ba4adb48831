"""REST API for workspaces, memberships, API tokens and the caller's own access (/api/v1/).

Views are thin: querysets come scoped from accounts.selectors/permissions (another workspace's
objects answer 404), writes go through accounts.services (which refuse with 403 and audit).
"""

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from . import services
from .models import ApiToken, Membership
from .permissions import WorkspaceRolePermission, request_actor, scope_to_caller, token_of
from .roles import Perm
from .selectors import api_tokens_visible_to, memberships_of, workspaces_for
from .serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenSerializer,
    MembershipSerializer,
    MembershipUpdateSerializer,
    MeSerializer,
    TokenRevokeSerializer,
    WorkspaceSerializer,
)

_AUTHENTICATED_ROLE = [permissions.IsAuthenticated, WorkspaceRolePermission]


@extend_schema_view(
    create=extend_schema(description="Platform operators (superusers, signed in) only; the creator becomes "
                                     "the workspace's first admin."),
    update=extend_schema(description="Workspace admins only (settings, guardrails)."),
    partial_update=extend_schema(description="Workspace admins only (settings, guardrails)."),
)
class WorkspaceViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Workspaces the caller is a member of (with a token: the token's workspace only)."""

    serializer_class = WorkspaceSerializer
    permission_classes = _AUTHENTICATED_ROLE
    workspace_lookup = "id"
    write_perm = Perm.MANAGE_WORKSPACE
    filterset_fields = ["currency", "time_zone"]
    ordering_fields = ["name", "created_at"]
    ordering = ["name"]

    def get_queryset(self):
        return workspaces_for(self.request.user, Perm.VIEW, token=token_of(self.request))

    def perform_create(self, serializer):
        serializer.instance = services.workspace_create(
            actor=request_actor(self.request), owner=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = services.workspace_update(
            actor=request_actor(self.request), workspace=serializer.instance, **serializer.validated_data
        )


class MembershipFilter(django_filters.FilterSet):
    user = django_filters.CharFilter(field_name="user__username", help_text="Username.")

    class Meta:
        model = Membership
        fields = ["workspace", "role", "user"]


class MembershipViewSet(viewsets.ModelViewSet):
    """Who holds which role in the caller's workspaces. Workspace admins add, change and remove them."""

    permission_classes = _AUTHENTICATED_ROLE
    workspace_lookup = "workspace"
    write_perm = Perm.MANAGE_MEMBERS
    filterset_class = MembershipFilter
    ordering_fields = ["created_at", "role", "user__username"]
    ordering = ["workspace_id", "user__username"]

    def get_queryset(self):
        return scope_to_caller(Membership.objects.select_related("user", "workspace"), self.request)

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return MembershipUpdateSerializer
        return MembershipSerializer

    def perform_create(self, serializer):
        serializer.instance = services.membership_create(actor=request_actor(self.request), **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.membership_update(
            actor=request_actor(self.request), membership=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        services.membership_delete(actor=request_actor(self.request), membership=instance)


class ApiTokenFilter(django_filters.FilterSet):
    user = django_filters.CharFilter(field_name="user__username", help_text="Username.")
    revoked = django_filters.BooleanFilter(field_name="revoked_at", lookup_expr="isnull", exclude=True)

    class Meta:
        model = ApiToken
        fields = ["workspace", "user", "revoked"]


@extend_schema_view(
    list=extend_schema(description="Workspace admins see every token of their workspaces; others, their own. "
                                   "The secret is never shown again after creation: only its prefix."),
    create=extend_schema(
        description="Workspace admins, signed in (not through a token), issue a token to a member. "
                    "The response carries the secret `key` once.",
        responses={status.HTTP_201_CREATED: ApiTokenCreatedSerializer},
    ),
)
class ApiTokenViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    serializer_class = ApiTokenSerializer
    filterset_class = ApiTokenFilter
    ordering_fields = ["created_at", "last_used_at", "name"]
    ordering = ["-created_at"]

    def get_queryset(self):
        return api_tokens_visible_to(self.request.user, token=token_of(self.request))

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, raw_key = services.api_token_create(actor=request_actor(request), **serializer.validated_data)
        body = ApiTokenCreatedSerializer(token, context={**self.get_serializer_context(), "raw_key": raw_key})
        return Response(body.data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=TokenRevokeSerializer, responses=ApiTokenSerializer,
        description="Workspace admins revoke any token of their workspaces; anyone may revoke their own. "
                    "Idempotent: revoking a revoked token changes nothing.",
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        reason = TokenRevokeSerializer(data=request.data)
        reason.is_valid(raise_exception=True)
        token = services.api_token_revoke(
            actor=request_actor(request), token=self.get_object(), reason=reason.validated_data["reason"]
        )
        return Response(ApiTokenSerializer(token, context=self.get_serializer_context()).data)


class MeView(APIView):
    """Who the caller is, and what each membership lets them do: a starting point for integrators."""

    @extend_schema(responses=MeSerializer)
    def get(self, request):
        token = token_of(request)
        user = request.user
        me = {
            "id": user.pk,
            "username": user.get_username(),
            "email": user.email,
            "is_superuser": user.is_superuser,
            "token": token,
            "memberships": memberships_of(user, token=token).order_by("workspace__name"),
        }
        return Response(MeSerializer(me).data)
