"""The one chokepoint for HTTP to Microsoft (identity platform and Graph).

Every call has a timeout, never follows redirects, trusts MICROSOFT_CA_BUNDLE when it is set, and
fails with one error type, `MicrosoftError`, which says whether trying again later may succeed.

Why a Session subclass: `requests` lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a Session's
`verify` (https://github.com/psf/requests/issues/3829), and MSAL's own `verify=` only sets
`Session.verify`. `merge_environment_settings` is where that override happens, so we keep our CA
there while the environment's proxy settings still apply.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import requests
from django.conf import settings


class MicrosoftError(Exception):
    """A failed call to Microsoft. `permanent` False: the same call may succeed later (timeouts,
    connection errors, 429, 5xx); `retry_after` is Microsoft's hint in seconds when it gave one.
    `code` is Microsoft's own code (an AADSTS number as text, or Graph's `error.code`)."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        status: int | None = None,
        code: str = "",
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.trace = ""  # Microsoft's Trace/Correlation ID line, kept out of `message`


# Microsoft appends support identifiers to its error texts ("…\r\nTrace ID: …\r\nCorrelation ID:
# …\r\nTimestamp: …"): useful in a support ticket, noise in a message shown to people.
TRACE_TAIL = re.compile(r"\s*(?:\r?\n)\s*(?:Trace ID|Correlation ID|Timestamp):.*\Z", re.S)


def without_trace(text: str) -> str:
    """Microsoft's message without its Trace ID / Correlation ID / Timestamp tail."""
    return TRACE_TAIL.sub("", text or "").strip()


def trace_of(text: str) -> str:
    """The tail without_trace removes, on one line ("Trace ID: …; Correlation ID: …"), or ""."""
    match = TRACE_TAIL.search(text or "")
    if not match:
        return ""
    return "; ".join(line.strip() for line in match.group(0).splitlines() if line.strip())


def ca_setting() -> str | bool:
    """What `verify=` gets: our CA bundle when configured, else the default trust store."""
    return settings.MICROSOFT_CA_BUNDLE or True


class MicrosoftSession(requests.Session):
    """A requests Session for Microsoft: our CA wins, a timeout on every call, no redirects,
    transport failures as MicrosoftError. Also MSAL's `http_client`."""

    def __init__(self) -> None:
        super().__init__()
        self.verify = ca_setting()

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None:  # no per-call choice: ours beats REQUESTS_CA_BUNDLE
            merged["verify"] = self.verify
        return merged

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", settings.MICROSOFT_HTTP_TIMEOUT)
        kwargs.setdefault("allow_redirects", False)
        try:
            return super().request(method, url, *args, **kwargs)
        except requests.RequestException as exc:
            raise MicrosoftError(
                f"Microsoft could not be reached ({type(exc).__name__}: {exc})", permanent=False
            ) from exc


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (Microsoft sends seconds; HTTP also allows a date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds()) if when else None


def error_from_response(response: requests.Response) -> MicrosoftError:
    """A MicrosoftError for a non-2xx answer: 408/429/5xx may pass, other 4xx will not."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    return error_from_parts(response.status_code, response.headers, body, response.reason or "")


def error_from_parts(
    status: int, headers: Mapping[str, str], body: Any, reason: str = ""
) -> MicrosoftError:
    """The same for an answer given as parts: an inner response of a Graph `$batch`
    (https://learn.microsoft.com/graph/json-batching) has its own status, headers and body."""
    code, message = "", reason or f"HTTP {status}"
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict):  # Graph: {"error": {"code", "message"}}
            code = str(body["error"].get("code", ""))
            message = str(body["error"].get("message", message))
        elif body.get("error"):  # identity platform: error, error_description, error_codes
            codes = body.get("error_codes") or []
            code = str(codes[0]) if codes else str(body["error"])
            message = str(body.get("error_description", body["error"]))
    retry_after = next(
        (parse_retry_after(v) for k, v in (headers or {}).items() if k.lower() == "retry-after"),
        None,
    )
    error = MicrosoftError(
        f"{status} {without_trace(message)}",
        permanent=not (status in (408, 429) or status >= 500),
        status=status,
        code=code,
        retry_after=retry_after,
    )
    error.trace = trace_of(message)
    return error


def request_json(
    method: str,
    url: str,
    *,
    access_token: str,
    session: requests.Session | None = None,
    **kwargs: Any,
) -> Any:
    """One JSON call with a bearer token (Graph): the decoded body, or MicrosoftError."""
    session = session or MicrosoftSession()
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
    headers.update(kwargs.pop("headers", {}))
    response = session.request(method, url, headers=headers, **kwargs)
    if not 200 <= response.status_code < 300:
        raise error_from_response(response)
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except json.JSONDecodeError as exc:
        raise MicrosoftError(
            f"{response.status_code} answer is not JSON", permanent=False, status=200
        ) from exc
