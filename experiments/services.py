"""Writes for experiments: create, edit, approve (launch), start, stop, analyse, deploy.

Every service checks the actor's role, validates (`experiments.validation`) and records an audit
event in the same transaction. An experiment's variants are written with it, as one unit, so a
version of the experiment (rulesplatform.versioning) holds its arms.

Four eyes: a launch is approved by someone who may launch experiments (Perm.LAUNCH_EXPERIMENTS)
and who did not create it; editing an approved experiment sends it back to draft, because an
approval is bound to what was approved.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.exceptions import Conflict, PermissionDenied
from accounts.models import Workspace
from accounts.roles import Perm
from accounts.services import actor_may, refuse_unknown_fields, require_perm, snapshot
from audit.actors import Actor
from audit.services import audit_record
from campaigns.holdouts import holdout_assign, holdout_release
from campaigns.models import Campaign, Creative, Segment

from .analysis import Analysis, Arm, Guardrail, Plan, analyse
from .changes import batch_changes, submit_changes
from .deploy import deployment_batch_id, deployment_record, deployment_state
from .models import Experiment, ExperimentResult, Variant
from .power import campaign_power_analysis, comparison_alpha
from .selectors import arm_bucket_counters, running_keys_in_campaign
from .validation import VARIANT_FIELDS, experiment_problems

Status = Experiment.Status

# What callers may set on an experiment; status, decisions and bookkeeping have their own services.
EXPERIMENT_FIELDS = (
    "name", "hypothesis", "kind", "primary_metric", "guardrails", "minimum_detectable_effect_pct", "alpha",
    "power", "method", "min_sample_per_arm", "auto_deploy", "bandit", "bandit_floor_pct",
)
EDITABLE_STATUSES = frozenset({Status.DRAFT, Status.APPROVED})


class CannotApproveOwnExperiment(PermissionDenied):
    pass


def experiment_snapshot(experiment: Experiment) -> dict:
    """The experiment with its arms, as plain data: what a version of it is."""
    data = snapshot(experiment, exclude=("created_at", "updated_at"))
    data["variants"] = [snapshot(v, exclude=("experiment", "id")) for v in experiment.variants.order_by("key")]
    return data


@transaction.atomic
def experiment_create(*, actor: Actor, workspace: Workspace, campaign: Campaign, variants: Sequence[Mapping],
                      **fields) -> Experiment:
    """A new experiment, always a draft; its creator cannot approve its launch."""
    require_perm(actor, Perm.EDIT_RULES, workspace.pk)
    refuse_unknown_fields(fields, EXPERIMENT_FIELDS)
    experiment = Experiment(workspace=workspace, campaign=campaign, created_by=actor.user, **fields)
    _validate(experiment, variants)
    experiment.save()
    _write_variants(experiment, variants)
    audit_record(actor=actor, action="experiment.create", subject=experiment, after=experiment_snapshot(experiment))
    return experiment


@transaction.atomic
def experiment_update(*, actor: Actor, experiment: Experiment, variants: Sequence[Mapping] | None = None,
                      reason: str = "", **fields) -> Experiment:
    """Edit a draft (or an approved experiment, which goes back to draft); `variants` replace the arms."""
    require_perm(actor, Perm.EDIT_RULES, experiment.workspace_id)
    refuse_unknown_fields(fields, EXPERIMENT_FIELDS)
    experiment = _locked(experiment)
    if experiment.status not in EDITABLE_STATUSES:
        raise Conflict(f"A {experiment.get_status_display().lower()} experiment cannot be edited.")
    before = experiment_snapshot(experiment)
    for name, value in fields.items():
        setattr(experiment, name, value)
    if variants is None:
        variants = [{name: getattr(v, name) for name in VARIANT_FIELDS} for v in experiment.variants.all()]
    _validate(experiment, variants)
    if experiment.status == Status.APPROVED:
        experiment.status, experiment.approved_by, experiment.approved_at = Status.DRAFT, None, None
    experiment.save()
    _write_variants(experiment, variants)
    audit_record(actor=actor, action="experiment.update", subject=experiment, before=before,
                 after=experiment_snapshot(experiment), reason=reason)
    return experiment


@transaction.atomic
def experiment_approve(*, actor: Actor, experiment: Experiment, reason: str = "",
                       now: datetime | None = None) -> Experiment:
    """Approve the launch: someone who may launch experiments, and not the experiment's creator."""
    require_perm(actor, Perm.LAUNCH_EXPERIMENTS, experiment.workspace_id)
    experiment = _locked(experiment)
    if actor.user_id is None:
        raise PermissionDenied("A launch is approved by a person.")
    if actor.user_id == experiment.created_by_id:
        raise CannotApproveOwnExperiment("You created this experiment: someone else must approve its launch.")
    _require_status(experiment, Status.DRAFT, "approved")
    now = now or timezone.now()
    plan = campaign_power_analysis(experiment, list(experiment.variants.all()), now=now)
    experiment.status, experiment.approved_by, experiment.approved_at = Status.APPROVED, actor.user, now
    experiment.save(update_fields=["status", "approved_by", "approved_at", "updated_at"])
    audit_record(actor=actor, action="experiment.approve", subject=experiment, before={"status": Status.DRAFT},
                 after={"status": experiment.status, "power_analysis": plan.as_dict()}, reason=reason)
    return experiment


