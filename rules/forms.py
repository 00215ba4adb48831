"""Admin forms for rules and their triggers: the same checks as the services, shown on the fields."""

from django import forms
from django.utils.html import format_html_join

from campaigns.metrics import DERIVED_METRICS, MetricKind

from .models import Rule, Trigger
from .services import RULE_FIELDS
from .validation import rule_problems, trigger_errors, with_trigger_defaults


def metric_help_text() -> str:
    """The registry, described for people choosing a metric and a test."""
    def names(kind):
        return ", ".join(f"{m.label} ({m.name})" for m in DERIVED_METRICS.values() if m.kind == kind)

    return format_html_join(
        " ", "{}",
        [
            (f"Rates, a value between 0 and 1 (write 0.015 for 1.5%); tested with a two-proportion z-test and a "
             f"p-chart: {names(MetricKind.RATE)}.",),
            (f"Ratios; tested on their per-bucket values (Welch t-test, k-sigma limits): {names(MetricKind.RATIO)}.",),
        ],
    )


def _add_problems(form: forms.BaseForm, problems: dict[str, list[str]]) -> None:
    """Attach messages to their fields; those of fields the form does not show go on top."""
    for field, messages in problems.items():
        if field in form.errors:
            continue  # the field's own check already said what is wrong
        for message in messages:
            if field in form.fields:
                form.add_error(field, message)
            else:
                form.add_error(None, f"{field.replace('_', ' ').capitalize()}: {message}")


class RuleAdminForm(forms.ModelForm):
    class Meta:
        model = Rule
        fields = ["workspace", "campaigns", *RULE_FIELDS]

    def _post_clean(self):
        super()._post_clean()  # builds the instance from the form and runs the model's checks
        if getattr(self.instance, "workspace_id", None) is None:
            return  # no workspace chosen: the field's own error says so
        campaigns = list(self.cleaned_data.get("campaigns") or [])
        _add_problems(self, rule_problems(self.instance, campaigns, RULE_FIELDS))


class TriggerForm(forms.ModelForm):
    metric = forms.ChoiceField(
        choices=[(m.name, m.label) for m in DERIVED_METRICS.values()], help_text=metric_help_text(),
        error_messages={"invalid_choice": "Unknown metric “%(value)s”: choose one from the list."},
    )

    class Meta:
        model = Trigger
        fields = ["metric", "kind", "direction", "threshold", "window_minutes", "baseline_minutes", "confidence",
                  "k_sigma", "consecutive_windows", "min_sample"]


class TriggerFormSet(forms.BaseInlineFormSet):
    """Checks each trigger against the workspace of its rule (its metric bucket, mostly)."""

    def clean(self):
        super().clean()
        workspace = getattr(self.instance, "workspace", None) if self.instance.workspace_id else None
        kept = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        if workspace is None:
            return
        for form in kept:
            data = {k: v for k, v in form.cleaned_data.items() if k in TriggerForm.Meta.fields}
            _add_problems(form, trigger_errors(workspace, with_trigger_defaults(data)))

    def trigger_settings(self) -> list[dict]:
        """The kept triggers, in order, as the services take them."""
        kept = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        return [{k: f.cleaned_data[k] for k in TriggerForm.Meta.fields} for f in kept]
