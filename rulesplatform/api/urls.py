"""Every /api/v1/ route, gathered from the apps' routers."""

from django.urls import include, path

urlpatterns = [
    path("", include("accounts.urls")),
    path("", include("campaigns.urls")),
    path("", include("rules.urls")),
    path("", include("experiments.urls")),
    path("", include("rulesplatform.audit_api")),
]
