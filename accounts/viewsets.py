"""The base of the API's configuration endpoints: CRUD scoped to the caller's workspaces, every write
through a service `<entity>_create/_update/_delete(*, actor, ...)`."""

from rest_framework import permissions, viewsets

from .permissions import WorkspaceRolePermission, request_actor, scope_to_caller


class ServiceBackedViewSet(viewsets.ModelViewSet):
    """Reads need a role in the object's workspace; writes need `write_perm` there, and the service
    checks it again (and audits). Another workspace's objects are outside the queryset: 404."""

    permission_classes = [permissions.IsAuthenticated, WorkspaceRolePermission]
    write_perm: str
    workspace_lookup: str = "workspace"
    subject: str  # the keyword the update/delete services take the object by
    create_service = update_service = delete_service = None

    def get_queryset(self):
        return scope_to_caller(self.queryset, self.request, workspace_lookup=self.workspace_lookup)

    def perform_create(self, serializer):
        serializer.instance = type(self).create_service(actor=request_actor(self.request), **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = type(self).update_service(
            actor=request_actor(self.request), **{self.subject: serializer.instance}, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        type(self).delete_service(actor=request_actor(self.request), **{self.subject: instance})
