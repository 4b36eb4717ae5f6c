"""Signed webhooks: a durable outbox of `WebhookDelivery` rows, sent by background tasks.

Each delivery is a POST of a JSON body with these headers:

- `X-Fleet-Event`: the event name, e.g. `mailbox.status_changed`
- `X-Fleet-Delivery`: the event id (also `id` in the body), the same on every retry
- `X-Fleet-Sequence`: the event's number in its workspace (also `sequence` in the body):
  gapless and increasing, so receivers put events in order and see any they are missing
- `X-Fleet-Occurred-At`: when the event happened, ISO 8601 (also `occurred_at` in the body)
- `X-Fleet-Timestamp`: Unix seconds when this attempt was signed
- `X-Fleet-Signature`: `sha256=` + hex HMAC-SHA256 over `"{timestamp}.{body}"` with the workspace's
  signing secret. Receivers recompute it, compare in constant time, and refuse old timestamps.

Events are numbered and stored by `WebhookDelivery.objects.emit` (fleet/models.py) in the
transaction that makes them happen. Sending, per workspace, one delivery at a time in `sequence`
order (`send_due`): the oldest pending delivery is the workspace's *head*; it is leased by the
sending task (fleet/leases.py) and the next one waits until it is delivered or given up, so a
receiver never gets event n+1 before event n has been answered. A head waiting for its retry
(`next_attempt_at`) holds the later events back; it stops blocking when it gives up (after
RETRY_DELAYS, about a day; a 410 at once) or when an owner stops it in the admin (*Stop
retrying*). The periodic `sweep` has every workspace with a due head sent (the retries, and
whatever a lost task left); `reclaim_expired` (the reaper) takes back a head whose sender died
mid-attempt: it is sent once more, with the same delivery id.

As in pretix and healthchecks: `timeout=10` and no redirects on every call; failures are retried with
exponential backoff for about a day; a `410 Gone` answer turns the workspace's webhook off.
Only public addresses receive webhooks (fleet/webhook_targets.py), checked at every attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import datetime, timedelta

import requests
from django.db import models, transaction
from django.db.models import OuterRef, Q, Subquery
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from fleet import leases, webhook_targets
from fleet.models import WebhookCounter, WebhookDelivery, Workspace
from fleet.secrets import is_unreadable

log = logging.getLogger(__name__)

TIMEOUT = 10  # seconds, for connect and for read
# Seconds to wait before attempt 2, 3, …: 1 min up to 12 h, about 22 h in all (8 attempts).
RETRY_DELAYS = [60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600]
EVENTS = WebhookDelivery.EVENTS
# One send task keeps going for about this long, then hands the rest to a fresh task so that a
# busy workspace does not hold a worker for ever.
SEND_BUDGET_SECONDS = 60


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


# --- sending, one workspace at a time, in sequence order ---------------------------------------
def send_due(workspace_id: int, owner: str) -> int:
    """Send the workspace's deliveries in `sequence` order while its head is due (not waiting
    for a retry, not held by another sender), for about SEND_BUDGET_SECONDS. `owner` is the
    sending task's id (the lease owner). Returns how many attempts were made."""
    deadline = time.monotonic() + SEND_BUDGET_SECONDS
    attempts = 0
    delivery = claim_head(workspace_id, owner)
    while delivery is not None:
        with leases.Heartbeat(WebhookDelivery, delivery.pk, owner):
            attempt(delivery)
        attempts += 1
        go_on = time.monotonic() < deadline
        try:
            with transaction.atomic():
                record(delivery, owner)
                # The next head is leased in the same transaction: this task never holds
                # nothing while it still has work, which the sweeper relies on.
                delivery = claim_head(workspace_id, owner) if go_on else None
        except leases.LeaseLost:
            log.warning("webhook %s: lease taken back while sending", delivery.uid)
            return attempts
        if not go_on:
            _send_soon(workspace_id)  # a fresh task goes on with the rest
    return attempts


