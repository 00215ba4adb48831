"""Which models keep versions, what one version includes, and how an old version is restored.

`audit` imports no app of ours, so the project fills this registry once at start-up
(`rulesplatform.versioning.register_versioned_models`, from `RulesplatformConfig.ready`).
Storage is django-reversion's: a registered model gets `reversion.register(...)`, and the
children named in `follow` (a rule's triggers, an experiment's variants) are registered
too, so that they are saved inside their parent's version rather than as versions of their own.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import reversion
from django.db import models

from .exceptions import RestoreError

# restore(*, actor, instance, snapshot, reason) -> the restored instance. It must write
# through the domain service of the model, so validation, permissions and audit apply.
RestoreHandler = Callable[..., models.Model]


@dataclass(frozen=True)
class VersionedModel:
    model: type[models.Model]
    follow: tuple[str, ...] = ()
    restore: RestoreHandler | None = None
    # Operational fields (timestamps, freshness marks) are state, not configuration:
    # kept out of versions so that diffs show only what a person configured.
    exclude: tuple[str, ...] = field(default=())
    # How a child is recognised from one version to the next, per followed relation. A rule's
    # triggers are rewritten on each edit (new ids), so they match by position; default: id.
    child_keys: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.model._meta.label_lower

    def child_models(self) -> dict[str, type[models.Model]]:
        return {name: self.model._meta.get_field(name).related_model for name in self.follow}


_versioned: dict[str, VersionedModel] = {}


def register_versioned(
    model: type[models.Model],
    *,
    follow: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    restore: RestoreHandler | None = None,
    child_exclude: dict[str, tuple[str, ...]] | None = None,
    child_keys: dict[str, str] | None = None,
) -> VersionedModel:
    entry = VersionedModel(model=model, follow=follow, restore=restore, exclude=exclude, child_keys=child_keys or {})
    if entry.label in _versioned:
        return _versioned[entry.label]
    reversion.register(model, follow=follow, exclude=exclude)
    for name, child in entry.child_models().items():
        if not reversion.is_registered(child):
            reversion.register(child, exclude=(child_exclude or {}).get(name, ()))
    _versioned[entry.label] = entry
    return entry


def versioned_entry(model_or_label) -> VersionedModel | None:
    label = model_or_label if isinstance(model_or_label, str) else model_or_label._meta.label_lower
    return _versioned.get(label.lower())


def versioned_labels() -> list[str]:
    return sorted(_versioned)


def restore_handler(model: type[models.Model]) -> RestoreHandler:
    entry = versioned_entry(model)
    if entry is None or entry.restore is None:
        raise RestoreError(f"Versions of {model._meta.verbose_name} cannot be restored.", code="not_restorable")
    return entry.restore
