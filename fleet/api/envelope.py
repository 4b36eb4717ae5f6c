"""The API's one envelope: `{"success": true, "data": …}` or
`{"success": false, "error": {"code": …, "message": …}}` with a code from `fleet/errors.py`.

Every error under /api/ goes through here: DRF's own (401, 403, 404, 405, 406, 415, 429, parse
errors), Django's (unknown URL, body too large, bad host) and unexpected exceptions, which are
logged with the request id and answered as INTERNAL_ERROR without a traceback.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response

from fleet import errors
from fleet.errors import ErrorCode, FleetError

log = logging.getLogger("fleet.api")

API_PREFIX = "/api/"


def ok(data, status: int = 200, **extra) -> Response:
    return Response({"success": True, "data": data, **extra}, status=status)


def error_body(error: ErrorCode, message: str = "", **extra) -> dict:
    return {
        "success": False,
        "error": {"code": error.code, "message": message or error.message, **extra},
    }


def fail(error: ErrorCode, status: int, message: str = "", headers=None, **extra) -> Response:
    return Response(error_body(error, message, **extra), status=status, headers=headers)


class ApiError(exceptions.APIException):
    """Raised by API code for a catalogue error with an HTTP status; `fields` names the
    offending fields, `extra` adds top-level keys (vendor compatibility, e.g. Woodpecker's 422)."""

    def __init__(
        self,
        error: ErrorCode,
        status: int,
        message: str = "",
        fields: dict | None = None,
        extra: dict | None = None,
    ):
        self.error = error
        self.status_code = status
        self.message = message or error.message
        self.fields = fields
        self.extra = extra or {}
        super().__init__(self.message)


def _first_message(detail) -> tuple[str, dict | None]:
    """A readable one-line message and the per-field errors from a DRF ValidationError."""
    if isinstance(detail, dict):
        fields = {key: [str(m) for m in _flatten(value)] for key, value in detail.items()}
        key, messages = next(iter(fields.items()))
        if key == "non_field_errors":
            return messages[0], fields
        return f"{key}: {messages[0]}", fields
    messages = [str(m) for m in _flatten(detail)]
    return (messages[0] if messages else errors.VALIDATION_ERROR.message), None


def _flatten(value):
    if isinstance(value, dict):
        for key, inner in value.items():
            for message in _flatten(inner):
                yield f"{key}: {message}"
    elif isinstance(value, list):
        for inner in value:
            yield from _flatten(inner)
    else:
        yield value


# A service's FleetError answers 400 unless its code says otherwise.
STATUS_FOR_CODE = {
    errors.NOT_FOUND.code: 404,
    errors.PERMISSION_DENIED.code: 403,
    errors.INVALID_CREDENTIAL_ID.code: 422,  # Woodpecker's bulk-add API
    errors.MAILBOX_NOT_APPROVED.code: 409,
    errors.MAILBOX_NOT_ACTIVE.code: 409,
    errors.NO_TOTP_SECRET.code: 404,
    errors.CONSENT_REQUEST_CLOSED.code: 409,
}


def status_for(error: ErrorCode) -> int:
    if not error.permanent:
        return 503  # Microsoft (or another peer) did not answer: worth trying again
    return STATUS_FOR_CODE.get(error.code, 400)


SIMPLE = [
    # (DRF exception, status, catalogue entry)
    (exceptions.NotAuthenticated, 401, errors.API_KEY_MISSING),
    (exceptions.PermissionDenied, 403, errors.PERMISSION_DENIED),
    (exceptions.NotFound, 404, errors.NOT_FOUND),
    (exceptions.MethodNotAllowed, 405, errors.API_METHOD_NOT_ALLOWED),
    (exceptions.NotAcceptable, 406, errors.API_NOT_ACCEPTABLE),
    (exceptions.UnsupportedMediaType, 415, errors.API_UNSUPPORTED_MEDIA_TYPE),
    (exceptions.ParseError, 400, errors.API_MALFORMED_REQUEST),
]


def exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's EXCEPTION_HANDLER: every exception of an API view becomes an envelope."""
    if isinstance(exc, ApiError):
        extra = {"fields": exc.fields} if exc.fields else {}
        response = fail(exc.error, exc.status_code, exc.message, **extra)
        response.data.update(exc.extra)
        return response
    if isinstance(exc, FleetError):
        response = fail(exc.error, status_for(exc.error), exc.message)
        if exc.error is errors.INVALID_CREDENTIAL_ID:
            response.data["message"] = exc.code  # Woodpecker's 422 body: {"message": "INVALID_…"}
        return response
    if isinstance(exc, exceptions.ValidationError):
        message, fields = _first_message(exc.detail)
        return fail(errors.VALIDATION_ERROR, 400, message, **({"fields": fields} if fields else {}))
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        message, fields = _first_message(detail)
        return fail(errors.VALIDATION_ERROR, 400, message, **({"fields": fields} if fields else {}))
    if isinstance(exc, exceptions.AuthenticationFailed):
        error = getattr(exc, "fleet_error", errors.API_KEY_INVALID)
        return fail(error, 401, error.message, headers=_auth_header(context))
    if isinstance(exc, exceptions.Throttled):
        wait = max(1, int(exc.wait or 1))
        return fail(
            errors.API_RATE_LIMITED,
            429,
            f"{errors.API_RATE_LIMITED.message}: try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )
    if isinstance(exc, RequestDataTooBig):
        return fail(errors.API_REQUEST_TOO_LARGE, 413)
    if isinstance(exc, Http404):
        return fail(errors.NOT_FOUND, 404)
    if isinstance(exc, DjangoPermissionDenied):
        return fail(errors.PERMISSION_DENIED, 403)
    for cls, status, error in SIMPLE:
        if isinstance(exc, cls):
            response = fail(error, status, _message_for(exc, error))
            if isinstance(exc, exceptions.NotAuthenticated):
                response["WWW-Authenticate"] = _auth_header(context).get("WWW-Authenticate", "")
            return response
    if isinstance(exc, exceptions.APIException):
        return fail(errors.VALIDATION_ERROR, exc.status_code, str(exc.detail))
    request = context.get("request")
    log.exception(
        "api unexpected error request_id=%s path=%s",
        getattr(request, "request_id", "-"),
        getattr(request, "path", "-"),
    )
    return fail(errors.INTERNAL_ERROR, 500)


def _message_for(exc: exceptions.APIException, error: ErrorCode) -> str:
    if isinstance(exc, exceptions.PermissionDenied) and exc.detail != exc.default_detail:
        return str(exc.detail)  # a message written by Fleet, not DRF's generic one
    if isinstance(exc, exceptions.MethodNotAllowed | exceptions.UnsupportedMediaType):
        return str(exc.detail)
    return error.message


def _auth_header(context: dict) -> dict:
    return {"WWW-Authenticate": 'Bearer realm="fleet"'}


# --- Django's error views: JSON under /api/, the usual pages elsewhere ------------------------


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def json_error(error: ErrorCode, status: int, message: str = "") -> JsonResponse:
    return JsonResponse(error_body(error, message), status=status)


def bad_request(request, exception, template_name="400.html"):
    if _is_api(request):
        if isinstance(exception, RequestDataTooBig):
            return json_error(errors.API_REQUEST_TOO_LARGE, 413)
        message = "Bad request" if isinstance(exception, SuspiciousOperation) else ""
        return json_error(errors.API_MALFORMED_REQUEST, 400, message)
    return defaults.bad_request(request, exception, template_name)


NO_ROLE_MESSAGE = (
    "Your role does not allow this. Roles go viewer → operator → manager → owner; a workspace "
    "owner can raise yours."
)


def permission_denied(request, exception, template_name="403.html"):
    """The envelope under /api/; elsewhere a page in the admin's style that says which role is
    needed (PermissionDenied's message, see fleet.admin.base.require_role) and leads back."""
    if _is_api(request):
        return json_error(errors.PERMISSION_DENIED, 403)
    from django.contrib import admin
    from django.shortcuts import render
    from django.utils.http import url_has_allowed_host_and_scheme

    back = request.META.get("HTTP_REFERER", "")
    if (
        not back
        or back == request.build_absolute_uri()
        or not url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
    ):
        back = ""
    context = {
        **admin.site.each_context(request),
        "title": "You may not do this",
        "reason": str(exception or "") or NO_ROLE_MESSAGE,
        "back_url": back,
    }
    return render(request, template_name, context, status=403)


def page_not_found(request, exception, template_name="404.html"):
    if _is_api(request):
        return json_error(errors.NOT_FOUND, 404)
    return defaults.page_not_found(request, exception, template_name)


def server_error(request, template_name="500.html"):
    if _is_api(request):
        return json_error(errors.INTERNAL_ERROR, 500)
    return defaults.server_error(request, template_name)
