from django.urls import path
from rest_framework.routers import SimpleRouter

from .apis import ApiTokenViewSet, MembershipViewSet, MeView, WorkspaceViewSet

router = SimpleRouter(trailing_slash=True)
router.register("workspaces", WorkspaceViewSet, basename="workspace")
router.register("memberships", MembershipViewSet, basename="membership")
router.register("tokens", ApiTokenViewSet, basename="api-token")

urlpatterns = [
    path("me/", MeView.as_view(), name="me"),
    *router.urls,
]
