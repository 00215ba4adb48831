from rest_framework.routers import SimpleRouter

from .apis import ExperimentViewSet

router = SimpleRouter(trailing_slash=True)
router.register("experiments", ExperimentViewSet, basename="experiment")
urlpatterns = router.urls
