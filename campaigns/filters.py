"""Query filters of the campaigns API. Ids outside the caller's workspaces simply match nothing:
the querysets they filter are already scoped."""

import django_filters

from .models import Campaign, Channel, Creative, DeliveryStatus, Segment


class CampaignFilter(django_filters.FilterSet):
    workspace = django_filters.NumberFilter(field_name="workspace_id")

    class Meta:
        model = Campaign
        fields = ["workspace", "channel", "status", "objective"]


class _CampaignChildFilter(django_filters.FilterSet):
    workspace = django_filters.NumberFilter(field_name="campaign__workspace_id")
    campaign = django_filters.NumberFilter(field_name="campaign_id")
    channel = django_filters.ChoiceFilter(field_name="campaign__channel", choices=Channel.choices)
    status = django_filters.ChoiceFilter(choices=DeliveryStatus.choices)


class SegmentFilter(_CampaignChildFilter):
    class Meta:
        model = Segment
        fields = ["workspace", "campaign", "channel", "status"]


class CreativeFilter(_CampaignChildFilter):
    class Meta:
        model = Creative
        fields = ["workspace", "campaign", "channel", "status"]
