"""Admin for audit events: read-only, and scoped to the person's workspaces.

Registered here rather than in `audit/admin.py` because scoping asks `accounts` for the
person's workspaces, and `audit` imports no app of ours.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import path
from django.utils.html import format_html_join

from accounts.admin_scoping import ReadOnlyAdminMixin
from accounts.exceptions import ApplicationError
from accounts.roles import Perm
from accounts.selectors import admin_workspace_ids, may_use_admin, user_may
from audit.actors import Actor
from audit.models import AuditEvent
from rules.admin import ChangeAdmin as RulesChangeAdmin
from rules.models import Change

from .change_rollback import change_rollback
from .change_trail import change_trail


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Append-only: nobody adds, changes or deletes an event here, not even a superuser."""

    list_display = ["id", "created_at", "workspace_id", "actor_label", "actor_kind", "action", "subject_type",
                    "subject_id", "short_reason"]
    list_filter = ["actor_kind", "action", "subject_type"]
    search_fields = ["=subject_id", "actor_label", "=request_id", "reason", "subject_repr"]
    date_hierarchy = "created_at"
    list_per_page = 100
    show_full_result_count = False  # counting a long log on every page is the slow part
    fields = ["created_at", "workspace_id", "actor_kind", "actor_label", "action", "subject_type", "subject_id",
              "subject_repr", "before", "after", "reason", "request_id", "version_ids", "prev_hash", "hash"]
    readonly_fields = fields

    def get_queryset(self, request):
        events = super().get_queryset(request).prefetch_related("version_link__revision__version_set")
        if request.user.is_superuser:
            return events
        return events.filter(workspace_id__in=admin_workspace_ids(request.user, Perm.VIEW))

    def has_view_permission(self, request, obj=None):
        return may_use_admin(request.user)

    def has_module_permission(self, request):
        return may_use_admin(request.user)

    @admin.display(description="reason")
    def short_reason(self, event):
        return event.reason[:80]

    @admin.display(description="versions saved")
    def version_ids(self, event):
        link = getattr(event, "version_link", None)
        if link is None:
            return "—"
        return format_html_join(", ", "#{} ({})", ((v.pk, v.object_repr) for v in link.revision.version_set.all()))


# --- The change page: its full story, and its rollback ---------------------------------
# Composed here because the trail reads audit versions and the rollback lives in
# rulesplatform (rules imports neither).


class ChangeRollbackForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), help_text="Why this change is undone.")
    force = forms.BooleanField(
        required=False,
        help_text="Workspace admins only: roll back even though the value moved since (that later move is undone too).",
    )


class ChangeWithTrailAdmin(RulesChangeAdmin):
    change_form_template = "admin/rules/change/change_form.html"

    def get_urls(self):
        rollback = path("<path:object_id>/rollback/", self.admin_site.admin_view(self.rollback_view),
                        name="rules_change_rollback")
        return [rollback, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        change = self.get_object(request, unquote(object_id))
        if change is not None:
            extra_context = {
                **(extra_context or {}),
                "trail": change_trail(change),
                "approvals": change.approvals.all(),
                "pushes": change.pushes.select_related("connector"),
                "may_roll_back": change.status == Change.Status.APPLIED
                and user_may(request.user, Perm.ROLLBACK, change.workspace_id),
                "rollback_form": ChangeRollbackForm(),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def rollback_view(self, request, object_id):
        change = self.get_object(request, unquote(object_id))
        if change is None:
            raise Http404("No such change in your workspaces.")
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        form = ChangeRollbackForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Say why this change is rolled back.")
        else:
            try:
                inverse = change_rollback(actor=Actor.for_user(request.user), change=change,
                                          reason=form.cleaned_data["reason"], force=form.cleaned_data["force"])
            except ApplicationError as error:
                messages.error(request, error.message)
            else:
                messages.success(request, f"Rolled back: change #{inverse.pk} restored {inverse.capped_value}.")
        return redirect("admin:rules_change_change", change.pk)


admin.site.unregister(Change)
admin.site.register(Change, ChangeWithTrailAdmin)
