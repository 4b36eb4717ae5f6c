"""Disconnect alerts to people: digest e-mails of the mailboxes that dropped and came back.

`Mailbox.set_status_many` writes an `AlertItem` when a mailbox leaves `active` for `error` or
`reauth_required`, or comes back to `active` from them (and emits `mailbox.disconnected` /
`mailbox.reconnected`). The periodic task `send_alert_digests` then, per workspace:

1. **opens a digest** (`open_digest`) when items wait and the workspace's last digest is older
   than ALERT_DIGEST_MINUTES: in one transaction it creates the `AlertDigest`, fixes its
   recipients (the managers and owners with an e-mail address who did not opt out,
   `Membership.alert_emails`) and claims the waiting items (`digest` set), so an item is in
   exactly one digest;
2. **sends it** (`send_due`): the digest is leased to the sending task, one e-mail per recipient
   (plain text + HTML) over Django's e-mail backend (`EMAIL_*` settings), then marked `sent` in
   a fenced UPDATE. An SMTP failure is retried after 1, 5, 15 and 60 minutes, then given up.

Crash safety: items are claimed with the digest that carries them, so a worker that dies never
loses them and never puts them in a second digest. A worker that dies *after* the SMTP server
accepted the e-mails but before it marked the digest sent leaves its lease to expire; the
reaper (`reclaim_expired`) makes the digest due again and it is sent once more: at most one
extra copy per crash, never a lost digest. A failure part way through the recipients resends to
all of them (the same trade-off).

A single transient failure does not page anyone: alerts follow status changes only, and the
connection tests retry transient failures before they change a mailbox's status.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.core import mail
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from fleet import access, errors, leases
from fleet.models import AlertDigest, AlertItem, Mailbox, Membership, Role, Workspace

log = logging.getLogger(__name__)

# Seconds before attempt 2, 3, …: then the digest is given up (its items stay on it, shown in
# the admin).
RETRY_DELAYS = [60, 300, 900, 3600]
# Workspaces opened and digests sent per run: the next run (a minute later) goes on.
BATCH = 200


def window() -> timedelta:
    return timedelta(minutes=settings.ALERT_DIGEST_MINUTES)


def recipients_of(workspace_id: int) -> list[dict]:
    """Who a workspace's digest goes to: managers and owners with an e-mail address who did not
    opt out, one entry per address (a person is told once)."""
    rows = (
        access.holders(workspace_id, Role.MANAGER)
        .filter(alert_emails=True)
        .exclude(user__email="")
        .order_by("user__email", "pk")
        .values_list("user__email", "pk", "role")
    )
    seen, recipients = set(), []
    for email, membership_id, role in rows:
        if email.lower() not in seen:
            seen.add(email.lower())
            recipients.append({"email": email, "membership": membership_id, "role": role})
    return recipients


# --- 1. opening digests -------------------------------------------------------------------------
def due_workspaces(now: datetime) -> list[int]:
    """Workspaces with items waiting and no digest within the window (one query, on the partial
    index of waiting items)."""
    recent = AlertDigest.objects.filter(
        workspace_id=OuterRef("workspace_id"), created_at__gt=now - window()
    )
    return list(
        AlertItem.objects.filter(digest__isnull=True, created_at__lte=now)
        .exclude(Exists(recent))
        .order_by()
        .values_list("workspace_id", flat=True)
        .distinct()[:BATCH]
    )


def open_digest(workspace_id: int, now: datetime | None = None) -> AlertDigest | None:
    """Make the workspace's next digest and claim its waiting items, in one transaction; None
    when the window is not over or nothing waits (another worker may just have taken them)."""
    now = now or timezone.now()
    with transaction.atomic():
        # The workspace row serializes openers of one workspace (PostgreSQL; SQLite's writes
        # are serial anyway), so two workers cannot both open a digest inside one window.
        if Workspace.objects.select_for_update().filter(pk=workspace_id).first() is None:
            return None
        if AlertDigest.objects.filter(
            workspace_id=workspace_id, created_at__gt=now - window()
        ).exists():
            return None
        recipients = recipients_of(workspace_id)
        digest = AlertDigest.objects.create(
            workspace_id=workspace_id,
            recipients=recipients,
            created_at=now,
            status=AlertDigest.Status.PENDING if recipients else AlertDigest.Status.NO_RECIPIENTS,
        )
        claimed = AlertItem.objects.filter(
            workspace_id=workspace_id, digest__isnull=True, created_at__lte=now
        ).update(digest=digest)
        if not claimed:
            transaction.set_rollback(True)
            return None
    if not recipients:
        log.info("alert digest %s: no manager or owner wants alert e-mails", digest.pk)
    return digest


# --- 2. sending -----------------------------------------------------------------------------------
def due_digests(now: datetime):
    return AlertDigest.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        status=AlertDigest.Status.PENDING,
        lease_owner="",
    )


def send_due(owner: str, now: datetime | None = None) -> dict[str, int]:
    """Periodic (task `send_alert_digests`): open the digests that are due, then send every
    digest waiting to go. `owner` is the task's id (the lease owner)."""
    now = now or timezone.now()
    opened = sum(open_digest(ws, now) is not None for ws in due_workspaces(now))
    sent = failed = 0
    for pk in due_digests(now).order_by("created_at").values_list("pk", flat=True)[:BATCH]:
        claimable = due_digests(now).filter(pk=pk)
        if not leases.claim(claimable, owner, attempts=F("attempts") + 1):
            continue  # another sender took it
        digest = AlertDigest.objects.select_related("workspace").get(pk=pk)
        try:
            with leases.Heartbeat(AlertDigest, pk, owner):
                deliver(digest)
        except (smtplib.SMTPException, OSError) as exc:
            failed += 1
            record_failure(digest, owner, f"{type(exc).__name__}: {exc}")
            continue
        if leases.release(
            AlertDigest, pk, owner, status=AlertDigest.Status.SENT, sent_at=timezone.now()
        ):
            sent += 1
        else:
            log.warning("alert digest %s: lease taken back while sending", pk)
    return {"opened": opened, "sent": sent, "failed": failed}


