from rest_framework.routers import SimpleRouter

from .apis import CampaignViewSet, CreativeViewSet, MetricViewSet, SegmentViewSet

router = SimpleRouter(trailing_slash=True)
router.register("campaigns", CampaignViewSet, basename="campaign")
router.register("segments", SegmentViewSet, basename="segment")
router.register("creatives", CreativeViewSet, basename="creative")
router.register("metrics", MetricViewSet, basename="metric")
urlpatterns = router.urls