@transaction.atomic
def experiment_start(*, actor: Actor, experiment: Experiment, reason: str = "",
                     now: datetime | None = None) -> Experiment:
    """Start an approved experiment: fix its planned sample, and hold out the holdout arm's segment."""
    _require_any_perm(actor, experiment, (Perm.EDIT_RULES, Perm.LAUNCH_EXPERIMENTS))
    experiment = _locked(experiment)
    _require_status(experiment, Status.APPROVED, "started")
    variants = list(experiment.variants.select_related("segment"))
    _check_ready_to_run(experiment, variants)
    now = now or timezone.now()
    plan = campaign_power_analysis(experiment, variants, now=now)
    if experiment.method == Experiment.Method.FIXED and plan.sample_per_arm is None:
        raise Conflict(f"A fixed-horizon experiment needs a planned sample: {plan.problem}")
    experiment.status, experiment.started_at = Status.RUNNING, now
    experiment.planned_sample_per_arm = plan.sample_per_arm
    experiment.save(update_fields=["status", "started_at", "planned_sample_per_arm", "updated_at"])
    if experiment.kind == Experiment.Kind.HOLDOUT:
        control = next(v for v in variants if v.is_control)
        holdout_assign(actor=actor, segments=[control.segment], holder=experiment.holder,
                       reason=f"Holdout of experiment “{experiment.name}”")
    audit_record(actor=actor, action="experiment.start", subject=experiment, before={"status": Status.APPROVED},
                 after={"status": experiment.status, "started_at": now, "power_analysis": plan.as_dict()},
                 reason=reason)
    return experiment


@transaction.atomic
def experiment_stop(*, actor: Actor, experiment: Experiment, reason: str = "",
                    now: datetime | None = None) -> Experiment:
    _require_any_perm(actor, experiment, (Perm.EDIT_RULES, Perm.LAUNCH_EXPERIMENTS))
    experiment = _locked(experiment)
    _require_status(experiment, Status.RUNNING, "stopped")
    _end(actor, experiment, Status.STOPPED, reason or "Stopped by hand.", now or timezone.now())
    return experiment


@transaction.atomic
def experiment_analyse(*, actor: Actor, experiment: Experiment,
                       now: datetime | None = None) -> ExperimentResult | None:
    """Analyse a running experiment, keep the result, and act on it: stop for harm, conclude, deploy.

    Runs under a lock on the experiment, so two workers never act on one decision twice.
    Returns None when the experiment is no longer running. Only the schedule (a worker) runs it:
    its consequences (stopping, deploying) were authorised when the experiment was approved.
    """
    if actor.kind not in ("worker", "system"):
        raise PermissionDenied("Experiments are analysed on the schedule, not by hand.")
    experiment = _locked(experiment)
    if experiment.status != Status.RUNNING:
        return None
    now = now or timezone.now()
    variants = list(experiment.variants.all())
    analysis = _analysis(experiment, variants, now)
    result = ExperimentResult.objects.create(
        workspace_id=experiment.workspace_id, experiment=experiment, computed_at=now, method=experiment.method,
        decision=analysis.outcome, summary=analysis.summary, srm_chi2=analysis.srm_chi2,
        srm_p_value=analysis.srm_p_value, srm_blocked=analysis.srm_blocked, variants=analysis.variants,
    )
    audit_record(actor=actor, action="experiment.analyse", subject=result, workspace_id=experiment.workspace_id,
                 after={"experiment": experiment.pk, "decision": analysis.outcome, "srm_p_value": analysis.srm_p_value})
    if analysis.stops:
        experiment.decision = analysis.outcome
        _end(actor, experiment, Status.STOPPED, analysis.summary, now)
    elif analysis.concludes:
        _conclude(actor, experiment, variants, analysis, now)
    return result


