"""Writes for campaigns, segments and creatives. Each checks the actor's role, validates, audits.

Metric facts are written by `campaigns.ingestion`, never here.
"""

from django.core.exceptions import ValidationError
from django.db import models, transaction

from accounts.models import Workspace
from accounts.roles import Perm
from accounts.services import require_perm, snapshot
from audit.actors import Actor
from audit.services import audit_record

from .models import Campaign, Creative, Segment

# Fields a service never takes from a caller. Moving an object to another parent would carry
# its history into another scope; freshness and the data-quality flag belong to ingestion.
_CAMPAIGN_FIXED = frozenset({"workspace", "metrics_received_at", "metrics_latest_bucket", "data_quality_flag"})
_CHILD_FIXED = frozenset({"campaign"})


def _refuse_fixed_fields(fields: dict, fixed: frozenset[str], model: type[models.Model]) -> None:
    unknown = set(fields) - {f.name for f in model._meta.concrete_fields}
    if unknown:
        raise TypeError(f"{model.__name__} has no field(s) {', '.join(sorted(unknown))}")
    refused = sorted(set(fields) & fixed)
    if refused:
        noun = model._meta.verbose_name
        raise ValidationError({name: f"The {noun}'s {name} cannot be changed here." for name in refused})


def _validate_and_save(instance: models.Model) -> None:
    instance.full_clean()  # field validators and the model's constraints, as readable errors
    instance.save()
    # Re-read, so the audit "after" holds what the database stores ("2.0000", not the "2" sent).
    instance.refresh_from_db()


def _create(*, actor: Actor, instance: models.Model, workspace_id: int) -> models.Model:
    require_perm(actor, Perm.EDIT_CAMPAIGNS, workspace_id)
    _validate_and_save(instance)
    audit_record(actor=actor, action=f"{instance._meta.model_name}.create", subject=instance,
                 after=snapshot(instance), workspace_id=workspace_id)
    return instance


def _update(*, actor: Actor, instance: models.Model, workspace_id: int, fields: dict, reason: str):
    require_perm(actor, Perm.EDIT_CAMPAIGNS, workspace_id)
    # Lock and re-read: the audit "before" must be what the database held, not a stale copy.
    instance = type(instance).objects.select_for_update().get(pk=instance.pk)
    before = snapshot(instance)
    for name, value in fields.items():
        setattr(instance, name, value)
    _validate_and_save(instance)
    audit_record(actor=actor, action=f"{instance._meta.model_name}.update", subject=instance,
                 before=before, after=snapshot(instance), reason=reason, workspace_id=workspace_id)
    return instance


def _delete(*, actor: Actor, instance: models.Model, workspace_id: int, reason: str) -> None:
    require_perm(actor, Perm.EDIT_CAMPAIGNS, workspace_id)
    audit_record(actor=actor, action=f"{instance._meta.model_name}.delete", subject=instance,
                 before=snapshot(instance), reason=reason, workspace_id=workspace_id)
    instance.delete()


@transaction.atomic
def campaign_create(*, actor: Actor, workspace: Workspace, **fields) -> Campaign:
    _refuse_fixed_fields(fields, _CAMPAIGN_FIXED, Campaign)
    return _create(actor=actor, instance=Campaign(workspace=workspace, **fields), workspace_id=workspace.pk)


@transaction.atomic
def campaign_update(*, actor: Actor, campaign: Campaign, reason: str = "", **fields) -> Campaign:
    _refuse_fixed_fields(fields, _CAMPAIGN_FIXED, Campaign)
    return _update(actor=actor, instance=campaign, workspace_id=campaign.workspace_id, fields=fields, reason=reason)


@transaction.atomic
def campaign_delete(*, actor: Actor, campaign: Campaign, reason: str = "") -> None:
    """Deletes the campaign with its segments, creatives and metric facts."""
    _delete(actor=actor, instance=campaign, workspace_id=campaign.workspace_id, reason=reason)


@transaction.atomic
def segment_create(*, actor: Actor, campaign: Campaign, **fields) -> Segment:
    _refuse_fixed_fields(fields, _CHILD_FIXED, Segment)
    return _create(actor=actor, instance=Segment(campaign=campaign, **fields), workspace_id=campaign.workspace_id)


@transaction.atomic
def segment_update(*, actor: Actor, segment: Segment, reason: str = "", **fields) -> Segment:
    _refuse_fixed_fields(fields, _CHILD_FIXED, Segment)
    return _update(actor=actor, instance=segment, workspace_id=segment.workspace_id, fields=fields, reason=reason)


@transaction.atomic
def segment_delete(*, actor: Actor, segment: Segment, reason: str = "") -> None:
    _delete(actor=actor, instance=segment, workspace_id=segment.workspace_id, reason=reason)


@transaction.atomic
def creative_create(*, actor: Actor, campaign: Campaign, **fields) -> Creative:
    _refuse_fixed_fields(fields, _CHILD_FIXED, Creative)
    return _create(actor=actor, instance=Creative(campaign=campaign, **fields), workspace_id=campaign.workspace_id)


@transaction.atomic
def creative_update(*, actor: Actor, creative: Creative, reason: str = "", **fields) -> Creative:
    _refuse_fixed_fields(fields, _CHILD_FIXED, Creative)
    return _update(actor=actor, instance=creative, workspace_id=creative.workspace_id, fields=fields, reason=reason)


@transaction.atomic
def creative_delete(*, actor: Actor, creative: Creative, reason: str = "") -> None:
    _delete(actor=actor, instance=creative, workspace_id=creative.workspace_id, reason=reason)
