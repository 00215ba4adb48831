"""Roles and what each may do: the one place where permissions are decided.

Every API view, admin page and service asks `role_allows` (through `accounts.selectors`
or `accounts.permissions`); nothing else compares role names.
"""

from django.db import models


class Role(models.TextChoices):
    MARKETER = "marketer", "Marketer"
    APPROVER = "approver", "Approver"
    ADMIN = "admin", "Workspace admin"
    INTEGRATOR = "integrator", "Integrator"


class Perm(models.TextChoices):
    VIEW = "view", "See the workspace"
    USE_ADMIN = "use_admin", "Use the admin UI"
    EDIT_CAMPAIGNS = "edit_campaigns", "Create and edit campaigns, segments, creatives"
    PUSH_METRICS = "push_metrics", "Push metric facts"
    EDIT_RULES = "edit_rules", "Create and edit rules and experiments (as drafts)"
    PREVIEW_RULES = "preview_rules", "Dry-run rules"
    ACTIVATE_RULES = "activate_rules", "Activate, pause and archive rules"
    PROPOSE_CHANGES = "propose_changes", "Propose manual changes"
    DECIDE_CHANGES = "decide_changes", "Approve, reject and escalate changes"
    LAUNCH_EXPERIMENTS = "launch_experiments", "Approve and launch experiments"
    MANAGE_MEMBERS = "manage_members", "Manage memberships and API tokens"
    MANAGE_WORKSPACE = "manage_workspace", "Edit workspace settings, guardrails and policies"
    ROLLBACK = "rollback", "Roll back versions and changes"


_BASE = {Perm.VIEW}
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.MARKETER: frozenset(
        _BASE
        | {
            Perm.USE_ADMIN,
            Perm.EDIT_CAMPAIGNS,
            Perm.PUSH_METRICS,
            Perm.EDIT_RULES,
            Perm.PREVIEW_RULES,
            Perm.PROPOSE_CHANGES,
        }
    ),
    Role.APPROVER: frozenset(
        _BASE
        | {
            Perm.USE_ADMIN,
            Perm.PREVIEW_RULES,
            Perm.ACTIVATE_RULES,
            Perm.DECIDE_CHANGES,
            Perm.LAUNCH_EXPERIMENTS,
        }
    ),
    Role.ADMIN: frozenset(Perm.values),
    Role.INTEGRATOR: frozenset(_BASE | {Perm.PUSH_METRICS, Perm.PREVIEW_RULES}),
}
# What an integrator membership gains when a workspace admin grants it "may manage configuration".
INTEGRATOR_MANAGE_GRANT = frozenset({Perm.EDIT_CAMPAIGNS, Perm.EDIT_RULES})


def role_allows(role: str, perm: str, *, can_manage_config: bool = False) -> bool:
    if perm in ROLE_PERMISSIONS.get(role, frozenset()):
        return True
    return role == Role.INTEGRATOR and can_manage_config and perm in INTEGRATOR_MANAGE_GRANT
