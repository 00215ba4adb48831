from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

# The admin site's titles and who may enter it: accounts.admin_site.RulesPlatformAdminSite.
urlpatterns = [
    # Before the admin's own URLs, whose catch-all would otherwise answer them.
    path("admin/dashboards/", include("rulesplatform.dashboard_urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("rulesplatform.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]

handler404 = "rulesplatform.api.exceptions.not_found_view"
handler500 = "rulesplatform.api.exceptions.server_error_view"
