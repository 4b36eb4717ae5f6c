"""Every operation on mailboxes that a person or a program can start, in one place.

The admin's actions and buttons and the API's views are short callers of these functions, so the
two cannot disagree. Each function takes the acting user (`actor`, None for the system) and `via`
("admin", "api" or "task"), runs in one short transaction, records what happened in the
mailbox's history (`MailboxEvent`) and tells the workspace's webhook. Refusals raise
`FleetError` with a catalogue code; role checks stay with the callers (`fleet.access`), the
rules about a mailbox's state live here.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from dataclasses import dataclass

import pyotp
from django.db import transaction
from django.db.models import Q

from fleet import audit, errors, health, providers
from fleet.errors import FleetError
from fleet.models import EventKind, Mailbox, MailboxEvent, Tag, WebhookDelivery, Workspace
from fleet.secrets import is_unreadable

ADMIN, API, TASK = "admin", "api", "task"
VIA = (ADMIN, API, TASK)
# What a new mailbox's audit entry shows (secrets as "changed" only).
CREATED_FIELDS = [
    "email", "display_name", "provider", "auth_method", "status", "smtp_host", "imap_host",
    "password", "totp_secret", "refresh_token", "graph_user_id", "needs_approval",
]


def _event(mailbox: Mailbox, kind: str, message: str, *, actor, via: str) -> MailboxEvent:
    return mailbox.note(message, actor=actor, via=via, kind=kind)


def _webhook(mailbox: Mailbox, event: str, **data) -> None:
    WebhookDelivery.objects.emit(
        mailbox.workspace, event, {"mailbox": mailbox.webhook_data(), **data}
    )


# --- creating ---------------------------------------------------------------------------------
def new(workspace: Workspace, email: str, auth_method: str, *, tenant_id: str = "", **fields):
    """An unsaved mailbox with its provider's defaults (servers, provider): the one place new
    mailboxes get them, for single creates and for bulk paths (import, bulk add)."""
    mailbox = Mailbox(
        workspace=workspace,
        email=email.strip(),
        auth_method=auth_method,
        **providers.server_settings(email, tenant_id),
    )
    for name, value in fields.items():
        setattr(mailbox, name, value)
    return mailbox


@transaction.atomic
def create(
    workspace: Workspace,
    *,
    email: str,
    auth_method: str,
    actor,
    via: str,
    tenant_id: str = "",
    message: str = "",
    **fields,
) -> Mailbox:
    """Create one mailbox (pending, with its provider's defaults) and record it."""
    mailbox = new(workspace, email, auth_method, tenant_id=tenant_id, **fields)
    mailbox.save()
    record_created(mailbox, actor=actor, via=via, message=message)
    return mailbox


def record_created(mailbox: Mailbox, *, actor, via: str, message: str = "") -> MailboxEvent:
    """The first line of a mailbox's history (for mailboxes saved by a form, too)."""
    audit.record(
        "mailbox.created", mailbox, actor=actor, via=via,
        changes=audit.set_fields(mailbox, CREATED_FIELDS),
    )
    return MailboxEvent.objects.create(
        workspace_id=mailbox.workspace_id,
        mailbox=mailbox,
        email=mailbox.email,
        kind=EventKind.STATUS,
        to_status=mailbox.status,
        message=message or f"Created ({mailbox.get_auth_method_display()})",
        actor=actor,
        via=via,
    )


def record_changes(
    mailbox: Mailbox, names: Iterable[str], *, actor, via: str, before: dict | None = None
) -> None:
    """A history line naming the settings a person changed (never their values: some are
    secrets), and the audit entry with their values before → after (`before`: the old values
    of `names`)."""
    names = [name for name in names if name != "tags"]
    if names:
        changes = audit.diff(mailbox, before) if before is not None else {}
        audit.record(
            "mailbox.updated", mailbox, actor=actor, via=via,
            changes=changes or dict.fromkeys(names, audit.CHANGED),
        )
        _event(
            mailbox,
            EventKind.NOTE,
            "Changed: " + ", ".join(name.replace("_", " ") for name in names),
            actor=actor,
            via=via,
        )


# --- approval and warmup ----------------------------------------------------------------------
@transaction.atomic
def approve(mailbox: Mailbox, *, actor, via: str) -> bool:
    """A manager confirms that a mailbox connected by an unannounced consent was expected.
    A pending mailbox becomes active (its consent was its connection); returns False when it
    needed no approval."""
    if not mailbox.needs_approval:
        return False
    before = audit.snapshot(mailbox, ["needs_approval", "status"])
    mailbox.needs_approval = False
    mailbox.save(update_fields=["needs_approval", "updated_at"])
    if mailbox.status == Mailbox.Status.PENDING:
        mailbox.set_status(
            Mailbox.Status.ACTIVE, message="Approved by a manager", actor=actor, via=via
        )
    else:
        _event(mailbox, EventKind.NOTE, "Approved by a manager", actor=actor, via=via)
    audit.record(
        "mailbox.approved", mailbox, actor=actor, via=via, changes=audit.diff(mailbox, before)
    )
    return True


def _check_can_warm_up(mailbox: Mailbox) -> None:
    """Warmup sends mail: only from an approved mailbox that is connected (`active`)."""
    if mailbox.needs_approval or mailbox.status == Mailbox.Status.PENDING:
        raise FleetError(
            errors.MAILBOX_NOT_APPROVED,
            f"{mailbox.email} is "
            + ("waiting for a manager's approval" if mailbox.needs_approval else "still pending"),
        )
    if mailbox.status != Mailbox.Status.ACTIVE:
        raise FleetError(
            errors.MAILBOX_NOT_ACTIVE,
            f"{mailbox.email} is {mailbox.get_status_display().lower()}"
            + (f" ({mailbox.error_code})" if mailbox.error_code else "")
            + ": warmup needs a connected mailbox",
        )


def _check_warmup_settings(daily_volume: int | None, response_rate: int | None) -> None:
    if daily_volume is not None and not 0 <= daily_volume <= 2000:
        raise FleetError(errors.VALIDATION_ERROR, "Daily volume must be 0 to 2000")
    if response_rate is not None and not 0 <= response_rate <= 100:
        raise FleetError(errors.VALIDATION_ERROR, "Response rate must be 0 to 100")


WARMUP_FIELDS = ["warmup_status", "warmup_daily_volume", "warmup_response_rate"]


def _set_warmup(mailbox, status, daily_volume, response_rate, *, actor, via, action) -> None:
    previous = mailbox.warmup_status
    before = audit.snapshot(mailbox, WARMUP_FIELDS)
    mailbox.warmup_status = status
    if daily_volume is not None:
        mailbox.warmup_daily_volume = daily_volume
    if response_rate is not None:
        mailbox.warmup_response_rate = response_rate
    mailbox.save(
        update_fields=["warmup_status", "warmup_daily_volume", "warmup_response_rate", "updated_at"]
    )
    _event(
        mailbox,
        EventKind.NOTE,
        f"Warmup {previous} → {status} ({mailbox.warmup_daily_volume}/day, "
        f"{mailbox.warmup_response_rate}% responses)",
        actor=actor,
        via=via,
    )
    _webhook(mailbox, "mailbox.warmup_changed", **{"from": previous, "to": status})
    audit.record(action, mailbox, actor=actor, via=via, changes=audit.diff(mailbox, before))


@transaction.atomic
def start_warmup(
    mailbox: Mailbox,
    *,
    actor,
    via: str,
    daily_volume: int | None = None,
    response_rate: int | None = None,
    approve_if_needed: bool = False,
) -> None:
    """Start warmup (or change a running one's volume and response rate). With
    `approve_if_needed`, a mailbox waiting only for approval is approved first: the API's
    warmup/start is how a program confirms a consent-connected mailbox was expected."""
    _check_warmup_settings(daily_volume, response_rate)
    if approve_if_needed and mailbox.needs_approval:
        approve(mailbox, actor=actor, via=via)
    _check_can_warm_up(mailbox)
    _set_warmup(
        mailbox, Mailbox.Warmup.ACTIVE, daily_volume, response_rate,
        actor=actor, via=via, action="mailbox.warmup_started",
    )


@transaction.atomic
def pause_warmup(mailbox: Mailbox, *, actor, via: str) -> None:
    if mailbox.warmup_status != Mailbox.Warmup.ACTIVE:
        raise FleetError(
            errors.WARMUP_NOT_RUNNING,
            f"Warmup of {mailbox.email} is {mailbox.get_warmup_status_display().lower()}, "
            "not running",
        )
    _set_warmup(
        mailbox, Mailbox.Warmup.PAUSED, None, None,
        actor=actor, via=via, action="mailbox.warmup_paused",
    )


@transaction.atomic
def resume_warmup(
    mailbox: Mailbox,
    *,
    actor,
    via: str,
    daily_volume: int | None = None,
    response_rate: int | None = None,
) -> None:
    if mailbox.warmup_status != Mailbox.Warmup.PAUSED:
        raise FleetError(
            errors.WARMUP_NOT_PAUSED,
            f"Warmup of {mailbox.email} is {mailbox.get_warmup_status_display().lower()}, "
            "not paused",
        )
    _check_warmup_settings(daily_volume, response_rate)
    _check_can_warm_up(mailbox)
    _set_warmup(
        mailbox, Mailbox.Warmup.ACTIVE, daily_volume, response_rate,
        actor=actor, via=via, action="mailbox.warmup_resumed",
    )


# --- on and off -------------------------------------------------------------------------------
@transaction.atomic
def disable(mailbox: Mailbox, *, actor, via: str) -> bool:
    """Take a mailbox out of use (no tests, no warmup); False when it already was."""
    if mailbox.status == Mailbox.Status.DISABLED:
        return False
    before = audit.snapshot(mailbox, ["status"])
    mailbox.set_status(Mailbox.Status.DISABLED, actor=actor, via=via)
    audit.record(
        "mailbox.disabled", mailbox, actor=actor, via=via, changes=audit.diff(mailbox, before)
    )
    return True


@transaction.atomic
def enable(mailbox: Mailbox, *, actor, via: str) -> bool:
    """Back in use: pending, and its connection is tested again at once."""
    if mailbox.status != Mailbox.Status.DISABLED:
        return False
    before = audit.snapshot(mailbox, ["status"])
    mailbox.set_status(Mailbox.Status.PENDING, message="Re-enabled", actor=actor, via=via)
    audit.record(
        "mailbox.enabled", mailbox, actor=actor, via=via, changes=audit.diff(mailbox, before)
    )
    health.queue_tests([mailbox], actor=actor, via=via)
    return True


@transaction.atomic
def delete(mailbox: Mailbox, *, actor, via: str) -> dict:
    """Delete a mailbox. Its history stays (events keep the address); returns how it looked."""
    data = mailbox.webhook_data()
    _event(mailbox, EventKind.NOTE, "Mailbox deleted", actor=actor, via=via)
    _webhook(mailbox, "mailbox.deleted")
    audit.record("mailbox.deleted", mailbox, actor=actor, via=via)
    mailbox.delete()
    return data


# --- details ----------------------------------------------------------------------------------
def tags_named(workspace_id: int, names: Iterable[str]) -> list[Tag]:
    """The workspace's tags with these names (case-insensitive), creating the missing ones."""
    wanted = {name.strip().lower(): name.strip() for name in names if name.strip()}
    if not wanted:
        return []
    same_name = Q()
    for name in wanted:
        same_name |= Q(name__iexact=name)
    existing = {
        tag.name.lower(): tag for tag in Tag.objects.filter(same_name, workspace_id=workspace_id)
    }
    created = [
        Tag.objects.create(workspace_id=workspace_id, name=name)
        for lower, name in wanted.items()
        if lower not in existing
    ]
    return [*existing.values(), *created]


@transaction.atomic
def set_tags(mailbox: Mailbox, names: Iterable[str], *, actor, via: str) -> list[Tag]:
    tags = tags_named(mailbox.workspace_id, names)
    before = sorted(mailbox.tags.values_list("name", flat=True))
    after = sorted(tag.name for tag in tags)
    mailbox.tags.set(tags)
    if before != after:
        audit.record(
            "mailbox.tags_set", mailbox, actor=actor, via=via,
            changes={"tags": {"before": before, "after": after}},
        )
    return tags


@transaction.atomic
def update(
    mailbox: Mailbox,
    *,
    actor,
    via: str,
    display_name: str | None = None,
    warmup_daily_volume: int | None = None,
    warmup_response_rate: int | None = None,
    tags: Iterable[str] | None = None,
) -> Mailbox:
    """Change a mailbox's name, warmup settings (managers: the caller checks) or tags."""
    _check_warmup_settings(warmup_daily_volume, warmup_response_rate)
    changes = {
        name: value
        for name, value in (
            ("display_name", display_name),
            ("warmup_daily_volume", warmup_daily_volume),
            ("warmup_response_rate", warmup_response_rate),
        )
        if value is not None and getattr(mailbox, name) != value
    }
    before = audit.snapshot(mailbox, changes)
    for name, value in changes.items():
        setattr(mailbox, name, value)
    if changes:
        mailbox.save(update_fields=[*changes, "updated_at"])
        record_changes(mailbox, changes, actor=actor, via=via, before=before)
    if tags is not None:
        set_tags(mailbox, tags, actor=actor, via=via)
    return mailbox


# --- connection tests and secrets -------------------------------------------------------------
def queue_connection_tests(mailboxes: Iterable[Mailbox], *, actor, via: str) -> int:
    """Kept for callers written before health sweeps: `fleet.health.queue_tests`."""
    return health.queue_tests(mailboxes, actor=actor, via=via)


def queue_connection_test(mailbox: Mailbox, *, actor, via: str) -> None:
    """One mailbox's test; a disabled mailbox is refused with a reason."""
    if mailbox.status == Mailbox.Status.DISABLED:
        raise FleetError(
            errors.MAILBOX_DISABLED, f"{mailbox.email} is disabled; enable it to test it"
        )
    health.queue_tests([mailbox], actor=actor, via=via)


class AccountTOTP(pyotp.TOTP):
    """pyotp refuses secrets under 112 bits (NIST SP 800-63B), but Microsoft accounts and most
    services hand out 80-bit (16-character) secrets that authenticator apps accept: so do we."""

    def byte_secret(self) -> bytes:
        secret = self.secret + "=" * (-len(self.secret) % 8)
        return base64.b32decode(secret, casefold=True)


@dataclass(frozen=True)
class TotpCode:
    code: str
    valid_for: int  # seconds until it changes


@transaction.atomic
def reveal_totp(mailbox: Mailbox, *, actor, via: str) -> TotpCode:
    """The mailbox's current TOTP code (never its secret); every reveal is recorded."""
    if not mailbox.totp_secret:
        raise FleetError(errors.NO_TOTP_SECRET, f"{mailbox.email} has no TOTP secret")
    if is_unreadable(mailbox.totp_secret):
        raise FleetError(errors.SECRET_UNREADABLE, "The stored TOTP secret cannot be decrypted")
    totp = AccountTOTP(str(mailbox.totp_secret))
    code = totp.now()
    _event(mailbox, EventKind.TOTP_REVEAL, "TOTP code shown", actor=actor, via=via)
    audit.record("mailbox.totp_revealed", mailbox, actor=actor, via=via)
    return TotpCode(code, totp.interval - int(time.time()) % totp.interval)
