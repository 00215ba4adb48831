from rest_framework.routers import SimpleRouter

from .apis import ChangeViewSet, EvaluationViewSet, RuleViewSet

router = SimpleRouter(trailing_slash=True)
router.register("rules", RuleViewSet, basename="rule")
router.register("evaluations", EvaluationViewSet, basename="evaluation")
router.register("changes", ChangeViewSet, basename="change")
urlpatterns = router.urls
