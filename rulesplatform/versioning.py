"""Which of our models keep versions (django-reversion), and how each restores an old one.

Called once from `RulesplatformConfig.ready()`: `audit` imports no app of ours, so the
project tells it here what to version. Every write path (admin, API, worker, management
command, shell) goes through a service that calls `audit.services.audit_record`, and that
saves a version of a registered subject, so registering a model here is all it takes.

A restore writes through the model's own service: the service's permission check,
validation and audit event apply, plus `Perm.ROLLBACK` in the object's workspace.

Experiments are versioned with their variants saved inside the experiment's version;
`_restore_experiment` calls the experiments service that rewrites an experiment with its
variants (as `_restore_rule` does for a rule with its triggers).
"""

from collections.abc import Callable

from django.db import models

from accounts.exceptions import ApplicationError
from accounts.models import Membership, Workspace
from accounts.roles import Perm
from accounts.services import membership_update, require_perm, workspace_update
from audit.actors import Actor
from audit.exceptions import RestoreError
from audit.registry import register_versioned
from audit.selectors import object_history, version_children, version_fields
from campaigns import services as campaign_services
from campaigns.models import Campaign, Creative, Segment
from experiments import services as experiment_services
from experiments.models import Experiment
from rules import policy as rule_policy
from rules import services as rule_services
from rules.models import ApprovalPolicy, Change, Evaluation, Rule

# Bookkeeping that changes without anyone configuring anything stays out of versions.
_TIMESTAMPS = ("created_at", "updated_at")
_CAMPAIGN_STATE = ("metrics_received_at", "metrics_latest_bucket", "data_quality_flag")
# An experiment's life cycle and outcome are state, not configuration.
_EXPERIMENT_STATE = ("status", "created_by", "approved_by", "approved_at", "started_at", "ended_at", "end_reason",
                     "planned_sample_per_arm", "decision", "winner", "deployment")


def register_versioned_models() -> None:
    register_versioned(Workspace, exclude=("created_at",),
                       restore=_restorer(_by_service(workspace_update, "workspace")))
    register_versioned(Membership, exclude=("created_at",),
                       restore=_restorer(_by_service(membership_update, "membership")))
    register_versioned(Campaign, exclude=_TIMESTAMPS + _CAMPAIGN_STATE,
                       restore=_restorer(_by_service(campaign_services.campaign_update, "campaign")))
    register_versioned(Segment, exclude=_TIMESTAMPS,
                       restore=_restorer(_by_service(campaign_services.segment_update, "segment")))
    register_versioned(Creative, exclude=_TIMESTAMPS,
                       restore=_restorer(_by_service(campaign_services.creative_update, "creative")))
    register_versioned(
        Rule, follow=("triggers",), exclude=("last_evaluated_at",) + _TIMESTAMPS,
        child_keys={"triggers": "position"}, restore=_restorer(_restore_rule),
    )
    register_versioned(ApprovalPolicy, exclude=_TIMESTAMPS,
                       restore=_restorer(_by_service(rule_policy.approval_policy_update, "policy")))
    register_versioned(
        Experiment, follow=("variants",), exclude=_EXPERIMENT_STATE + _TIMESTAMPS, child_keys={"variants": "key"},
        restore=_restorer(_restore_experiment),
    )


def _workspace_id(instance: models.Model) -> int:
    return instance.pk if isinstance(instance, Workspace) else instance.workspace_id


def _restorer(restore: Callable[..., models.Model]) -> Callable[..., models.Model]:
    """Adds the rollback right, and speaks audit's error type so the admin and API can show it."""

    def handler(*, actor: Actor, instance, version, reason: str):
        try:
            require_perm(actor, Perm.ROLLBACK, _workspace_id(instance))
            return restore(actor=actor, instance=instance, version=version, reason=reason)
        except ApplicationError as exc:
            raise RestoreError(exc.message, code=_error_code(exc), status=exc.status, extra=exc.extra) from exc

    return handler


def _error_code(exc: ApplicationError) -> str:
    return {403: "permission_denied", 404: "not_found", 409: "conflict"}.get(exc.status, "application_error")


def _editable_values(model: type[models.Model], version) -> dict:
    """The version's values of the fields a person edits: no id, parent link or bookkeeping."""
    stored = version_fields(version)
    return {
        field.name: stored[field.attname]
        for field in model._meta.concrete_fields
        if field.editable and not field.primary_key and not field.is_relation and field.attname in stored
    }


def _by_service(update_service: Callable[..., models.Model], instance_kwarg: str):
    def restore(*, actor: Actor, instance, version, reason: str):
        fields = _editable_values(type(instance), version)
        return update_service(actor=actor, reason=reason, **{instance_kwarg: instance}, **fields)

    return restore


def _restore_rule(*, actor: Actor, instance: Rule, version, reason: str) -> Rule:
    """The rule's settings, scope and triggers as they were, as the rule's next version number.

    Status is lifecycle, not configuration: it is kept. Restoring into an active rule edits a
    live rule, which `rule_update` allows only to people who may activate rules; and a live
    rule must keep at least one trigger, as when it was activated.
    """
    stored = version_fields(version)
    fields = {name: stored[name] for name in rule_services.RULE_FIELDS if name in stored}
    triggers = [t for _, t in sorted(version_children(version)["triggers"].items(), key=lambda kv: int(kv[0]))]
    campaigns = _campaigns_still_there(instance, stored.get("campaigns", []))
    rule = rule_services.rule_update(
        actor=actor, rule=instance, reason=reason, campaigns=campaigns,
        triggers=[{name: t[name] for name in rule_services.TRIGGER_FIELDS if name in t} for t in triggers],
        **fields,
    )
    if rule.status == Rule.Status.ACTIVE and not triggers:
        raise RestoreError("An active rule needs at least one trigger: this version has none.", code="invalid")
    return rule


def _restore_experiment(*, actor: Actor, instance: Experiment, version, reason: str) -> Experiment:
    """The experiment's settings and arms as they were. Only drafts and approved experiments are
    edited (a running one is stopped first), and an approved one goes back to draft for a new approval."""
    stored = version_fields(version)
    fields = {name: stored[name] for name in experiment_services.EXPERIMENT_FIELDS if name in stored}
    rows = [row for _, row in sorted(version_children(version)["variants"].items())]
    return experiment_services.experiment_update(
        actor=actor, experiment=instance, reason=reason,
        variants=experiment_services.variants_from_stored(instance, rows), **fields,
    )


def _campaigns_still_there(rule: Rule, campaign_ids: list) -> list[Campaign]:
    campaigns = list(Campaign.objects.filter(workspace_id=rule.workspace_id, pk__in=campaign_ids))
    missing = sorted({int(pk) for pk in campaign_ids} - {c.pk for c in campaigns})
    if missing:
        raise RestoreError(
            f"This version targets campaigns that no longer exist (ids {', '.join(map(str, missing))}).",
            code="conflict", status=409,
        )
    return campaigns


def rule_version_used(record: Evaluation | Change):
    """The saved version of the rule (with its triggers) that an evaluation or a change ran with.

    `rule_version` is the rule's edit number; status changes save versions under the same
    number, so the newest version with that number recorded before the record is the one.
    """
    if record.rule_id is None or record.rule_version is None:
        return None
    recorded_before = object_history(Rule, record.rule_id, workspace_ids=None).filter(
        revision__date_created__lte=record.created_at
    )
    return next((v for v in recorded_before if version_fields(v).get("version") == record.rule_version),
                None)
