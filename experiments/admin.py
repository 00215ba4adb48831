"""Admin for experiments (with their arms): scoped by role, writes through services.

An experiment and its arms are saved as one operation (`experiment_create` / `experiment_update`),
so each save is one version; the arms' formset checks the whole experiment with the services'
own rules before anything is saved. The page shows the power analysis before launch and offers,
to those who may: approve (launch), start, stop, deploy a proposed winner, and the results page
(charts and every number of every run).
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from accounts.admin_scoping import (
    PartOfParentInline,
    WorkspaceScopedAdmin,
    adopt_saved,
    register_workspace_lookup,
)
from accounts.exceptions import ApplicationError
from accounts.roles import Perm
from audit.admin_history import VersionHistoryAdminMixin

from . import services
from .charts import effects_chart, lift_chart
from .models import Experiment, Variant
from .power import campaign_power_analysis
from .selectors import experiment_results
from .validation import VARIANT_FIELDS, experiment_problems

register_workspace_lookup("experiments.Experiment", "workspace")
Status = Experiment.Status

# Buttons on the experiment page: (verb, label, service, right, the status it applies to).
_TOOLS = {
    "approve": ("Approve launch", services.experiment_approve, Perm.LAUNCH_EXPERIMENTS, Status.DRAFT),
    "start": ("Start", services.experiment_start, (Perm.EDIT_RULES, Perm.LAUNCH_EXPERIMENTS), Status.APPROVED),
    "stop": ("Stop", services.experiment_stop, (Perm.EDIT_RULES, Perm.LAUNCH_EXPERIMENTS), Status.RUNNING),
    "deploy": ("Deploy the winner", services.experiment_deploy, Perm.DECIDE_CHANGES, Status.CONCLUDED),
}


class VariantFormSet(forms.BaseInlineFormSet):
    def clean(self):
        """The experiment with these arms, checked by the services' rules, so errors show on this page."""
        super().clean()
        if any(self.errors) or self.instance.workspace_id is None or self.instance.campaign_id is None:
            return  # the experiment's own form shows what is missing
        problems = experiment_problems(self.instance, self.arm_settings())
        if problems:
            raise ValidationError([f"{field}: {' '.join(messages_)}" for field, messages_ in problems.items()])

    def arm_settings(self) -> list[dict]:
        return [{name: form.cleaned_data.get(name) for name in VARIANT_FIELDS}
                for form in self.forms if form.cleaned_data and not form.cleaned_data.get("DELETE")]


class VariantInline(PartOfParentInline, admin.TabularInline):
    model = Variant
    formset = VariantFormSet
    extra = 0
    min_num = 2
    fields = list(VARIANT_FIELDS)
    # Searched as the person types, among the creatives and segments of their own workspaces (the
    # campaigns admin's scoped querysets); the form accepts only those of workspaces they edit in.
    autocomplete_fields = ["creative", "segment"]


