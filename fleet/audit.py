"""The audit log: who changed what, when, from where, and whether through the admin, the API or
a task.

Every service that changes state calls `record` (one object) or `record_many` (a bulk
operation: one INSERT) inside its own transaction, so an entry exists exactly when the change
does. The request's context — the client address, the request id and the API key's prefix — is
put in a context variable by `AuditContextMiddleware` for admin and API requests; work done by
a task has none and is recorded with the task's actor, or as "system".

Secrets never reach the log: a field that is encrypted at rest (fleet.secrets'
`EncryptedTextField`, i.e. `encrypted_fields()`), or a key's hash, is shown as "changed" and
nothing else.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import uuid
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.db import models, transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import LazyObject, empty

from fleet.clients import client_address
from fleet.inserts import insert_many
from fleet.models import ApiKey, AuditEntry, ConsentRequest, Workspace
from fleet.secrets import EncryptedTextField

CHANGED = "changed"  # what the log shows for a secret's new value
# Not encrypted (only a hash is stored, or a value that opens a flow), but no reader needs them.
NEVER_SHOWN = {(ApiKey, "hashed_key"), (ConsentRequest, "oauth_state")}
PRUNE_BATCH = 5000
ADMIN_PREFIX, API_PREFIX = "/admin/", "/api/"  # config/urls.py

# Every action the log records, "<object type>.<verb>" (the admin's filter offers these: a list
# of the distinct actions of ten million rows would be a scan). Admin form saves add
# "<type>.created" / ".updated" / ".deleted" of the types below.
OBJECT_TYPES = [
    "mailbox", "workspace", "membership", "credential", "apikey", "tag", "consentrequest",
    "bulkaddrun", "importbatch", "moverun",
]
ACTIONS = sorted(
    {f"{kind}.{verb}" for kind in OBJECT_TYPES for verb in ("created", "updated", "deleted")}
    | {
        "mailbox.approved", "mailbox.warmup_started", "mailbox.warmup_paused",
        "mailbox.warmup_resumed", "mailbox.disabled", "mailbox.enabled", "mailbox.tags_set",
        "mailbox.test_queued", "mailbox.totp_revealed", "mailbox.connected",
        "bulkaddrun.started", "moverun.started", "apikey.revoked", "workspace.webhook_updated",
        "credential.admin_consented", "consentrequest.completed", "consentrequest.cancelled",
        "consentrequest.expired",
    }
)

_request: ContextVar[HttpRequest | None] = ContextVar("fleet_audit_request", default=None)


# --- Request context --------------------------------------------------------------------------
class AuditContextMiddleware:
    """Makes the current request (its address, id and API key) known to `record`; after
    Django's AuthenticationMiddleware and ApiRequestMiddleware (which gives API requests their
    id; other requests get one here)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not hasattr(request, "request_id"):
            request.request_id = uuid.uuid4().hex
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)


def current_request() -> HttpRequest | None:
    return _request.get()


def via_of_context() -> str:
    """For services that are not told: "api" or "admin" by the request's path, "web" for
    Fleet's public pages (the consent callback), "task" outside a request."""
    request = current_request()
    if request is None:
        return AuditEntry.Via.TASK
    if request.path.startswith(API_PREFIX):
        return AuditEntry.Via.API
    if request.path.startswith(ADMIN_PREFIX):
        return AuditEntry.Via.ADMIN
    return AuditEntry.Via.WEB


# --- What changed -----------------------------------------------------------------------------
@functools.cache  # a field is a secret or not for the life of the process
def is_secret(model: type[models.Model], name: str) -> bool:
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:  # a form-only name, an annotation
        return False
    return isinstance(field, EncryptedTextField) or any(
        issubclass(model, m) and name == f for m, f in NEVER_SHOWN
    )


_JSON_SCALARS = frozenset({str, int, bool, float, type(None)})


