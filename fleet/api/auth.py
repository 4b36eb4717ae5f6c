"""API keys on requests: who is calling, what they reach, how often they may call.

Scoping reuses the one tenant rule, `Model.objects.restrict(user, role)`, with the key's user;
a workspace key further narrows it to its own workspace and caps the role (see ApiKey.role_in).
Objects outside a key's reach answer 404, as in the admin, so ids cannot be probed; naming
another workspace with a workspace key, or a platform-only action with one, answers 403.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.throttling import SimpleRateThrottle

from fleet import errors
from fleet.api.envelope import ApiError
from fleet.clients import client_address
from fleet.models import ApiKey, Role, Workspace

# `last_used_at` is written at most this often per key: one UPDATE per request would make every
# read a write.
LAST_USED_PRECISION = timedelta(minutes=1)


class KeyRejected(exceptions.AuthenticationFailed):
    def __init__(self, error: errors.ErrorCode):
        self.fleet_error = error
        super().__init__(error.message)


def key_from_headers(request) -> str | None:
    """`X-Api-Key`, else `Authorization: Bearer …`. Seed 000's clients send both headers; the
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


# --- Scoping helpers used by every view ---------------------------------------------------------


def key_of(request) -> ApiKey:
    return request.auth


def scoped(request, queryset: QuerySet, role: str = Role.VIEWER) -> QuerySet:
    """The rows the request's key reaches with at least `role`."""
    key = key_of(request)
    queryset = queryset.restrict(request.user, role)
    if key.workspace_id is not None:
        if key.role not in Role.at_least(role):
            return queryset.none()
        queryset = queryset.filter(**{queryset.model.workspace_lookup: key.workspace_id})
    return queryset


def require_role(request, workspace_id: int, role: str) -> None:
    """403 unless the key may act with `role` in that workspace."""
    if not key_of(request).allows(workspace_id, role):
        raise ApiError(
            errors.PERMISSION_DENIED,
            403,
            f"{errors.PERMISSION_DENIED.message}: this needs the {role} role.",
        )


def get_scoped(request, queryset: QuerySet, role: str = Role.VIEWER, **lookup):
    """One object by `lookup`: 404 when the key cannot see it, 403 when it can see it but its
    role there is lower than `role`."""
    obj = scoped(request, queryset, Role.VIEWER).filter(**lookup).first()
    if obj is None:
        raise ApiError(errors.NOT_FOUND, 404)
    workspace_id = obj.pk if isinstance(obj, Workspace) else obj.workspace_id
    if role != Role.VIEWER:
        require_role(request, workspace_id, role)
    return obj


def target_workspace(request, role: str) -> Workspace:
    """The workspace a create/connect/import call acts in: the workspace key's own, or for a
    platform key the `workspace_id` query parameter, which may be left out when the key's user
    has exactly one workspace where they hold `role`."""
    key = key_of(request)
    raw = request.query_params.get("workspace_id")
    wanted = None
    if raw not in (None, ""):
        try:
            wanted = int(raw)
            if not 0 < wanted < 2**63:
                raise ValueError
        except ValueError:
            raise ApiError(
                errors.VALIDATION_ERROR,
                400,
                "workspace_id: A valid workspace id is required.",
                fields={"workspace_id": ["A valid workspace id is required."]},
            ) from None
    if key.workspace_id is not None:
        if wanted is not None and wanted != key.workspace_id:
            raise ApiError(errors.OUTSIDE_KEY_WORKSPACE, 403)
        require_role(request, key.workspace_id, role)
        return key.workspace
    if wanted is not None:
        workspace = get_scoped(request, Workspace.objects.all(), role, pk=wanted)
        return workspace
    candidates = list(Workspace.objects.restrict(request.user, role)[:2])
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ApiError(
            errors.PERMISSION_DENIED,
            403,
            f"{errors.PERMISSION_DENIED.message}: no workspace where this key has the {role} role.",
        )
    raise ApiError(errors.WORKSPACE_REQUIRED, 400)
