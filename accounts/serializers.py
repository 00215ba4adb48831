from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import ApiToken, Membership, Workspace
from .permissions import token_of
from .roles import Perm
from .selectors import workspaces_for


class CallerWorkspaceField(serializers.PrimaryKeyRelatedField):
    """A workspace id among the caller's workspaces; any other id reads as "does not exist".

    Membership alone makes a workspace selectable: whether the caller's role allows the write
    is the service's decision, which answers 403 rather than hiding a workspace they can see.
    """

    def __init__(self, **kwargs):
        super().__init__(queryset=Workspace.objects.all(), **kwargs)

    def get_queryset(self):
        request = self.context["request"]
        return workspaces_for(request.user, Perm.VIEW, token=token_of(request))


def username_field(**kwargs) -> serializers.SlugRelatedField:
    return serializers.SlugRelatedField(
        slug_field="username", queryset=get_user_model().objects.filter(is_active=True), **kwargs
    )


class WorkspaceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Workspace
        fields = [
            "id", "name", "currency", "time_zone", "metric_bucket_minutes", "freshness_limit_minutes",
            "guardrail_max_step_pct", "guardrail_max_change_per_hour_pct",
            "guardrail_max_actions_per_rule_per_day", "guardrail_max_channel_share_pct", "created_at",
        ]
        read_only_fields = ["id", "created_at"]


class MembershipSerializer(serializers.ModelSerializer):
    workspace = CallerWorkspaceField()
    user = username_field(help_text="Username of the person joining the workspace.")

    class Meta:
        model = Membership
        fields = [
            "id", "workspace", "user", "role", "can_manage_config", "approval_level",
            "approval_limit_pct", "approval_limit_amount", "created_at",
        ]
        read_only_fields = ["id", "created_at"]


class MembershipUpdateSerializer(MembershipSerializer):
    """A membership's role and limits change; its person and workspace never do."""

    workspace = serializers.PrimaryKeyRelatedField(read_only=True)
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)


class ApiTokenSerializer(serializers.ModelSerializer):
    workspace = CallerWorkspaceField()
    user = username_field(
        default=serializers.CurrentUserDefault(),
        help_text="Username of the member acting through the token; the caller when omitted.",
    )
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "workspace", "user", "name", "prefix", "created_at", "last_used_at", "revoked_at", "is_active"]
        read_only_fields = ["id", "prefix", "created_at", "last_used_at", "revoked_at"]


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    key = serializers.SerializerMethodField(
        help_text="The secret, shown in this response only: store it now. Send it as `Authorization: Bearer <key>`."
    )

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]

    def get_key(self, token) -> str:
        return self.context["raw_key"]


class TokenRevokeSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500,
                                   help_text="Why; kept in the audit trail.")


class MeMembershipSerializer(serializers.ModelSerializer):
    workspace_name = serializers.CharField(source="workspace.name", read_only=True)
    permissions = serializers.SerializerMethodField()

    class Meta:
        model = Membership
        fields = [
            "workspace", "workspace_name", "role", "can_manage_config", "approval_level",
            "approval_limit_pct", "approval_limit_amount", "permissions",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.ChoiceField(choices=Perm.choices)))
    def get_permissions(self, membership) -> list[str]:
        return [perm for perm in Perm.values if membership.allows(perm)]


class MeTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "workspace"]
        read_only_fields = fields


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.EmailField()
    is_superuser = serializers.BooleanField()
    token = MeTokenSerializer(
        allow_null=True, help_text="The API token of this request, if one authenticated it: it limits the "
        "memberships below to its workspace."
    )
    memberships = MeMembershipSerializer(many=True)
