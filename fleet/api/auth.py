"""API keys on requests: who is calling, what they reach, how often they may call.

What a key reaches and may do is fleet.access's rule (key_scope, key_role), applied once per
request by the API's base view (fleet/api/base.py).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.throttling import SimpleRateThrottle

from fleet import errors
from fleet.api.envelope import ApiError
from fleet.clients import client_address
from fleet.models import ApiKey

# `last_used_at` is written at most this often per key: one UPDATE per request would make every
# read a write.
LAST_USED_PRECISION = timedelta(minutes=1)


class KeyRejected(exceptions.AuthenticationFailed):
    def __init__(self, error: errors.ErrorCode):
        self.fleet_error = error
        super().__init__(error.message)


def key_from_headers(request) -> str | None:
    """`X-Api-Key`, else `Authorization: Bearer …`. SendKit's clients send both headers; the
    X-Api-Key one wins, so a placeholder left in the other does not matter."""
    key = request.META.get("HTTP_X_API_KEY", "").strip()
    if key:
        return key
    scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class BadKeyThrottle(SimpleRateThrottle):
    """Requests with a missing or wrong key, per client address (API_BAD_KEY_RATE_LIMIT), in the
    shared cache. Only failures count; once an address has used up its budget every request
    from it answers 429 (with Retry-After) before any key is looked up, so that guessing keys
    is as slow as the budget — a good key from that address waits too."""

    scope = "bad_key"

    def __init__(self):
        self.rate = settings.API_BAD_KEY_RATE_LIMIT
        self.num_requests, self.duration = self.parse_rate(self.rate)

    def get_cache_key(self, request, view=None):
        return f"fleet:throttle:bad-key:{client_address(request)}"

    def _history(self, request) -> list[float]:
        self.key = self.get_cache_key(request)
        self.now = self.timer()
        self.history = [t for t in self.cache.get(self.key, []) if t > self.now - self.duration]
        return self.history

    def refuse_when_exhausted(self, request) -> None:
        if len(self._history(request)) >= self.num_requests:
            raise exceptions.Throttled(wait=self.wait())

    def record_failure(self, request) -> None:
        self._history(request).insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        bad_keys = BadKeyThrottle()
        bad_keys.refuse_when_exhausted(request)
        raw = key_from_headers(request)
        if raw is None:
            bad_keys.record_failure(request)
            return None  # → 401 API_KEY_MISSING from the permission check
        key = (
            ApiKey.objects.select_related("user", "workspace")
            .filter(hashed_key=ApiKey.hash(raw))
            .first()
        )
        if key is None or key.is_revoked or not (key.user.is_active and key.user.is_staff):
            bad_keys.record_failure(request)
        if key is None:
            raise KeyRejected(errors.API_KEY_INVALID)
        if key.is_revoked:
            raise KeyRejected(errors.API_KEY_REVOKED)
        if not (key.user.is_active and key.user.is_staff):
            raise KeyRejected(errors.API_KEY_INVALID)  # its user was deactivated
        now = timezone.now()
        if key.last_used_at is None or key.last_used_at < now - LAST_USED_PRECISION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
        request._request.api_key_prefix = key.prefix  # for the request log line
        return key.user, key

    def authenticate_header(self, request):
        return 'Bearer realm="fleet"'


class HasApiKey(BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.auth, ApiKey)


class PlatformKeyOnly(BasePermission):
    def has_permission(self, request, view):
        if isinstance(request.auth, ApiKey) and not request.auth.is_platform:
            raise ApiError(errors.PLATFORM_KEY_REQUIRED, 403)
        return True


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per key, counted in the shared cache (CACHE_URL) so that all web processes
    share one budget. The rate comes from API_RATE_LIMIT, read per request."""

    scope = "api_key"

    def get_rate(self):
        return settings.API_RATE_LIMIT

    def allow_request(self, request, view):
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        if not isinstance(request.auth, ApiKey):
            return None
        # The hash, not the row id: a deleted key's id can come back, its budget must not.
        return f"fleet:throttle:key:{request.auth.hashed_key[:32]}"
