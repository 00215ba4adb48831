"""`manage.py load_demo`: the "Demo Retail" workspace with people, campaigns, history and rules.

Idempotent: every object is looked up by its natural key and created only when missing, so
running it again changes nothing but the metric history, which it extends up to now.
Everything is written through the services with the `system:demo` actor, so it is audited.

The workspace uses 15-minute buckets: a rule's window is a whole number of buckets, so
the bucket bounds how fast a rule can see a change. With 15 minutes the demo rules react
within minutes of the simulator's incident, hours still tile into buckets (dayparting
works), and 14 days of history stay small (96 buckets a day per segment).
"""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken, Membership, Workspace
from accounts.roles import Role
from accounts.services import api_token_create, membership_create, snapshot, workspace_create
from audit.actors import Actor
from audit.services import audit_record
from campaigns.models import Campaign, Channel, Creative, Segment
from campaigns.services import campaign_create, creative_create, segment_create
from rules.demo import load_demo_rules
from rules.pushes import connector_ensure_sandbox

DEMO_ACTOR = Actor.system("demo")
WORKSPACE = {
    "name": "Demo Retail",
    "currency": "EUR",
    "time_zone": "Europe/Paris",
    "metric_bucket_minutes": 15,
    "freshness_limit_minutes": 60,
}
TOKEN_NAME = "Demo integration"


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str  # fixed on purpose: a local demo; created only by this command, never by a migration
    role: str
    label: str
    membership: dict


DEMO_USERS = (
    DemoUser("marketer", "demo-marketer", Role.MARKETER, "marketer", {}),
    DemoUser("approver1", "demo-approver1", Role.APPROVER, "approver, level 1 (up to 15% / 500 EUR a day)",
             {"approval_level": 1, "approval_limit_pct": Decimal("15"), "approval_limit_amount": Decimal("500")}),
    DemoUser("approver2", "demo-approver2", Role.APPROVER, "approver, level 2 (no limit)", {"approval_level": 2}),
    DemoUser("admin", "demo-admin", Role.ADMIN, "workspace admin", {}),
    DemoUser("integrator", "demo-integrator", Role.INTEGRATOR, "integrator (API; may manage configuration)",
             {"can_manage_config": True}),
)


@dataclass(frozen=True)
class DemoCampaign:
    name: str
    channel: str
    objective: str
    bid: Decimal  # max CPC for search and social, max CPM for display and video
    budgets: dict  # daily budget of a segment by device
    segments: tuple[dict, ...]  # criteria
    creatives: tuple[tuple[str, str, str], ...]  # name, headline, call to action


def _grid(**axes: tuple[str, ...]) -> tuple[dict, ...]:
    """Every combination of the given criteria values, e.g. device x geo."""
    combos = [{}]
    for key, values in axes.items():
        combos = [{**combo, key: value} for combo in combos for value in values]
    return tuple(combos)


DEMO_CAMPAIGNS = (
    DemoCampaign(
        "Search — Spring sale", Channel.SEARCH, Campaign.Objective.CONVERSIONS, Decimal("1.20"),
        {"mobile": Decimal("2500"), "desktop": Decimal("1400")},
        _grid(device=("mobile", "desktop"), intent=("high", "medium"), geo=("FR", "DE"), source=("google",)),
        (("Sale text ad", "Spring sale: up to 40% off", "Shop now"),
         ("Free delivery text ad", "Free delivery from 50 €", "Order today")),
    ),
    DemoCampaign(
        "Social — New collection", Channel.SOCIAL, Campaign.Objective.REVENUE, Decimal("0.90"),
        {"mobile": Decimal("2000"), "desktop": Decimal("1100")},
        _grid(device=("mobile", "desktop"), source=("meta", "tiktok"), geo=("FR", "ES"), intent=("medium",)),
        (("Carousel", "The new collection is here", "Discover"),
         ("Short video", "Styled in 15 seconds", "Watch"),
         ("Story", "Swipe up for spring", "Shop now")),
    ),
    DemoCampaign(
        "Display — Retargeting", Channel.DISPLAY, Campaign.Objective.CONVERSIONS, Decimal("3.00"),
        {"mobile": Decimal("1500"), "desktop": Decimal("900")},
        _grid(device=("mobile", "desktop"), source=("retargeting",), intent=("high",), geo=("FR", "DE"))
        + _grid(device=("mobile", "desktop"), source=("programmatic",), intent=("low",), geo=("FR", "DE")),
        (("Dynamic banner", "Still thinking about it?", "Back to your basket"),
         ("Static banner", "Your size is back in stock", "See it")),
    ),
    DemoCampaign(
        "Video — Brand story", Channel.VIDEO, Campaign.Objective.AWARENESS, Decimal("9.00"),
        {"mobile": Decimal("2000"), "desktop": Decimal("1100")},
        _grid(device=("mobile", "desktop"), geo=("FR", "DE", "IT"), source=("youtube",), intent=("low",)),
        (("30s story", "Made to last, since 1987", "Learn more"),
         ("6s bumper", "Spring, made to last", "")),
    ),
)


