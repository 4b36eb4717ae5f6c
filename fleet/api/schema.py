"""OpenAPI for the envelope: every operation documents its success envelope and the error
envelopes it can answer, and the two ways of sending a key."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import serializers

from fleet import errors


class ErrorSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=sorted(errors.CATALOGUE), help_text="A code from Fleet's error catalogue."
    )
    message = serializers.CharField()
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation errors: the messages for each field.",
    )


class ErrorEnvelopeSerializer(serializers.Serializer):
    success = serializers.BooleanField(help_text="Always false.")
    error = ErrorSerializer()


class PaginationSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next page, or null at the end.")
    previous = serializers.URLField(allow_null=True)


_ENVELOPES: dict[str, object] = {}


def envelope(name: str, data, *, paginated: bool = False, **extra_fields):
    """The success envelope around `data` (a serializer instance or a field), one component per
    name."""
    if name in _ENVELOPES:
        return _ENVELOPES[name]
    fields = {"success": serializers.BooleanField(help_text="Always true."), "data": data}
    if paginated:
        fields["pagination"] = PaginationSerializer()
    fields.update(extra_fields)
    _ENVELOPES[name] = inline_serializer(name=name, fields=fields)
    return _ENVELOPES[name]


WORKSPACE_ID_PARAM = OpenApiParameter(
    "workspace_id",
    int,
    description="The workspace to act in. Workspace keys: their own (may be left out). "
    "Platform keys: may be left out when the key's user has exactly one workspace.",
)

ERROR_STATUSES = {
    "400": "Invalid request (VALIDATION_ERROR, API_MALFORMED_REQUEST, WORKSPACE_REQUIRED)",
    "401": "No key, or an invalid or revoked key (API_KEY_MISSING/INVALID/REVOKED)",
    "403": "The key's role or scope does not allow this",
    "404": "No such object within the key's reach (NOT_FOUND)",
    "409": "The object's state does not allow this (e.g. MAILBOX_NOT_APPROVED, MAILBOX_NOT_ACTIVE)",
    "413": "Body larger than API_MAX_REQUEST_BYTES (API_REQUEST_TOO_LARGE)",
    "415": "Content-Type not accepted here (API_UNSUPPORTED_MEDIA_TYPE)",
    "429": "Rate limit of the key reached; see Retry-After (API_RATE_LIMITED)",
}


class EnvelopeAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for status, description in ERROR_STATUSES.items():
            if status in responses:
                continue
            if status == "415" and self.method not in ("POST", "PUT", "PATCH"):
                continue
            response = self._get_response_for_code(ErrorEnvelopeSerializer, status)
            response["description"] = description
            if status == "429":
                response["headers"] = {
                    "Retry-After": {
                        "schema": {"type": "integer"},
                        "description": "Seconds to wait before the next request.",
                    }
                }
            responses[status] = response
        return responses


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "fleet.api.auth.ApiKeyAuthentication"
    name = ["ApiKeyHeader", "BearerKey"]

    def get_security_definition(self, auto_schema):
        return [
            {
                "type": "apiKey",
                "in": "header",
                "name": "X-Api-Key",
                "description": "Platform API key (sk_user_...) or Workspace API key (sk_...)",
            },
            {
                "type": "http",
                "scheme": "bearer",
                "description": "The same API key as a Bearer token",
            },
        ]

    def get_security_requirement(self, auto_schema):
        return [{"ApiKeyHeader": []}, {"BearerKey": []}]
