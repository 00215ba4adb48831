from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

admin.site.site_header = "Rules platform"
admin.site.site_title = "Rules platform"
admin.site.index_title = "Today's work"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("rulesplatform.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
