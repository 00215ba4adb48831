"""Admin of the governance: the approval queue, manual changes, approval policies, notification
endpoints and deliveries, connectors and their pushes. Scoped by role; every write through a service.

The approval queue lists what waits for the person (levels they decide, never their own
changes) with the evaluation's numbers, the caps and policy checks, risk, age and SLA left;
its approve / reject / escalate buttons call rules.approvals.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.admin_scoping import ReadOnlyScopedAdmin, WorkspaceScopedAdmin, adopt_saved
from accounts.exceptions import ApplicationError
from accounts.roles import Perm

from . import approvals, notifications, policy, pushes
from .approval_queue import approval_queue
from .changes import AWAITING_DECISION
from .manual_changes import change_propose_manual
from .models import (
    Approval,
    ApprovalPolicy,
    ApprovalRequest,
    ChangePush,
    ManualChange,
    NotificationDelivery,
    NotificationEndpoint,
    PlatformConnector,
)

_DECISIONS = {"approve": approvals.change_approve, "reject": approvals.change_reject,
              "escalate": approvals.change_escalate}


@admin.display(description="Platform")
def push_state(change) -> str:
    """Where an applied change stands with each connector (prefetch `pushes__connector`)."""
    pushes_ = list(change.pushes.all())
    if not pushes_:
        return "—"
    return "; ".join(f"{p.connector.name}: {p.get_status_display().lower()}"
                     + (f" ({p.attempts} attempts: {p.last_error[:80]})" if p.status != ChangePush.Status.SUCCEEDED
                        and p.attempts else "") for p in pushes_)


# --- the approval queue ---------------------------------------------------------------------------

@admin.register(ApprovalRequest)
class ApprovalQueueAdmin(ReadOnlyScopedAdmin):
    view_perm = Perm.DECIDE_CHANGES

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:change_id>/decide/<str:verb>/", view(require_POST(self.decide_view)),
                 name="rules_approvalrequest_decide"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "title": "Approval queue: waiting for you",
            "items": approval_queue(user=request.user, now=timezone.now()),
        }
        return TemplateResponse(request, "admin/rules/approval_queue.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return redirect(reverse("admin:rules_change_change", args=[object_id]))

    def decide_view(self, request, change_id: int, verb: str):
        service = _DECISIONS.get(verb)
        if service is None or not self.has_view_permission(request):
            raise PermissionDenied
        change = get_object_or_404(self.get_queryset(request).filter(status__in=AWAITING_DECISION), pk=change_id)
        try:
            decided = service(actor=self.actor(request), change=change, comment=request.POST.get("comment", ""),
                              content_hash=request.POST.get("content_hash") or None)
        except ApplicationError as error:
            self.message_user(request, f"Change #{change_id}: {error.message}", messages.ERROR)
        else:
            self.message_user(request, f"Change #{change_id}: {verb} done — it is now "
                                       f"{decided.get_status_display().lower()}.", messages.SUCCESS)
        return redirect(reverse("admin:rules_approvalrequest_changelist"))


# --- manual changes -----------------------------------------------------------------------------

class ManualChangeForm(forms.ModelForm):
    value = forms.CharField(help_text="A number for bid and daily budget; active or paused for a status.")
    reason_text = forms.CharField(label="Reason", widget=forms.Textarea(attrs={"rows": 2}),
                                  help_text="Why: kept in the audit trail and shown to approvers.")

    class Meta:
        model = ManualChange
        fields = ["segment", "campaign", "creative", "field"]

    def clean(self):
        cleaned = super().clean()
        targets = [cleaned.get(name) for name in ("segment", "campaign", "creative") if cleaned.get(name)]
        if len(targets) != 1:
            raise forms.ValidationError("Choose exactly one target: a segment, a campaign or a creative.")
        cleaned["target"] = targets[0]
        return cleaned


@admin.register(ManualChange)
class ManualChangeAdmin(ReadOnlyScopedAdmin):
    """Propose a change by hand; capped and routed like a rule's. Listed: the manual changes."""

    edit_perm = Perm.PROPOSE_CHANGES
    form = ManualChangeForm
    list_display = ["created_at", "target_display", "field", "old_value", "requested_value", "capped_value", "status",
                    "requested_by"]
    list_filter = ["status", "field"]
    list_select_related = ["segment__campaign", "creative__campaign", "campaign", "requested_by"]
    autocomplete_fields = []

    def get_queryset(self, request):
        return super().get_queryset(request).filter(kind=ManualChange.Kind.MANUAL)

    def has_add_permission(self, request):
        return self._may(request, Perm.PROPOSE_CHANGES)

    def get_fields(self, request, obj=None):
        return ["segment", "campaign", "creative", "field", "value", "reason_text"]

    @admin.display(description="Target")
    def target_display(self, change):
        return change.target

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        saved = change_propose_manual(actor=self.actor(request), target=data["target"], field=data["field"],
                                      value=data["value"], reason=data["reason_text"])
        adopt_saved(obj, saved)
        self.message_user(request, f"Change #{saved.pk} is {saved.get_status_display().lower()}: "
                                   f"{saved.old_value} → {saved.capped_value} (asked {saved.requested_value}).",
                          messages.INFO)

    def response_add(self, request, obj, post_url_continue=None):
        return redirect(reverse("admin:rules_manualchange_changelist"))


# --- policies, endpoints, connectors ------------------------------------------------------------

