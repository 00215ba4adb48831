"""Admin for rules (with their triggers), evaluations and changes: scoped by role, writes through services.

A rule and its triggers are saved as one operation (`rule_create` / `rule_update`), so each
save is one version. The rule page offers a dry run ("Preview") and, to those who may,
activate / pause / archive. Evaluations and changes are records: read-only here.
"""

from collections import defaultdict

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.admin_scoping import (
    PartOfParentInline,
    ReadOnlyScopedAdmin,
    WorkspaceScopedAdmin,
    adopt_saved,
    register_workspace_lookup,
)
from accounts.exceptions import ApplicationError
from accounts.roles import Perm
from accounts.selectors import admin_workspace_ids
from audit.admin_history import VersionHistoryAdminMixin
from campaigns.models import Segment

from . import (
    governance_admin,  # noqa: F401  (registers the approval queue, policies, connectors...)
    services,
)
from .decisions import evaluation_segment_rows
from .engine import rule_preview
from .explain import rule_summary
from .forms import RuleAdminForm, TriggerForm, TriggerFormSet
from .governance_admin import push_state  # also registers the approval queue, policies, connectors...
from .models import Change, Evaluation, Rule, Trigger

for _label in ("rules.Rule", "rules.Evaluation", "rules.Change"):
    register_workspace_lookup(_label, "workspace")

_RELATED_ONLY = admin.RelatedOnlyFieldListFilter
_STATUS_SERVICES = {
    "activate": services.rule_activate,
    "pause": services.rule_pause,
    "archive": services.rule_archive,
}


class TriggerInline(PartOfParentInline, admin.StackedInline):
    model = Trigger
    form = TriggerForm
    formset = TriggerFormSet
    extra = 0
    min_num = 1
    fields = [("metric", "kind", "direction", "threshold"), ("window_minutes", "baseline_minutes",
                                                              "consecutive_windows", "min_sample"),
              ("confidence", "k_sigma")]


