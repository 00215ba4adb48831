"""Admin for audit events: read-only, and scoped to the person's workspaces.

Registered here rather than in `audit/admin.py` because scoping asks `accounts` for the
person's workspaces, and `audit` imports no app of ours.
"""

from django.contrib import admin
from django.utils.html import format_html_join

from accounts.roles import Perm
from accounts.selectors import admin_workspace_ids, may_use_admin
from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
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

    # Append-only: nobody adds, changes or deletes an event here, not even a superuser.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

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
