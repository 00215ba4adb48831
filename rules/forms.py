"""Admin forms for rules and their triggers: the same checks as the services, shown on the fields."""

from django import forms

from campaigns.metrics import DERIVED_METRICS, MetricKind
from campaigns.models import Segment

from .explain import metric_name
from .models import Rule, Trigger
from .services import RULE_FIELDS
from .validation import rule_problems, trigger_errors, with_trigger_defaults


def metric_help_text() -> str:
    """How the two groups of the metric picker are written and tested (the picker names the metrics)."""
    return (
        "Rates are between 0 and 1 (write 0.015 for 1.5%) and are tested as proportions: a two-proportion "
        "z-test, a p-chart. Ratios (costs, ROAS, dwell time, pace) are tested on their per-bucket values: a "
        "Welch t-test, k-sigma limits."
    )


_KIND_GROUPS = {MetricKind.RATE: "Rates (between 0 and 1)", MetricKind.RATIO: "Ratios"}


def metric_choices_grouped() -> list[tuple[str, list[tuple[str, str]]]]:
    """The metric picker: rates and ratios apart (they take thresholds differently), acronyms spelled out."""
    return [(group, [(m.name, _picker_label(m)) for m in DERIVED_METRICS.values() if m.kind == kind])
            for kind, group in _KIND_GROUPS.items()]


def _picker_label(metric) -> str:
    short = metric_name(metric.name)
    return f"{short} — {metric.label}" if short.isupper() else metric.label


# Help shown under each field, in the terms a marketer uses; the model's own help is for developers.
RULE_HELP_TEXTS = {
    "campaigns": "Leave empty to watch every campaign of the workspace.",
    "channel": "Only segments of campaigns on this channel (empty: every channel).",
    "segment_filter": 'Only segments whose targeting matches, e.g. {"device": "mobile"} or '
                      '{"geo": ["FR", "BE"]}. Keys: ' + ", ".join(Segment.CRITERIA_KEYS) + ". Empty: every segment.",
    "match": "All triggers must hold for a segment, or any one of them.",
    "evaluation_interval_minutes": "How often the rule runs on schedule (it also runs when new data arrives).",
    "active_hours_start": "Dayparting: the hour (workspace time zone) the rule starts acting; empty = all day.",
    "active_hours_end": "The hour it stops acting; 22 to 6 runs overnight.",
    "action_value": "Change by %: e.g. -10 lowers by 10%. Set bid / budget: the new value. Reallocate: the % of "
                    "the firing segment's budget to move. Empty for pause, resume, rotate and alert.",
    "action_params": 'Reallocation only: {"rank_metric": "roas", "receiver_count": 2} picks who receives.',
    "max_step_pct": "The largest single change, in % of the current value.",
    "max_change_per_window_pct": "The largest net change to one target within the cap window, in %.",
    "cap_window_minutes": "The rolling window of the cap above (60 = per hour).",
    "cooldown_minutes": "After a change, leave the target alone this long.",
    "max_actions_per_day": "Changes this rule may make per day, all targets together.",
    "value_floor": "Never set a bid or budget below this (the segment's own floor applies too).",
    "value_ceiling": "Never set a bid or budget above this (the segment's own ceiling applies too).",
    "max_channel_share_pct": "Budget changes never give one channel more than this share of the campaign.",
}
TRIGGER_HELP_TEXTS = {
    "kind": "Threshold: the value crosses a fixed level. Relative change: it moves by at least the % given vs "
            "the baseline. Significant change: a statistical test says it moved. Control limit: it leaves "
            "the band the baseline predicts (k sigma).",
    "direction": "Which way the metric must move for the trigger to hold.",
    "threshold": "Threshold: the metric's value (a rate as 0.015 for 1.5%). Relative change: the move in % "
                 "(20 for 20%). Empty for significant change and control limit.",
    "window_minutes": "The current window the metric is measured over (a multiple of the metric bucket).",
    "baseline_minutes": "The period before the window that it is compared with (e.g. 10080 = 7 days).",
    "confidence": "Significant change: how sure the test must be (0.95 = 95%).",
    "k_sigma": "Control limit: the width of the band in standard deviations (3 ≈ 99.7%, 2.576 ≈ 99%).",
    "consecutive_windows": "The trigger must hold this many windows in a row (1 = the current window only).",
    "min_sample": "Below this many impressions / clicks / sessions (the metric's denominator), the segment is "
                  "'insufficient data' and nothing fires.",
}


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
        help_texts = RULE_HELP_TEXTS

    def _post_clean(self):
        super()._post_clean()  # builds the instance from the form and runs the model's checks
        if getattr(self.instance, "workspace_id", None) is None:
            return  # no workspace chosen: the field's own error says so
        campaigns = list(self.cleaned_data.get("campaigns") or [])
        _add_problems(self, rule_problems(self.instance, campaigns, RULE_FIELDS))


class TriggerForm(forms.ModelForm):
    metric = forms.ChoiceField(
        choices=metric_choices_grouped, help_text=metric_help_text(),
        error_messages={"invalid_choice": "Unknown metric “%(value)s”: choose one from the list."},
    )

    class Meta:
        model = Trigger
        fields = ["metric", "kind", "direction", "threshold", "window_minutes", "baseline_minutes", "confidence",
                  "k_sigma", "consecutive_windows", "min_sample"]
        help_texts = TRIGGER_HELP_TEXTS


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
