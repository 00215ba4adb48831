"""OpenAPI generation: every operation documents the shared error body next to its success."""

from drf_spectacular import openapi
from rest_framework import permissions, serializers


class ApiErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable: e.g. invalid, not_found, conflict.")
    message = serializers.CharField(help_text="For people; may change between versions.")
    details = serializers.JSONField(help_text="Structured context, e.g. field errors for `invalid`.")


class ApiErrorSerializer(serializers.Serializer):
    error = ApiErrorDetailSerializer()


_WRITE_METHODS = {"POST", "PUT", "PATCH"}


class AutoSchema(openapi.AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, description in self._error_responses():
            body = self._get_response_for_code(ApiErrorSerializer, code)
            responses.setdefault(code, {**body, "description": description})
        return responses

    def _error_responses(self) -> list[tuple[str, str]]:
        errors = []
        if self.method in _WRITE_METHODS:
            errors.append(("400", "The request was not valid; `details` maps fields to their errors."))
        if not self._is_public():
            errors.append(("401", "No valid credentials (session or `Authorization: Bearer <token>`)."))
            errors.append(("403", "The caller's role in the workspace does not allow this."))
        if "{" in self.path:
            errors.append(("404", "No such object in the caller's workspaces."))
        if self.view.get_throttles():
            errors.append(("429", "Too many requests; retry after the `Retry-After` header's seconds."))
        return errors

    def _is_public(self) -> bool:
        return all(isinstance(p, permissions.AllowAny) for p in self.view.get_permissions())