def record_failure(digest: AlertDigest, owner: str, error: str) -> None:
    """Retry after the next delay, or give up after the last one."""
    attempts = AlertDigest.objects.values_list("attempts", flat=True).get(pk=digest.pk)
    if attempts > len(RETRY_DELAYS):
        changes = {"status": AlertDigest.Status.FAILED, "next_attempt_at": None}
    else:
        later = timezone.now() + timedelta(seconds=RETRY_DELAYS[attempts - 1])
        changes = {"next_attempt_at": later}
    log.warning("alert digest %s attempt %s failed: %s", digest.pk, attempts, error)
    leases.release(AlertDigest, digest.pk, owner, last_error=error[:300], **changes)


def reclaim_expired(now: datetime) -> int:
    """The reaper's part: a digest whose sender died (its lease ran out) is due again, and a
    send task is queued; it is sent once more (its recipients may get it twice if the first
    copy went out)."""
    expired = AlertDigest.objects.filter(
        status=AlertDigest.Status.PENDING, lease_expires_at__lt=now
    ).exclude(lease_owner="")
    count = 0
    for pk, owner in expired.values_list("pk", "lease_owner"):
        if leases.take_back(
            AlertDigest,
            pk,
            owner,
            now,
            error="Its sender stopped mid-send; it is sent again.",
            note=f"Its worker stopped while sending alert digest {pk}; Fleet's reaper has it "
            "sent again.",
        ):
            count += 1
    if count:
        from fleet.tasks import enqueue_on_commit, send_alert_digests

        enqueue_on_commit(send_alert_digests)  # at once, not at the next periodic run
    return count


# --- the e-mail -----------------------------------------------------------------------------------
def mailbox_list_url(workspace_id: int, **filters: str) -> str:
    """The admin's mailbox list of one workspace, filtered (absolute, for e-mails)."""
    params = {"workspace__id__exact": workspace_id, **filters}
    return (
        f"{settings.FLEET_BASE_URL}{reverse('admin:fleet_mailbox_changelist')}?{urlencode(params)}"
    )


