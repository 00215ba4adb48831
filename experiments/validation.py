"""What makes an experiment valid: metrics from the registry, arms that fit its kind, a campaign of its workspace.

`experiment_problems` returns every problem at once, keyed by field (`variants[1].segment` for
an arm), so the API and the admin can show them all; the services raise them as one
ValidationError.
"""

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug

from campaigns.metrics import DERIVED_METRICS, VIRTUAL_DENOMINATORS, MetricKind

from .models import Experiment

Kind = Experiment.Kind
# What each arm must link, per kind: the thing that differs between the arms.
_ARM_LINK = {Kind.CREATIVE: "creative", Kind.BID: "segment", Kind.AUDIENCE: "segment", Kind.HOLDOUT: "segment"}
VARIANT_FIELDS = ("key", "name", "is_control", "weight", "creative", "segment", "bid")


def experiment_problems(experiment: Experiment, variants: Sequence[Mapping]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    try:
        experiment.full_clean(exclude=["created_by", "approved_by", "winner"])
    except ValidationError as error:
        errors.update(error.message_dict)
    if experiment.campaign.workspace_id != experiment.workspace_id:
        errors.setdefault("campaign", []).append("The campaign belongs to another workspace.")
    _check_metric(errors, "primary_metric", experiment.primary_metric)
    _check_guardrails(errors, experiment.guardrails)
    _check_bandit(errors, experiment)
    _check_variants(errors, experiment, variants)
    return errors


def _check_metric(errors: dict, field: str, name) -> None:
    metric = DERIVED_METRICS.get(name)
    if metric is None:
        errors.setdefault(field, []).append(f"Unknown metric “{name}”. Known: {', '.join(sorted(DERIVED_METRICS))}.")
    elif {metric.numerator, metric.denominator} & VIRTUAL_DENOMINATORS:
        errors.setdefault(field, []).append(f"{metric.label} is not a counted metric; an experiment cannot test it.")


def _check_guardrails(errors: dict, guardrails) -> None:
    if not isinstance(guardrails, list):
        errors.setdefault("guardrails", []).append('A list of {"metric": ..., "max_harm_pct": ...}.')
        return
    for index, guardrail in enumerate(guardrails):
        field = f"guardrails[{index}]"
        if not isinstance(guardrail, dict) or set(guardrail) != {"metric", "max_harm_pct"}:
            errors.setdefault(field, []).append('Exactly the keys "metric" and "max_harm_pct".')
            continue
        _check_metric(errors, f"{field}.metric", guardrail["metric"])
        harm = _decimal(guardrail["max_harm_pct"])
        if harm is None or not Decimal(0) <= harm <= Decimal(100):
            errors.setdefault(f"{field}.max_harm_pct", []).append("A percentage between 0 and 100.")


def _check_bandit(errors: dict, experiment: Experiment) -> None:
    if not experiment.bandit:
        return
    metric = DERIVED_METRICS.get(experiment.primary_metric)
    if metric is not None and metric.kind != MetricKind.RATE:
        errors.setdefault("bandit", []).append("Bandit mode needs a rate as primary metric (successes / trials).")
    if experiment.kind in (Kind.CREATIVE, Kind.HOLDOUT):
        errors.setdefault("bandit", []).append(
            "Bandit mode moves budget between the arms' segments: use it with bid or audience experiments."
        )


def _check_variants(errors: dict, experiment: Experiment, variants: Sequence[Mapping]) -> None:
    if len(variants) < 2:
        errors.setdefault("variants", []).append("An experiment needs a control and at least one variant.")
    if sum(1 for v in variants if v.get("is_control")) != 1:
        errors.setdefault("variants", []).append("Exactly one arm is the control.")
    keys = [v.get("key") for v in variants]
    if len(set(keys)) != len(keys):
        errors.setdefault("variants", []).append("Arm keys must differ.")
    link = _ARM_LINK.get(experiment.kind)
    linked = [v.get(link) for v in variants if v.get(link) is not None] if link else []
    if len(set(linked)) != len(linked):
        errors.setdefault("variants", []).append(f"Each arm needs its own {link}.")
    for index, variant in enumerate(variants):
        for field, message in _variant_problems(experiment, variant, link):
            errors.setdefault(f"variants[{index}].{field}", []).append(message)


def _variant_problems(experiment: Experiment, variant: Mapping, link: str | None):
    unknown = sorted(set(variant) - set(VARIANT_FIELDS))
    for name in unknown:
        yield name, "Unknown field."
    try:
        validate_slug(variant.get("key") or "")
    except ValidationError:
        yield "key", "Letters, digits, hyphens and underscores."
    if not variant.get("name"):
        yield "name", "This field is required."
    weight = _decimal(variant.get("weight", 1))
    if weight is None or weight <= 0:
        yield "weight", "A positive share."
    for name in ("creative", "segment"):
        linked = variant.get(name)
        if linked is not None and linked.campaign_id != experiment.campaign_id:
            yield name, f"This {name} belongs to another campaign."
    if link and variant.get(link) is None:
        yield link, f"A {experiment.get_kind_display().lower()} experiment links a {link} to every arm."
    if experiment.kind == Kind.BID and variant.get("bid") is None:
        yield "bid", "A bid experiment states the bid of every arm."


def _decimal(value) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