@transaction.atomic
def experiment_deploy(*, actor: Actor, experiment: Experiment, reason: str = "",
                      now: datetime | None = None) -> Experiment:
    """Submit a proposed deployment (auto-deploy off): the winner's changes, as one batch, through the
    approval policy; applied when it approves them, otherwise pending in the approvals queue."""
    require_perm(actor, Perm.DECIDE_CHANGES, experiment.workspace_id)
    experiment = _locked(experiment)
    if experiment.deployment != Experiment.Deployment.PENDING:
        raise Conflict("This experiment has no deployment waiting.")
    changes = batch_changes(deployment_batch_id(experiment))
    submit_changes(actor=actor, changes=changes, now=now or timezone.now())
    _set_deployment(actor, experiment, batch_changes(deployment_batch_id(experiment)), reason=reason)
    return experiment


@transaction.atomic
def variant_weights_set(*, actor: Actor, experiment: Experiment, weights: Mapping[str, object],
                        reason: str = "") -> Experiment:
    """Rewrite the arms' traffic shares (bandit mode), by arm key."""
    require_perm(actor, Perm.EDIT_RULES, experiment.workspace_id)
    variants = list(Variant.objects.select_for_update().filter(experiment=experiment))
    before = {v.key: str(v.weight) for v in variants}
    for variant in variants:
        variant.weight = weights[variant.key]
        variant.full_clean(exclude=["experiment", "creative", "segment"])
        variant.save(update_fields=["weight"])
    audit_record(actor=actor, action="experiment.reweight", subject=experiment, before={"weights": before},
                 after={"weights": {v.key: str(v.weight) for v in variants}}, reason=reason)
    return experiment


def variants_from_stored(experiment: Experiment, rows: Sequence[Mapping]) -> list[dict]:
    """Arm settings from stored rows (a saved version: `creative_id`, `segment_id`) with their objects."""
    wanted = {"creative": {r.get("creative_id") for r in rows} - {None},
              "segment": {r.get("segment_id") for r in rows} - {None}}
    found = {"creative": {c.pk: c for c in Creative.objects.filter(campaign_id=experiment.campaign_id,
                                                                   pk__in=wanted["creative"])},
             "segment": {s.pk: s for s in Segment.objects.filter(campaign_id=experiment.campaign_id,
                                                                 pk__in=wanted["segment"])}}
    missing = {name: sorted(ids - set(found[name])) for name, ids in wanted.items() if ids - set(found[name])}
    if missing:
        raise Conflict("Some arms link creatives or segments that no longer exist in the campaign.", extra=missing)
    return [{**{name: row[name] for name in ("key", "name", "is_control", "weight", "bid") if name in row},
             "creative": found["creative"].get(row.get("creative_id")),
             "segment": found["segment"].get(row.get("segment_id"))} for row in rows]


# --- helpers ---------------------------------------------------------------------------------


def analysis_plan(experiment: Experiment, variants: list[Variant]) -> Plan:
    return Plan(
        method=experiment.method, alpha=comparison_alpha(experiment, len(variants)),
        primary_metric=experiment.primary_metric,
        guardrails=tuple(Guardrail(g["metric"], float(g["max_harm_pct"]) / 100) for g in experiment.guardrails),
        min_exposure=experiment.min_sample_per_arm, planned_sample=experiment.planned_sample_per_arm,
        # A bandit moves its split on purpose: its arms' traffic cannot be checked against one split.
        check_srm=not experiment.bandit,
    )


