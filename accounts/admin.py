"""Admin for workspaces, memberships and API tokens: scoped by role, every write through a service."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model

from audit.admin_history import VersionHistoryAdminMixin

from . import services
from .admin_scoping import WorkspaceScopedAdmin, adopt_saved, changed_values
from .models import ApiToken, Membership, Workspace
from .roles import Perm


class UsernameField(forms.ModelChoiceField):
    """Typed username, so that the form never lists every account on the platform."""

    def __init__(self, **kwargs):
        super().__init__(
            queryset=get_user_model().objects.filter(is_active=True),
            to_field_name="username", widget=forms.TextInput, **kwargs,
        )


@admin.register(Workspace)
class WorkspaceAdmin(VersionHistoryAdminMixin, WorkspaceScopedAdmin):
    workspace_lookup = "id"
    edit_perm = Perm.MANAGE_WORKSPACE
    list_display = ["name", "currency", "time_zone", "metric_bucket_minutes", "freshness_limit_minutes", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["created_at"]
    fieldsets = [
        (None, {"fields": ["name", "currency", "time_zone", "created_at"]}),
        ("Data", {"fields": ["metric_bucket_minutes", "freshness_limit_minutes"]}),
        ("Guardrails", {"fields": [
            "guardrail_max_step_pct", "guardrail_max_change_per_hour_pct",
            "guardrail_max_actions_per_rule_per_day", "guardrail_max_channel_share_pct",
        ]}),
    ]

    def has_add_permission(self, request):
        return request.user.is_superuser  # workspaces are opened by the platform's operators

    def has_delete_permission(self, request, obj=None):
        return False  # deleting would cascade through every campaign, rule and metric: not offered

    def save_model(self, request, obj, form, change):
        actor = self.actor(request)
        if change:
            services.workspace_update(actor=actor, workspace=obj, **changed_values(form))
        else:
            adopt_saved(obj, services.workspace_create(actor=actor, **form.cleaned_data))


class MembershipForm(forms.ModelForm):
    user = UsernameField(help_text="Username of the person joining the workspace.")

    class Meta:
        model = Membership
        fields = ["workspace", "user", "role", "can_manage_config", "approval_level", "approval_limit_pct",
                  "approval_limit_amount"]


@admin.register(Membership)
class MembershipAdmin(VersionHistoryAdminMixin, WorkspaceScopedAdmin):
    edit_perm = Perm.MANAGE_MEMBERS
    form = MembershipForm
    list_display = ["user", "workspace", "role", "can_manage_config", "approval_level", "approval_limit_pct",
                    "approval_limit_amount"]
    list_filter = ["role", "workspace"]
    list_select_related = ["user", "workspace"]
    search_fields = ["user__username", "user__email", "workspace__name"]

    def get_readonly_fields(self, request, obj=None):
        return ["user", "workspace", "created_at"] if obj is not None else ["created_at"]

    def save_model(self, request, obj, form, change):
        actor = self.actor(request)
        if change:
            services.membership_update(actor=actor, membership=obj, **changed_values(form))
        else:
            adopt_saved(obj, services.membership_create(actor=actor, **form.cleaned_data))

    def delete_model(self, request, obj):
        services.membership_delete(actor=self.actor(request), membership=obj)

    def delete_queryset(self, request, queryset):
        for membership in queryset:
            services.membership_delete(actor=self.actor(request), membership=membership)


class ApiTokenForm(forms.ModelForm):
    user = UsernameField(help_text="Username of the member who acts through this token.")

    class Meta:
        model = ApiToken
        fields = ["workspace", "user", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(WorkspaceScopedAdmin):
    """Tokens are issued (the secret shown once) and revoked; nothing else about them changes."""

    view_perm = Perm.MANAGE_MEMBERS
    edit_perm = Perm.MANAGE_MEMBERS
    form = ApiTokenForm
    list_display = ["name", "prefix", "workspace", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["workspace", ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["user", "workspace"]
    search_fields = ["name", "prefix", "user__username"]
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["workspace", "user", "name"]
        return ["name", "prefix", "workspace", "user", "created_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj) if obj is not None else []

    def has_change_permission(self, request, obj=None):
        # Existing tokens are read-only; the changelist still needs "change" for the revoke action.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: a revoked token stays visible in the audit trail

    def save_model(self, request, obj, form, change):
        token, raw_key = services.api_token_create(actor=self.actor(request), **form.cleaned_data)
        adopt_saved(obj, token)
        self.message_user(
            request,
            f"API token “{token.name}” created. Its key, shown this once — copy it now: {raw_key}",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected API tokens", permissions=["change"])
    def revoke(self, request, queryset):
        actor = self.actor(request)
        revoked = [services.api_token_revoke(actor=actor, token=token, reason="revoked in the admin")
                   for token in queryset.filter(revoked_at__isnull=True)]
        self.message_user(request, f"{len(revoked)} token(s) revoked.", messages.SUCCESS)