def segment_name(criteria: dict) -> str:
    """e.g. "Mobile · FR · Google · high intent"."""
    c = criteria
    return f"{c['device'].capitalize()} · {c['geo']} · {c['source'].capitalize()} · {c['intent']} intent"


class Command(BaseCommand):
    help = (
        'Create (or complete) the "Demo Retail" workspace: a user per role, campaigns on four channels, '
        "segments, creatives, simulated history and active demo rules. Idempotent."
    )
    # Tests pin the clock with call_command("load_demo", ..., now=<aware datetime>).
    stealth_options = ("now",)

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=14, help="Days of simulated metric history.")
        parser.add_argument(
            "--reset", action="store_true",
            help="Delete the demo workspace (and everything in it) first; demo users are kept and their "
                 "passwords reset (their audit trail refers to them).",
        )

    def handle(self, *args, days: int, reset: bool, **options):
        if reset:
            self._reset()
        users = {spec.username: self._user(spec) for spec in DEMO_USERS}
        workspace = self._workspace(owner=users["admin"])
        # Applied changes are pushed to the sandbox "ad platform", which records what it receives.
        connector_ensure_sandbox(actor=DEMO_ACTOR, workspace=workspace)
        for spec in DEMO_USERS:
            self._membership(workspace, users[spec.username], spec)
        raw_token = self._token(workspace, users["integrator"])
        for spec in DEMO_CAMPAIGNS:
            self._campaign(workspace, spec, days=days)
        call_command("simulate", workspace=workspace.name, backfill_days=days, now=options.get("now"),
                     stdout=self.stdout, stderr=self.stderr)
        rules = load_demo_rules(actor=DEMO_ACTOR, workspace=workspace, owner=users["marketer"])
        self._report(workspace, rules=len(rules), raw_token=raw_token)

    # --- people -------------------------------------------------------------------------

    def _reset(self) -> None:
        workspace = Workspace.objects.filter(name=WORKSPACE["name"]).first()
        if workspace is None:
            return
        self.stdout.write(f"Deleting {workspace} and everything in it…")
        _workspace_delete(actor=DEMO_ACTOR, workspace=workspace)

    def _user(self, spec: DemoUser):
        user = get_user_model().objects.filter(username=spec.username).first()
        if user is None:
            return _demo_user_create(actor=DEMO_ACTOR, spec=spec)
        if not user.check_password(spec.password):
            _demo_user_reset_password(actor=DEMO_ACTOR, user=user, spec=spec)
        return user

    def _workspace(self, *, owner) -> Workspace:
        workspace = Workspace.objects.filter(name=WORKSPACE["name"]).first()
        return workspace or workspace_create(actor=DEMO_ACTOR, owner=owner, **WORKSPACE)

    def _membership(self, workspace: Workspace, user, spec: DemoUser) -> None:
        if not Membership.objects.filter(workspace=workspace, user=user).exists():
            membership_create(actor=DEMO_ACTOR, workspace=workspace, user=user, role=spec.role, **spec.membership)

    def _token(self, workspace: Workspace, user) -> str | None:
        """A new raw key when the token is created now; None when it exists (its key cannot be shown again)."""
        if ApiToken.objects.filter(workspace=workspace, user=user, name=TOKEN_NAME, revoked_at__isnull=True).exists():
            return None
        _, raw_key = api_token_create(actor=DEMO_ACTOR, workspace=workspace, user=user, name=TOKEN_NAME)
        return raw_key

    # --- campaigns ----------------------------------------------------------------------

    def _campaign(self, workspace: Workspace, spec: DemoCampaign, *, days: int) -> None:
        campaign = Campaign.objects.filter(workspace=workspace, name=spec.name).first()
        if campaign is None:
            total = sum(spec.budgets[criteria["device"]] for criteria in spec.segments)
            campaign = campaign_create(
                actor=DEMO_ACTOR, workspace=workspace, name=spec.name, channel=spec.channel,
                objective=spec.objective, daily_budget=total,
                start_date=timezone.localdate() - timedelta(days=days),
            )
        for criteria in spec.segments:
            if not Segment.objects.filter(campaign=campaign, name=segment_name(criteria)).exists():
                self._segment(campaign, spec, criteria)
        for position, (name, headline, call_to_action) in enumerate(spec.creatives):
            if not Creative.objects.filter(campaign=campaign, name=name).exists():
                creative_create(actor=DEMO_ACTOR, campaign=campaign, name=name, headline=headline,
                                call_to_action=call_to_action, rotation_order=position)

    def _segment(self, campaign: Campaign, spec: DemoCampaign, criteria: dict) -> None:
        budget = spec.budgets[criteria["device"]]
        # Bounds wide enough for rules to move, narrow enough that a runaway rule cannot.
        segment_create(
            actor=DEMO_ACTOR, campaign=campaign, name=segment_name(criteria), criteria=criteria,
            bid=spec.bid, bid_floor=spec.bid / 2, bid_ceiling=spec.bid * Decimal("2.5"),
            daily_budget=budget, budget_floor=budget / 4, budget_ceiling=budget * 3,
        )

    # --- report -------------------------------------------------------------------------

    def _report(self, workspace: Workspace, *, rules: int, raw_token: str | None) -> None:
        segments = Segment.objects.filter(campaign__workspace=workspace).count()
        self.stdout.write(self.style.SUCCESS(
            f"\n{workspace} is ready: {workspace.currency}, {workspace.time_zone}, "
            f"{workspace.metric_bucket_minutes}-minute buckets, {len(DEMO_CAMPAIGNS)} campaigns, "
            f"{segments} segments, {rules} active rules."
        ))
        self.stdout.write(logins_table())
        if raw_token:
            self.stdout.write(self.style.WARNING(
                f"Integrator API token (shown once, keep it): {raw_token}\n"
                f"  e.g. curl -H 'Authorization: Bearer {raw_token}' http://127.0.0.1:8000/api/v1/campaigns/"
            ))
        else:
            self.stdout.write(f"The integrator's API token “{TOKEN_NAME}” exists; its key was shown when it was "
                              "created (run with --reset for a new one).")


