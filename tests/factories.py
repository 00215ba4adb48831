"""Factories for test data (factory_boy). Money fields get realistic, bound-respecting values."""

from datetime import date
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from accounts.models import Membership, Workspace
from accounts.roles import Role
from campaigns.models import Campaign, Channel, Creative, Segment


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct horse battery staple")
    is_staff = True


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace

    name = factory.Sequence(lambda n: f"Workspace {n}")
    currency = "EUR"
    time_zone = "Europe/Paris"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    workspace = factory.SubFactory(WorkspaceFactory)
    role = Role.MARKETER


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    workspace = factory.SubFactory(WorkspaceFactory)
    name = factory.Sequence(lambda n: f"Campaign {n}")
    channel = Channel.SEARCH
    daily_budget = Decimal("1000")
    start_date = date(2026, 1, 1)


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Segment

    campaign = factory.SubFactory(CampaignFactory)
    name = factory.Sequence(lambda n: f"Segment {n}")
    criteria = factory.LazyFunction(lambda: {"device": "mobile", "geo": "FR"})
    bid = Decimal("1.00")
    bid_floor = Decimal("0.10")
    bid_ceiling = Decimal("5.00")
    daily_budget = Decimal("100")
    budget_floor = Decimal("10")
    budget_ceiling = Decimal("500")


class CreativeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Creative

    campaign = factory.SubFactory(CampaignFactory)
    name = factory.Sequence(lambda n: f"Creative {n}")
    headline = "Spring sale: 20% off"
    call_to_action = "Shop now"