@admin.register(Rule)
class RuleAdmin(VersionHistoryAdminMixin, WorkspaceScopedAdmin):
    form = RuleAdminForm
    edit_perm = Perm.EDIT_RULES
    inlines = [TriggerInline]
    list_display = ["name", "summary", "workspace", "status", "version", "last_evaluated_at", "owner"]
    list_filter = ["status", "action", ("workspace", _RELATED_ONLY)]
    list_select_related = ["workspace", "owner"]
    search_fields = ["name", "description"]
    filter_horizontal = ["campaigns"]
    readonly_fields = ["status", "version", "owner", "last_evaluated_at", "created_at", "updated_at"]
    actions = ["activate_selected", "pause_selected", "archive_selected"]
    fieldsets = [
        (None, {"fields": ["workspace", "name", "description", "status", "version", "owner"]}),
        ("Scope", {"fields": ["campaigns", "channel", "segment_filter"]}),
        ("When", {"fields": ["match", "evaluation_interval_minutes", ("active_hours_start", "active_hours_end")]}),
        ("Action", {"fields": ["action", "action_value", "action_params"]}),
        ("Caps", {"fields": [("max_step_pct", "max_change_per_window_pct", "cap_window_minutes"),
                             ("cooldown_minutes", "max_actions_per_day"), ("value_floor", "value_ceiling"),
                             "max_channel_share_pct"]}),
        ("History", {"fields": ["last_evaluated_at", "created_at", "updated_at"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("triggers", "campaigns")  # for the summaries

    @admin.display(description="What it does")
    def summary(self, rule):
        return rule_summary(rule)

    def get_actions(self, request):
        # Status actions are offered only to those who may activate rules somewhere (the services refuse anyway).
        actions = super().get_actions(request)
        if not self._may(request, Perm.ACTIVATE_RULES):
            for name in ("activate_selected", "pause_selected", "archive_selected"):
                actions.pop(name, None)
        return actions

    def get_changeform_initial_data(self, request):
        # Most people write rules in one workspace: choose it for them.
        initial = super().get_changeform_initial_data(request)
        ids = admin_workspace_ids(request.user, self.edit_perm)
        if len(ids) == 1 and "workspace" not in initial:
            initial["workspace"] = next(iter(ids))
        return initial

    def get_readonly_fields(self, request, obj=None):
        fixed = ["workspace"] if obj is not None else []  # a rule never moves to another workspace
        return [*fixed, *super().get_readonly_fields(request, obj)]

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        if db_field.name == "campaigns" and not request.user.is_superuser:
            field.queryset = field.queryset.filter(workspace__in=admin_workspace_ids(request.user, self.edit_perm))
        return field

    # --- saving: the rule and its triggers, as one service call ---

    def save_model(self, request, obj, form, change):
        """Nothing yet: `save_related` saves the rule with its triggers in one service call."""

    def save_formset(self, request, form, formset, change):
        """Nothing: the triggers were saved with the rule."""

    def save_related(self, request, form, formsets, change):
        triggers = next(fs for fs in formsets if isinstance(fs, TriggerFormSet))
        if change and not form.has_changed() and not triggers.has_changed():
            return  # nothing edited: no new version
        fields = {name: form.cleaned_data[name] for name in services.RULE_FIELDS if name in form.cleaned_data}
        actor = self.actor(request)
        if change:
            rule = services.rule_update(actor=actor, rule=form.instance, triggers=triggers.trigger_settings(),
                                        campaigns=form.cleaned_data["campaigns"], **fields)
        else:
            rule = services.rule_create(actor=actor, workspace=form.cleaned_data["workspace"], owner=request.user,
                                        triggers=triggers.trigger_settings(),
                                        campaigns=form.cleaned_data["campaigns"], **fields)
        adopt_saved(form.instance, rule)

    def construct_change_message(self, request, form, formsets, add=False):
        # The triggers were saved by the service, not by their formset (which therefore lists no
        # new or changed objects); the audit event holds the full before / after.
        return super().construct_change_message(request, form, [], add)

    def delete_model(self, request, obj):
        raise PermissionDenied  # rules are archived, never deleted: their history stays explainable

    def has_delete_permission(self, request, obj=None):
        return False

    # --- status: activate / pause / archive ---

    def _change_statuses(self, request, queryset, verb: str):
        done = 0
        for rule in queryset:
            try:
                _STATUS_SERVICES[verb](actor=self.actor(request), rule=rule, reason="Admin action")
                done += 1
            except ApplicationError as error:
                self.message_user(request, f"{rule}: {error.message}", messages.ERROR)
            except ValidationError as error:
                self.message_user(request, f"{rule}: {' '.join(error.messages)}", messages.ERROR)
        if done:
            self.message_user(request, f"{done} rule(s): {verb} done.", messages.SUCCESS)

    @admin.action(description="Activate selected rules")
    def activate_selected(self, request, queryset):
        self._change_statuses(request, queryset, "activate")

    @admin.action(description="Pause selected rules")
    def pause_selected(self, request, queryset):
        self._change_statuses(request, queryset, "pause")

    @admin.action(description="Archive selected rules")
    def archive_selected(self, request, queryset):
        self._change_statuses(request, queryset, "archive")

    # --- extra pages: preview, status buttons ---

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:rule_id>/preview/", view(self.preview_view), name="rules_rule_preview"),
            path("<int:rule_id>/status/<str:verb>/", view(require_POST(self.status_view)), name="rules_rule_status"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        rule = self.get_object(request, object_id)
        if rule is not None:
            extra_context = {**(extra_context or {}), **self._rule_tools(request, rule)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _rule_tools(self, request, rule: Rule) -> dict:
        may_activate = self._may(request, Perm.ACTIVATE_RULES, rule)
        verbs = {Rule.Status.ACTIVE: ["pause", "archive"], Rule.Status.ARCHIVED: []}.get(
            rule.status, ["activate", "archive"]
        )
        return {
            "can_preview": self._may(request, Perm.PREVIEW_RULES, rule),
            "status_verbs": verbs if may_activate else [],
            "rule_summary": rule_summary(rule),
        }

    def preview_view(self, request, rule_id: int):
        rule = get_object_or_404(self.get_queryset(request), pk=rule_id)
        if not self._may(request, Perm.PREVIEW_RULES, rule):
            raise PermissionDenied
        result = rule_preview(actor=self.actor(request), rule=rule, now=timezone.now())
        by_segment, other_changes = defaultdict(list), []
        for planned in result.planned_changes:
            if isinstance(planned.target, Segment):
                by_segment[planned.target.pk].append(planned)
            else:
                other_changes.append(planned)  # creatives and campaigns: listed under the table
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "original": rule,
            "title": f"Preview (dry run): {rule}", "result": result, "other_changes": other_changes,
            "rule_summary": rule_summary(rule),
            "rows": [{"decision": d, "planned": by_segment.get(d["segment_id"], [])} for d in result.decisions],
        }
        return TemplateResponse(request, "admin/rules/rule/preview.html", context)

    def status_view(self, request, rule_id: int, verb: str):
        rule = get_object_or_404(self.get_queryset(request), pk=rule_id)
        if verb not in _STATUS_SERVICES:
            raise PermissionDenied
        self._change_statuses(request, Rule.objects.filter(pk=rule.pk), verb)
        return redirect(reverse("admin:rules_rule_change", args=[rule.pk]))


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyScopedAdmin):
    list_display = ["window_end", "rule", "rule_version", "outcome", "source", "summary"]
    list_filter = ["outcome", "source", ("rule", _RELATED_ONLY), ("workspace", _RELATED_ONLY)]
    list_select_related = ["rule"]
    date_hierarchy = "window_end"
    search_fields = ["rule__name", "summary"]
    fields = ["rule", "rule_version", "window_end", "source", "outcome", "summary", "created_at", "decisions"]
    readonly_fields = fields
    show_full_result_count = False

    @admin.display(description="Per segment")
    def decisions(self, evaluation):
        return render_to_string("admin/rules/_decisions.html", {
            "rows": [{"decision": d} for d in evaluation_segment_rows(evaluation)],
        })


@admin.register(Change)
class ChangeAdmin(ReadOnlyScopedAdmin):
    list_display = ["created_at", "target_display", "field", "old_value", "capped_value", "status", "kind", "rule",
                    "bound_by", push_state]
    list_filter = ["status", "kind", "field", ("rule", _RELATED_ONLY), ("workspace", _RELATED_ONLY)]
    list_select_related = ["rule", "segment__campaign", "creative__campaign", "campaign"]
    search_fields = ["reason", "idempotency_key", "segment__name", "creative__name", "campaign__name"]
    date_hierarchy = "created_at"
    readonly_fields = ["workspace", "kind", "rule", "rule_version", "evaluation", "campaign", "segment", "creative",
                       "field", "old_value", "requested_value", "capped_value", "cap_table", "status",
                       "approval_level", "batch_id", "idempotency_key", "requested_by", "reason", "error",
                       "created_at", "applied_at", push_state]
    fields = readonly_fields

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("pushes__connector")

    @admin.display(description="Target")
    def target_display(self, change):
        return change.target

    @admin.display(description="Bound by")
    def bound_by(self, change):
        return ", ".join(entry["cap"] for entry in change.cap_report if entry.get("bound")) or "—"

    @admin.display(description="Caps")
    def cap_table(self, change):
        return render_to_string("admin/rules/_cap_report.html", {"cap_report": change.cap_report})