def _analysis(experiment: Experiment, variants: list[Variant], now: datetime) -> Analysis:
    plan = analysis_plan(experiment, variants)
    frame = arm_bucket_counters(experiment=experiment, variants=variants, start=experiment.started_at, end=now,
                                counters=plan.counters)
    arms = [Arm(v.key, v.name, v.is_control, float(v.weight)) for v in variants]
    return analyse(plan, arms, frame)


def _conclude(actor: Actor, experiment: Experiment, variants: list[Variant], analysis: Analysis,
              now: datetime) -> None:
    experiment.decision = analysis.outcome
    experiment.winner = next((v for v in variants if v.key == analysis.winner_key), None)
    _end(actor, experiment, Status.CONCLUDED, analysis.summary, now)
    if experiment.winner is not None:
        changes = deployment_record(actor=actor, experiment=experiment, now=now)
        _set_deployment(actor, experiment, changes, reason=analysis.summary)


def _end(actor: Actor, experiment: Experiment, status: str, reason: str, now: datetime) -> None:
    before = {"status": experiment.status}
    experiment.status, experiment.ended_at, experiment.end_reason = status, now, reason
    experiment.save(update_fields=["status", "ended_at", "end_reason", "decision", "winner", "updated_at"])
    holdout_release(actor=actor, holder=experiment.holder, reason=reason)
    audit_record(actor=actor, action=f"experiment.{'stop' if status == Status.STOPPED else 'conclude'}",
                 subject=experiment, before=before, reason=reason,
                 after={"status": status, "decision": experiment.decision, "winner": experiment.winner_id})


def _set_deployment(actor: Actor, experiment: Experiment, changes, *, reason: str) -> None:
    before = experiment.deployment
    experiment.deployment = deployment_state(changes)
    experiment.save(update_fields=["deployment", "updated_at"])
    audit_record(actor=actor, action="experiment.deploy", subject=experiment, before={"deployment": before},
                 after={"deployment": experiment.deployment, "changes": [c.pk for c in changes],
                        "statuses": {c.pk: c.status for c in changes}}, reason=reason)


def _check_ready_to_run(experiment: Experiment, variants: list[Variant]) -> None:
    taken = running_keys_in_campaign(campaign_id=experiment.campaign_id, exclude_experiment_id=experiment.pk)
    clashing = sorted(taken & {v.key for v in variants})
    if clashing:
        raise Conflict(f"Another running experiment of this campaign uses the arm keys {', '.join(clashing)}: "
                       f"their metric facts could not be told apart.", extra={"keys": clashing})
    if experiment.kind == Experiment.Kind.BID:
        off = [v.key for v in variants if v.segment.bid != v.bid]
        if off:
            raise Conflict(f"The segments of arms {', '.join(off)} do not bid what the arms state: set their bids "
                           f"first, so the results measure the stated bids.", extra={"keys": off})


def _locked(experiment: Experiment) -> Experiment:
    return Experiment.objects.select_for_update().select_related("workspace", "campaign").get(pk=experiment.pk)


def _require_status(experiment: Experiment, status: str, verb: str) -> None:
    if experiment.status != status:
        raise Conflict(f"A {experiment.get_status_display().lower()} experiment cannot be {verb}.",
                       extra={"status": experiment.status})


def _require_any_perm(actor: Actor, experiment: Experiment, perms: Sequence[str]) -> None:
    if not any(actor_may(actor, perm, experiment.workspace_id) for perm in perms):
        raise PermissionDenied("You are not allowed to run experiments in this workspace.")


def _validate(experiment: Experiment, variants: Sequence[Mapping]) -> None:
    errors = experiment_problems(experiment, variants)
    if errors:
        raise ValidationError(errors)


def _write_variants(experiment: Experiment, variants: Sequence[Mapping]) -> None:
    """Replace the arms, matched by key: a kept key keeps its row (and the results that name it)."""
    wanted = {v["key"]: v for v in variants}
    experiment.variants.exclude(key__in=list(wanted)).delete()
    # Clear the control flag first, so that moving it between arms never meets the one-control constraint.
    experiment.variants.update(is_control=False)
    for key, data in wanted.items():
        fields = {name: data[name] for name in VARIANT_FIELDS if name in data and name != "key"}
        Variant.objects.update_or_create(experiment=experiment, key=key, defaults=fields)
