from rest_framework.routers import SimpleRouter

from .apis import ChangeViewSet, EvaluationViewSet, RuleViewSet
from .governance_apis import (
    ApprovalPolicyViewSet,
    ApprovalQueueViewSet,
    ChangeDecisionViewSet,
    ChangePushViewSet,
    ManualChangeViewSet,
    NotificationDeliveryViewSet,
    NotificationEndpointViewSet,
    PlatformConnectorViewSet,
)

router = SimpleRouter(trailing_slash=True)
router.register("rules", RuleViewSet, basename="rule")
router.register("evaluations", EvaluationViewSet, basename="evaluation")
router.register("changes", ChangeViewSet, basename="change")
# Governance: decisions share the changes' prefix (/changes/{id}/approve/ ...), nothing else of it.
router.register("changes", ChangeDecisionViewSet, basename="change-decision")
router.register("approvals/queue", ApprovalQueueViewSet, basename="approval-queue")
router.register("manual-changes", ManualChangeViewSet, basename="manual-change")
router.register("approval-policies", ApprovalPolicyViewSet, basename="approval-policy")
router.register("notification-endpoints", NotificationEndpointViewSet, basename="notification-endpoint")
router.register("notification-deliveries", NotificationDeliveryViewSet, basename="notification-delivery")
router.register("connectors", PlatformConnectorViewSet, basename="connector")
router.register("change-pushes", ChangePushViewSet, basename="change-push")
urlpatterns = router.urls