@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(WorkspaceScopedAdmin):
    edit_perm = Perm.MANAGE_WORKSPACE
    list_display = ["__str__", "workspace", "campaign", "auto_apply_max_pct", "auto_apply_max_daily_amount",
                    "always_require_approval", "level_sla_minutes", "approvals_required", "pending_expiry_minutes"]
    list_select_related = ["workspace", "campaign"]
    fields = ["workspace", "campaign", *policy.POLICY_FIELDS]

    def get_readonly_fields(self, request, obj=None):
        return ["workspace", "campaign"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in policy.POLICY_FIELDS if name in form.cleaned_data}
        if change:
            policy.approval_policy_update(actor=self.actor(request), policy=obj, **fields)
        else:
            adopt_saved(obj, policy.approval_policy_create(actor=self.actor(request), workspace=form.cleaned_data[
                "workspace"], campaign=form.cleaned_data.get("campaign"), **fields))

    def delete_model(self, request, obj):
        policy.approval_policy_delete(actor=self.actor(request), policy=obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            policy.approval_policy_delete(actor=self.actor(request), policy=obj)


class _SecretShownOnce:
    """Creation through a service that returns the signing secret: shown in a message, this once."""

    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    create_service = update_service = None
    subject: str
    config_fields: tuple[str, ...]  # what an edit may change
    create_only_fields: tuple[str, ...] = ()  # set once, at creation (e.g. a connector's kind)

    def save_model(self, request, obj, form, change):
        names = self.config_fields if change else (*self.create_only_fields, *self.config_fields)
        fields = {name: form.cleaned_data[name] for name in names if name in form.cleaned_data}
        if change:
            type(self).update_service(actor=self.actor(request), **{self.subject: obj}, **fields)
            return
        saved, secret = type(self).create_service(actor=self.actor(request), workspace=form.cleaned_data["workspace"],
                                                  **fields)
        adopt_saved(obj, saved)
        if secret:
            self.message_user(request, f"“{saved}” created. Its signing secret, shown this once — copy it now: "
                                       f"{secret}", messages.WARNING)


@admin.register(NotificationEndpoint)
class NotificationEndpointAdmin(_SecretShownOnce, WorkspaceScopedAdmin):
    view_perm = edit_perm = Perm.MANAGE_WORKSPACE
    list_display = ["name", "workspace", "url", "events", "enabled", "created_at"]
    list_select_related = ["workspace"]
    fields = ["workspace", "name", "url", "events", "enabled"]
    subject, config_fields = "endpoint", ("name", "url", "events", "enabled")
    create_service = notifications.notification_endpoint_create
    update_service = notifications.notification_endpoint_update

    def get_readonly_fields(self, request, obj=None):
        return ["workspace"] if obj is not None else []

    def delete_model(self, request, obj):
        notifications.notification_endpoint_delete(actor=self.actor(request), endpoint=obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            notifications.notification_endpoint_delete(actor=self.actor(request), endpoint=obj)


@admin.register(PlatformConnector)
class PlatformConnectorAdmin(_SecretShownOnce, WorkspaceScopedAdmin):
    view_perm = edit_perm = Perm.MANAGE_WORKSPACE
    list_display = ["name", "workspace", "kind", "url", "enabled", "breaker_state", "consecutive_failures",
                    "breaker_changed_at"]
    list_select_related = ["workspace"]
    subject = "connector"
    config_fields = ("name", "url", "enabled", "timeout_seconds", "failure_threshold", "cool_down_seconds")
    create_only_fields = ("kind",)
    create_service = pushes.connector_create
    update_service = pushes.connector_update

    def get_fields(self, request, obj=None):
        fields = ["workspace", "name", "kind", "url", "enabled", "timeout_seconds", "failure_threshold",
                  "cool_down_seconds"]
        return fields + ["breaker_state", "consecutive_failures", "breaker_changed_at"] if obj else fields

    def get_readonly_fields(self, request, obj=None):
        return ["workspace", "kind", "breaker_state", "consecutive_failures", "breaker_changed_at"] if obj else []

    def has_delete_permission(self, request, obj=None):
        return False  # disable instead: its pushes stay on record


# --- records --------------------------------------------------------------------------------------

@admin.register(ChangePush)
class ChangePushAdmin(ReadOnlyScopedAdmin):
    """Applied changes on their way to the platforms: a failed push stays here until it is sent again."""

    list_display = ["change", "connector", "status", "attempts", "last_status_code", "last_error", "last_attempt_at",
                    "succeeded_at"]
    list_filter = ["status", "connector"]
    list_select_related = ["change", "connector"]
    actions = ["retry_selected"]

    def has_change_permission(self, request, obj=None):
        # Only for the retry action on the changelist; rows stay read-only.
        return obj is None and self._may(request, Perm.MANAGE_WORKSPACE)

    @admin.action(description="Send the selected failed pushes again", permissions=["change"])
    def retry_selected(self, request, queryset):
        for push in queryset:
            try:
                pushes.change_push_retry(actor=self.actor(request), push=push)
            except ApplicationError as error:
                self.message_user(request, f"{push}: {error.message}", messages.ERROR)


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(ReadOnlyScopedAdmin):
    view_perm = Perm.MANAGE_WORKSPACE
    list_display = ["created_at", "event", "channel", "recipient", "status", "attempts", "last_status_code",
                    "last_error", "delivered_at"]
    list_filter = ["status", "channel", "event"]


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyScopedAdmin):
    list_display = ["created_at", "change", "decision", "level", "actor_label", "comment", "content_hash"]
    list_filter = ["decision"]
    list_select_related = ["change"]