def _plain(value: Any) -> Any:
    """A value as JSON can hold it (dates as ISO text, ids as text, model objects as their pk)."""
    if type(value) in _JSON_SCALARS:  # most values: first, as a bulk operation has thousands
        return value
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def snapshot(obj: models.Model, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The values of `names` (default: every concrete field) before a change, for `diff`."""
    if names is None:
        names = [f.attname for f in obj._meta.concrete_fields]
    return {name: getattr(obj, name, None) for name in names}


def diff(obj: models.Model, before: Mapping[str, Any], after: Mapping[str, Any] | None = None):
    """{field: {"before": …, "after": …}} of the fields whose value changed; a secret field's
    entry is only "changed"."""
    after = snapshot(obj, before) if after is None else after
    changes: dict[str, Any] = {}
    model = type(obj)
    for name, old in before.items():
        new = after.get(name)
        if _plain(old) == _plain(new):
            continue
        if is_secret(model, name):
            changes[name] = CHANGED
        else:
            changes[name] = {"before": _plain(old), "after": _plain(new)}
    return changes


def set_fields(obj: models.Model, names: Iterable[str]) -> dict[str, Any]:
    """For a new object: the given fields as set, secrets as "changed" when set at all."""
    model = type(obj)
    changes: dict[str, Any] = {}
    for name in names:
        value = getattr(obj, name, None)
        if value in (None, ""):
            continue
        changes[name] = CHANGED if is_secret(model, name) else {"before": None, "after": _plain(value)}
    return changes


def summary(changes: Mapping[str, Any]) -> str:
    """One line for a list: `status: active → disabled, password: changed`."""
    parts = []
    for name, change in changes.items():
        if isinstance(change, dict) and set(change) == {"before", "after"}:
            parts.append(f"{name}: {_short(change['before'])} → {_short(change['after'])}")
        else:
            parts.append(f"{name}: {_short(change)}")
    return ", ".join(parts)


def _short(value: Any) -> str:
    text = "—" if value in (None, "") else str(value)
    return text if len(text) <= 60 else text[:57] + "…"


# --- Writing entries --------------------------------------------------------------------------
def _public_id(obj: models.Model) -> str:
    uid = getattr(obj, "uid", None)
    return str(uid) if uid is not None else str(obj.pk)


def _workspace_id(obj: models.Model) -> int | None:
    return obj.pk if isinstance(obj, Workspace) else getattr(obj, "workspace_id", None)


def _safe(changes: Mapping[str, Any] | None, model: type[models.Model]) -> dict[str, Any]:
    """The changes with every secret field's value replaced by "changed", whoever built them."""
    return {
        name: (CHANGED if is_secret(model, name) else _plain(value))
        for name, value in (changes or {}).items()
    }


def unwrapped(actor):
    """`request.user` is a SimpleLazyObject: every attribute read goes through its proxy, which
    made the entries of a 500-row import cost a third of the import. The user itself, once."""
    if isinstance(actor, LazyObject):
        if actor._wrapped is empty:
            actor._setup()
        return actor._wrapped
    return actor


def entry(
    action: str,
    obj: models.Model,
    *,
    actor,
    via: str | None = None,
    changes: Mapping[str, Any] | None = None,
    workspace_id: int | None = None,
    object_type: str | None = None,
) -> AuditEntry:
    """An unsaved entry: `record` saves one, `record_many` many at once. `via` None: from the
    request (see via_of_context)."""
    return _entry(_who(actor, via), action, obj, changes, workspace_id, object_type)


def _who(actor, via: str | None) -> dict[str, Any]:
    """Who acts, how and from where: the same for every entry of one operation, so a bulk
    operation's 500 entries look it up once (the request, the user, the client address)."""
    request = current_request()
    via = via or via_of_context()
    actor = unwrapped(actor)
    user = actor if getattr(actor, "pk", None) is not None else None
    if via == AuditEntry.Via.TASK:
        request = None  # a task queued by a request is not that request
    return {
        "created_at": timezone.now(),
        "actor": user,
        "actor_name": user.get_username() if user is not None else AuditEntry.SYSTEM,
        "api_key_prefix": getattr(request, "api_key_prefix", "") if request is not None else "",
        "via": via,
        "client_address": client_address(request)[:45] if request is not None else "",
        "request_id": getattr(request, "request_id", "") if request is not None else "",
    }


def _entry(
    who: dict[str, Any],
    action: str,
    obj: models.Model,
    changes: Mapping[str, Any] | None,
    workspace_id: int | None,
    object_type: str | None,
) -> AuditEntry:
    return AuditEntry(
        **who,
        workspace_id=workspace_id if workspace_id is not None else _workspace_id(obj),
        object_type=object_type or obj._meta.model_name,
        object_id=_public_id(obj),
        object_pk=obj.pk,
        object_repr=str(obj)[:200],
        action=action,
        changes=_safe(changes, type(obj)),
    )


def record(
    action: str, obj: models.Model, *, actor, via: str | None = None, **kwargs
) -> AuditEntry:
    """One entry for one object's change: one INSERT, in the caller's transaction."""
    item = entry(action, obj, actor=actor, via=via, **kwargs)
    item.save(force_insert=True)
    return item


def record_many(
    action: str,
    objects: Iterable[models.Model],
    *,
    actor,
    via: str | None = None,
    changes=None,
    workspace_id: int | None = None,
    object_type: str | None = None,
) -> list[AuditEntry]:
    """One entry per object of a bulk operation, in one INSERT (COPY on PostgreSQL). `changes`
    is a dict for all of them, or a function of the object."""
    who = _who(actor, via)
    items = [
        _entry(
            who,
            action,
            obj,
            changes(obj) if callable(changes) else changes,
            workspace_id,
            object_type,
        )
        for obj in objects
    ]
    return insert_many(items)


# --- Retention ------------------------------------------------------------------------------
def prune(now: datetime.datetime | None = None, *, batch: int = PRUNE_BATCH) -> int:
    """Delete entries older than AUDIT_RETENTION_DAYS, `batch` rows per statement (each its own
    short transaction, so a first run over years of entries never holds one huge DELETE);
    returns how many went."""
    days = settings.AUDIT_RETENTION_DAYS
    if not days:
        return 0  # 0 keeps everything
    cutoff = (now or timezone.now()) - datetime.timedelta(days=days)
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                AuditEntry.objects.filter(created_at__lt=cutoff)
                .order_by("created_at", "id")
                .values_list("pk", flat=True)[:batch]
            )
            if not ids:
                return deleted
            # Nothing refers to an entry, so this is one plain DELETE … WHERE id IN (…).
            deleted += AuditEntry.objects.filter(pk__in=ids).delete()[0]