def claim_head(
    workspace_id: int, owner: str, now: datetime | None = None
) -> WebhookDelivery | None:
    """Lease the workspace's oldest pending delivery to `owner`, if it is due and nobody holds it.
    The attempt is counted now, so an attempt whose worker died counts too."""
    now = now or timezone.now()
    with transaction.atomic():
        # The counter row is the workspace's send lock: one sender chooses at a time, and a
        # sender on another host skips the workspace rather than wait (SKIP LOCKED).
        locked = WebhookCounter.objects.select_for_update(skip_locked=True).filter(pk=workspace_id)
        if locked.values_list("pk").first() is None:
            return None
        head = (
            WebhookDelivery.objects.select_related("workspace")
            .filter(workspace_id=workspace_id, status=WebhookDelivery.Status.PENDING)
            .order_by("sequence")
            .first()
        )
        if head is None or head.lease_owner:
            return None  # nothing to send, or being sent (a dead sender's: the reaper's part)
        if head.next_attempt_at and head.next_attempt_at > now:
            return None  # waits for its retry, and the later events wait behind it
        head.attempts += 1
        head.lease_owner, head.lease_expires_at = owner, leases.lease_until(now)
        head.save(update_fields=["attempts", "lease_owner", "lease_expires_at"])
    return head


def attempt(delivery: WebhookDelivery) -> None:
    """Make one delivery attempt and set its outcome on `delivery` (`record` saves it)."""
    workspace = delivery.workspace
    if not workspace.webhooks_on:
        _give_up(delivery, "The workspace's webhook was removed or turned off.")
        return
    secret = workspace.webhook_secret
    if not secret or is_unreadable(secret):
        _give_up(
            delivery, "The signing secret is not set or cannot be decrypted (SECRET_UNREADABLE)."
        )
        return

    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Fleet-Webhooks/1",
        "X-Fleet-Event": delivery.event,
        "X-Fleet-Delivery": str(delivery.uid),
        "X-Fleet-Sequence": str(delivery.sequence),
        "X-Fleet-Occurred-At": delivery.payload.get("occurred_at", delivery.created_at.isoformat()),
        "X-Fleet-Timestamp": timestamp,
        "X-Fleet-Signature": sign(str(secret), timestamp, body),
    }
    try:
        # Checked again here, resolved once and connected to the checked address (DNS rebinding).
        response = webhook_targets.post(
            workspace.webhook_url, data=body, headers=headers, timeout=TIMEOUT
        )
        delivery.last_status_code = response.status_code
        delivery.last_error = "" if response.ok else f"HTTP {response.status_code}"
    except webhook_targets.AddressRefused as refusal:
        delivery.last_status_code = None
        delivery.last_error = f"Refused before connecting: {refusal}"[:300]
    except requests.RequestException as exc:
        delivery.last_status_code = None
        delivery.last_error = f"{type(exc).__name__}: {exc}"[:300]

    code = delivery.last_status_code
    if code is not None and 200 <= code < 300:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
        delivery.next_attempt_at = None
    elif code == 410:
        _give_up(delivery, "410 Gone: the webhook was turned off.")
    elif delivery.attempts > len(RETRY_DELAYS):
        _give_up(delivery, f"Gave up after {delivery.attempts} attempts ({delivery.last_error}).")
    else:
        delay = RETRY_DELAYS[delivery.attempts - 1]
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        log.info(
            "webhook %s attempt %s failed (%s)",
            delivery.uid,
            delivery.attempts,
            delivery.last_error,
        )


def record(delivery: WebhookDelivery, owner: str) -> None:
    """Save an attempt's outcome and give the lease back; LeaseLost if the reaper took the
    delivery from this task meanwhile (then the reaper's resend counts, not this one)."""
    saved = WebhookDelivery.objects.filter(pk=delivery.pk, lease_owner=owner).update(
        lease_owner="",
        lease_expires_at=None,
        status=delivery.status,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        next_attempt_at=delivery.next_attempt_at,
        delivered_at=delivery.delivered_at,
    )
    if not saved:
        raise leases.LeaseLost(str(delivery.uid))
    if delivery.last_status_code == 410:
        Workspace.objects.filter(pk=delivery.workspace_id).update(
            webhook_enabled=False,
            webhook_disabled_reason=f"The receiver answered 410 Gone on {timezone.now():%Y-%m-%d %H:%M} UTC.",
        )


def _give_up(delivery: WebhookDelivery, reason: str) -> None:
    delivery.status = WebhookDelivery.Status.FAILED
    delivery.next_attempt_at = None
    delivery.last_error = reason[:300]


class _SendWebhooks:
    """The on-commit callback that has a workspace's deliveries sent."""

    def __init__(self, workspace_id: int):
        self.workspace_id = workspace_id

    def __call__(self) -> None:
        from fleet.tasks import send_webhooks

        send_webhooks.enqueue(self.workspace_id)


