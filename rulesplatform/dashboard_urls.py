"""The dashboards live under /admin/dashboards/, behind the admin site's login and access check."""

from django.contrib import admin
from django.urls import path

from . import dashboards

app_name = "dashboards"
_protected = admin.site.admin_view

urlpatterns = [
    path("", _protected(dashboards.dashboards_home), name="home"),
    path("workspace/<int:workspace_id>/", _protected(dashboards.workspace_dashboard), name="workspace"),
    path("campaign/<int:campaign_id>/", _protected(dashboards.campaign_dashboard), name="campaign"),
    path("segment/<int:segment_id>/", _protected(dashboards.segment_dashboard), name="segment"),
]