@admin.register(Experiment)
class ExperimentAdmin(VersionHistoryAdminMixin, WorkspaceScopedAdmin):
    edit_perm = Perm.EDIT_RULES
    inlines = [VariantInline]
    list_display = ["name", "workspace", "campaign", "kind", "method", "status", "decision", "deployment",
                    "started_at"]
    list_filter = ["status", "kind", "method", ("workspace", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["workspace", "campaign"]
    search_fields = ["name", "hypothesis"]
    raw_id_fields = ["campaign"]
    _STATE = ["status", "created_by", "approved_by", "approved_at", "started_at", "ended_at", "end_reason",
              "planned_sample_per_arm", "decision", "winner", "deployment"]
    readonly_fields = [*_STATE, "power_analysis"]
    fieldsets = [
        (None, {"fields": ["workspace", "campaign", "name", "hypothesis", "kind"]}),
        ("Measure", {"fields": ["primary_metric", "guardrails", "minimum_detectable_effect_pct", "alpha", "power",
                                "method", "min_sample_per_arm", "power_analysis"]}),
        ("Allocation and deployment", {"fields": ["auto_deploy", "bandit", "bandit_floor_pct"]}),
        ("State", {"fields": _STATE}),
    ]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status not in services.EDITABLE_STATUSES:
            # Running or ended: a record now, edited only through its buttons.
            return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]
        fixed = ["workspace", "campaign"] if obj is not None else []
        return [*fixed, *super().get_readonly_fields(request, obj)]

    def has_delete_permission(self, request, obj=None):
        return False  # experiments are stopped, never deleted: their results stay explainable

    @admin.display(description="Power analysis (last 7 days of the campaign)")
    def power_analysis(self, experiment):
        if experiment.pk is None:
            return "Shown once the experiment is saved."
        plan = campaign_power_analysis(experiment, list(experiment.variants.all()), now=timezone.now())
        return render_to_string("admin/experiments/_power_analysis.html", {"plan": plan, "experiment": experiment})

    # --- saving: the experiment and its arms, as one service call ---

    def save_model(self, request, obj, form, change):
        """Nothing yet: `save_related` saves the experiment with its arms in one service call."""

    def save_formset(self, request, form, formset, change):
        """Nothing: the arms were saved with the experiment."""

    def save_related(self, request, form, formsets, change):
        arms = next(fs for fs in formsets if isinstance(fs, VariantFormSet))
        if change and not form.has_changed() and not arms.has_changed():
            return  # nothing edited: no new version
        fields = {name: form.cleaned_data[name] for name in services.EXPERIMENT_FIELDS if name in form.cleaned_data}
        actor = self.actor(request)
        if change:
            experiment = services.experiment_update(actor=actor, experiment=form.instance,
                                                    variants=arms.arm_settings(), **fields)
        else:
            experiment = services.experiment_create(actor=actor, workspace=form.cleaned_data["workspace"],
                                                    campaign=form.cleaned_data["campaign"],
                                                    variants=arms.arm_settings(), **fields)
        adopt_saved(form.instance, experiment)

    def construct_change_message(self, request, form, formsets, add=False):
        # The arms were saved by the service; the audit event holds the full before / after.
        return super().construct_change_message(request, form, [], add)

    # --- buttons and the results page ---

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:experiment_id>/results/", view(self.results_view), name="experiments_experiment_results"),
            path("<int:experiment_id>/do/<str:verb>/", view(require_POST(self.tool_view)),
                 name="experiments_experiment_tool"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        experiment = self.get_object(request, object_id)
        if experiment is not None:
            extra_context = {**(extra_context or {}), "tools": self._tools(request, experiment)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _tools(self, request, experiment: Experiment) -> list[tuple[str, str]]:
        tools = []
        for verb, (label, _service, perms, status) in _TOOLS.items():
            if experiment.status != status or not self._may_any(request, perms, experiment):
                continue
            if verb == "deploy" and experiment.deployment != Experiment.Deployment.PENDING:
                continue
            tools.append((verb, label))
        return tools

    def _may_any(self, request, perms, experiment) -> bool:
        perms = perms if isinstance(perms, tuple) else (perms,)
        return any(self._may(request, perm, experiment) for perm in perms)

    def tool_view(self, request, experiment_id: int, verb: str):
        experiment = get_object_or_404(self.get_queryset(request), pk=experiment_id)
        if verb not in _TOOLS:
            raise PermissionDenied
        label, service, _perms, _status = _TOOLS[verb]
        try:
            service(actor=self.actor(request), experiment=experiment, reason=f"Admin: {label.lower()}")
            self.message_user(request, f"{experiment}: {label.lower()} done.", messages.SUCCESS)
        except ApplicationError as error:
            self.message_user(request, f"{experiment}: {error.message}", messages.ERROR)
        return redirect(reverse("admin:experiments_experiment_change", args=[experiment.pk]))

    def results_view(self, request, experiment_id: int):
        experiment = get_object_or_404(self.get_queryset(request).select_related("winner"), pk=experiment_id)
        history = list(experiment_results(experiment))
        latest = history[-1] if history else None
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "original": experiment,
            "title": f"Results: {experiment}", "latest": latest, "history": history[::-1],
            # Our own SVG: matplotlib writes labels as escaped XML text.
            "effects_chart": mark_safe(effects_chart(experiment, latest)),  # noqa: S308
            "lift_chart": mark_safe(lift_chart(experiment, history)),  # noqa: S308
        }
        return TemplateResponse(request, "admin/experiments/experiment/results.html", context)
