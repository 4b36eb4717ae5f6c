"""Request ids, body size limit and one log line per API request.

Every API request gets an id: the caller's `X-Request-Id` when it is a sane token (Mailivery's
clients send one "for logging"), else a new UUID. It is returned in the `X-Request-Id` header
and written in the log line, so a caller's report can be matched to the server's log.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from django.conf import settings

from fleet import errors
from fleet.api.envelope import API_PREFIX, json_error

log = logging.getLogger("fleet.api")

REQUEST_ID_HEADER = "X-Request-Id"
# Letters, digits and a few separators: enough for UUIDs, timestamps and trace ids, nothing that
# could forge a log line or a header.
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@+=/-]{1,128}$")


def request_id_of(request) -> str:
    incoming = request.META.get("HTTP_X_REQUEST_ID", "")
    return incoming if SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex


class ApiRequestMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        started = time.monotonic()
        request.request_id = request_id_of(request)
        response = self._too_large(request) or self.get_response(request)
        response[REQUEST_ID_HEADER] = request.request_id
        log.info(
            "api request_id=%s method=%s path=%s status=%s ms=%d key=%s",
            request.request_id,
            request.method,
            request.path,
            response.status_code,
            (time.monotonic() - started) * 1000,
            getattr(request, "api_key_prefix", "-"),
        )
        return response

    def _too_large(self, request):
        """Refuse a body above API_MAX_REQUEST_BYTES from its Content-Length, before reading it
        (Django's own DATA_UPLOAD_MAX_MEMORY_SIZE does not count uploaded files)."""
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return json_error(errors.API_MALFORMED_REQUEST, 400, "Invalid Content-Length header")
        if length > settings.API_MAX_REQUEST_BYTES:
            return json_error(
                errors.API_REQUEST_TOO_LARGE,
                413,
                f"{errors.API_REQUEST_TOO_LARGE.message}: the limit is "
                f"{settings.API_MAX_REQUEST_BYTES} bytes.",
            )
        return None
