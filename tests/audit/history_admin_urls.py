"""A root URLconf whose admin adds VersionHistoryAdminMixin to the real campaign admin."""

from django.urls import path

from accounts.admin_site import RulesPlatformAdminSite
from audit.admin_history import VersionHistoryAdminMixin
from campaigns.admin import CampaignAdmin
from campaigns.models import Campaign

site = RulesPlatformAdminSite(name="admin")
site.register(Campaign, type("CampaignHistoryAdmin", (VersionHistoryAdminMixin, CampaignAdmin), {}))

urlpatterns = [path("admin/", site.urls)]