def logins_table() -> str:
    lines = ["Demo logins (admin: /admin/):", f"  {'username':<12} {'password':<17} role"]
    lines += [f"  {u.username:<12} {u.password:<17} {u.label}" for u in DEMO_USERS]
    return "\n".join(lines)


# --- Writes this command needs that no app service offers (audited all the same) ------------


@transaction.atomic
def _demo_user_create(*, actor: Actor, spec: DemoUser):
    user = get_user_model().objects.create_user(
        username=spec.username, email=f"{spec.username}@demo-retail.example", password=spec.password
    )
    audit_record(actor=actor, action="user.create", subject=user,
                 after=snapshot(user, exclude=("password", "groups", "user_permissions")))
    return user


@transaction.atomic
def _demo_user_reset_password(*, actor: Actor, user, spec: DemoUser) -> None:
    user.set_password(spec.password)
    user.save(update_fields=["password"])
    audit_record(actor=actor, action="user.reset_password", subject=user, reason="load_demo: demo password")


@transaction.atomic
def _workspace_delete(*, actor: Actor, workspace: Workspace) -> None:
    audit_record(actor=actor, action="workspace.delete", subject=workspace, before=snapshot(workspace),
                 reason="load_demo --reset", workspace_id=workspace.pk)
    workspace.delete()