def context_of(digest: AlertDigest) -> dict:
    """What a digest says: the drops (code, message, hint, link), the recoveries, and links to
    the workspace's failing mailboxes (all, and per code)."""
    items = list(digest.items.order_by("created_at", "id"))
    # The mailboxes' state now: a drop that has come back since says so.
    current = dict(
        Mailbox.objects.filter(pk__in=[i.mailbox_id for i in items if i.mailbox_id]).values_list(
            "pk", "status"
        )
    )
    dropped, recovered, codes = [], [], {}
    for item in items:
        entry = errors.get(item.error_code)
        line = {
            "email": item.email,
            "from": item.from_status,
            "to": item.to_status,
            "when": item.created_at,
            "code": item.error_code,
            "message": entry.message if entry else item.message,
            "detail": item.message if entry and item.message != entry.message else "",
            "hint": entry.hint if entry else "",
            "link": (
                f"{settings.FLEET_BASE_URL}"
                f"{reverse('admin:fleet_mailbox_change', args=[item.mailbox_id])}"
                if item.mailbox_id and item.mailbox_id in current
                else ""
            ),
            "now": current.get(item.mailbox_id, "deleted"),
        }
        if item.kind == AlertItem.Kind.DISCONNECTED:
            dropped.append(line)
            if item.error_code:
                codes.setdefault(item.error_code, {"code": item.error_code, "count": 0})
                codes[item.error_code]["count"] += 1
        else:
            recovered.append(line)
    for code in codes.values():
        code["link"] = mailbox_list_url(digest.workspace_id, error_code=code["code"])
    return {
        "workspace": digest.workspace,
        "dropped": dropped,
        "recovered": recovered,
        "codes": sorted(codes.values(), key=lambda c: (-c["count"], c["code"])),
        "failing_link": mailbox_list_url(
            digest.workspace_id,
            status__in=f"{Mailbox.Status.ERROR},{Mailbox.Status.REAUTH_REQUIRED}",
        ),
        "window_minutes": settings.ALERT_DIGEST_MINUTES,
    }


def subject_of(context: dict) -> str:
    parts = []
    if context["dropped"]:
        n = len(context["dropped"])
        parts.append(f"{n} mailbox{'es' if n != 1 else ''} disconnected")
    if context["recovered"]:
        parts.append(f"{len(context['recovered'])} reconnected")
    return f"[Fleet] {context['workspace'].name}: {', '.join(parts)}"


def messages_of(digest: AlertDigest) -> list[mail.EmailMultiAlternatives]:
    """One e-mail per recipient (each names their own opt-out link), plain text and HTML."""
    context = context_of(digest)
    subject = subject_of(context)
    messages = []
    for recipient in digest.recipients:
        personal = {
            **context,
            "role": dict(Role.choices).get(recipient["role"], recipient["role"]).lower(),
            "opt_out_link": settings.FLEET_BASE_URL
            + reverse("admin:fleet_membership_change", args=[recipient["membership"]]),
        }
        message = mail.EmailMultiAlternatives(
            subject,
            render_to_string("fleet/alerts/digest.txt", personal),
            settings.DEFAULT_FROM_EMAIL,
            [recipient["email"]],
            headers={"X-Fleet-Digest": str(digest.pk), "Auto-Submitted": "auto-generated"},
        )
        message.attach_alternative(
            render_to_string("fleet/alerts/digest.html", personal), "text/html"
        )
        messages.append(message)
    return messages


def deliver(digest: AlertDigest) -> int:
    """Send the digest's e-mails over one connection; raises on an SMTP failure."""
    messages = messages_of(digest)
    with mail.get_connection(fail_silently=False) as connection:
        return connection.send_messages(messages) or 0


# --- the opt-out -----------------------------------------------------------------------------------
def set_alert_emails(membership: Membership, on: bool, actor) -> bool:
    """Turn a member's alert e-mails on or off (themselves, or a manager of the workspace);
    PermissionError otherwise. Returns whether anything changed."""
    if not access.may_change_alert_emails(actor, membership):
        raise PermissionError(errors.PERMISSION_DENIED.message)
    changed = (
        Membership.objects.filter(pk=membership.pk).exclude(alert_emails=on).update(alert_emails=on)
    )
    membership.alert_emails = on
    return bool(changed)