def _send_soon(workspace_id: int) -> None:
    """A send task for the workspace once the transaction commits; one per workspace and
    transaction, however many events it emits (a bulk add's chunk emits up to 20)."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(
        isinstance(callback, _SendWebhooks) and callback.workspace_id == workspace_id
        for _, callback, _ in connection.run_on_commit
    ):
        return
    transaction.on_commit(_SendWebhooks(workspace_id))


@receiver(post_save, sender=WebhookDelivery, dispatch_uid="fleet.webhooks.send_new")
def _send_new_delivery(sender, instance: WebhookDelivery, created: bool, **kwargs) -> None:
    """A delivery stored (WebhookDelivery.objects.emit) goes out once its transaction commits;
    connected in FleetConfig.ready, so that the model layer need not import the tasks."""
    if created and instance.status == WebhookDelivery.Status.PENDING:
        _send_soon(instance.workspace_id)


# --- what people do in the admin ------------------------------------------------------------------
def retry_now(delivery: WebhookDelivery) -> None:
    """A person asked for another attempt (after fixing the receiver)."""
    WebhookDelivery.objects.filter(pk=delivery.pk).exclude(
        status=WebhookDelivery.Status.DELIVERED
    ).update(status=WebhookDelivery.Status.PENDING, next_attempt_at=None)
    _send_soon(delivery.workspace_id)


def stop_retrying(delivery: WebhookDelivery, actor=None) -> bool:
    """Give a pending delivery up now, so the workspace's later events go out (a receiver that
    will never accept this one). Not while an attempt is in flight."""
    who = f" by {actor}" if actor is not None else ""
    stopped = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=WebhookDelivery.Status.PENDING, lease_owner=""
    ).update(
        status=WebhookDelivery.Status.FAILED,
        next_attempt_at=None,
        last_error=f"Retries stopped{who} on {timezone.now():%Y-%m-%d %H:%M} UTC.",
    )
    if stopped:
        _send_soon(delivery.workspace_id)
    return bool(stopped)


# --- periodic: the sweeper and the reaper ----------------------------------------------------------
def due_heads(now: datetime) -> models.QuerySet[WebhookDelivery]:
    """Each workspace's oldest pending delivery, where it is due and nobody is sending it."""
    first_pending = (
        WebhookDelivery.objects.filter(
            workspace=OuterRef("workspace"), status=WebhookDelivery.Status.PENDING
        )
        .order_by("sequence")
        .values("sequence")[:1]
    )
    return WebhookDelivery.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        status=WebhookDelivery.Status.PENDING,
        lease_owner="",
        sequence=Subquery(first_pending),
    )


def sweep(now: datetime | None = None) -> int:
    """Periodic: have every workspace with a due head sent (a retry whose time came, a delivery
    whose send task was lost), and close the rows of send tasks that died before they leased
    anything. Returns how many workspaces were handed to a send task."""
    from fleet.tasks import send_webhooks

    now = now or timezone.now()
    # A live send task stops after its budget plus one attempt: one older than this is dead.
    oldest_live = now - timedelta(
        seconds=SEND_BUDGET_SECONDS + 3 * TIMEOUT + leases.lease_seconds()
    )
    sending = DBTaskResult.objects.filter(
        task_path=send_webhooks.module_path, status="RUNNING", started_at__lt=oldest_live
    )
    holders = WebhookDelivery.objects.exclude(lease_owner="").values_list("lease_owner", flat=True)
    leases.fail_task_rows(
        (
            str(pk)
            for pk in sending.exclude(id__in=leases.task_ids(holders)).values_list("id", flat=True)
        ),
        "Its worker stopped while sending webhooks (Fleet's sweeper handed the rest on).",
    )
    handed = 0
    for workspace_id in set(due_heads(now).values_list("workspace_id", flat=True)):
        if not leases.task_rows(send_webhooks, workspace_id).filter(status="READY").exists():
            send_webhooks.enqueue(workspace_id)
            handed += 1
    return handed


def reclaim_expired(now: datetime) -> int:
    """The reaper's part: a delivery whose sender died mid-attempt (its lease ran out) is made
    due again, its task row marked failed; it is sent once more, with the same delivery id."""
    expired = WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.PENDING, lease_expires_at__lt=now
    ).exclude(lease_owner="")
    count = 0
    for pk, owner, workspace_id in expired.values_list("pk", "lease_owner", "workspace_id"):
        with transaction.atomic():
            if leases.take_back(
                WebhookDelivery,
                pk,
                owner,
                now,
                error="Its sender stopped mid-attempt; it is sent again.",
                note=f"Its worker stopped while sending webhook delivery {pk}; "
                "Fleet's reaper has it sent again.",
            ):
                _send_soon(workspace_id)
                count += 1
    return count
