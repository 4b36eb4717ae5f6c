"""Signed webhooks: a durable outbox of `WebhookDelivery` rows, delivered by background tasks.

Each delivery is a POST of a JSON body with these headers:

- `X-Fleet-Event`: the event name, e.g. `mailbox.status_changed`
- `X-Fleet-Delivery`: the event id (also `id` in the body), the same on every retry
- `X-Fleet-Timestamp`: Unix seconds when this attempt was signed
- `X-Fleet-Signature`: `sha256=` + hex HMAC-SHA256 over `"{timestamp}.{body}"` with the workspace's
  signing secret. Receivers recompute it, compare in constant time, and refuse old timestamps.

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
from datetime import timedelta

import requests
from django.db import transaction
from django.utils import timezone

from fleet import webhook_targets
from fleet.models import WebhookDelivery, Workspace
from fleet.secrets import is_unreadable

log = logging.getLogger(__name__)

TIMEOUT = 10  # seconds, for connect and for read
# Seconds to wait before attempt 2, 3, …: 1 min up to 12 h, about 22 h in all (8 attempts).
RETRY_DELAYS = [60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600]
EVENTS = {
    "mailbox.pending": "A mailbox was connected and waits for a manager's approval",
    "mailbox.status_changed": "A mailbox's connection status changed",
    "consent_request.status_changed": "A consent request moved to another status",
    "webhook.test": "A test event sent from the admin",
}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def emit(workspace: Workspace, event: str, data: dict) -> WebhookDelivery | None:
    """Store `event` for the workspace's webhook and deliver it once the transaction commits.
    Does nothing when the workspace has no webhook (or it was turned off)."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    if not workspace.webhooks_on:
        return None
    delivery = WebhookDelivery(workspace=workspace, event=event)
    delivery.payload = {
        "id": str(delivery.uid),
        "event": event,
        "created_at": delivery.created_at.isoformat(),
        "workspace": {"slug": workspace.slug, "name": workspace.name},
        "data": data,
    }
    delivery.save()
    _enqueue(delivery.pk)
    return delivery


def _enqueue(delivery_id: int, run_after=None) -> None:
    from fleet.tasks import deliver_webhook, enqueue_on_commit

    task = deliver_webhook.using(run_after=run_after) if run_after else deliver_webhook
    enqueue_on_commit(task, delivery_id)


def deliver(delivery_id: int) -> None:
    """Make one delivery attempt and record its outcome; schedule the next one if it failed."""
    delivery = (
        WebhookDelivery.objects.select_related("workspace")
        .filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING)
        .first()
    )
    if delivery is None:
        return  # delivered, given up, or deleted meanwhile
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
        "X-Fleet-Timestamp": timestamp,
        "X-Fleet-Signature": sign(str(secret), timestamp, body),
    }
    delivery.attempts += 1
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
        delivery.save()
    elif code == 410:
        with transaction.atomic():
            Workspace.objects.filter(pk=workspace.pk).update(
                webhook_enabled=False,
                webhook_disabled_reason=f"The receiver answered 410 Gone on {timezone.now():%Y-%m-%d %H:%M} UTC.",
            )
            _give_up(delivery, "410 Gone: the webhook was turned off.")
    elif delivery.attempts > len(RETRY_DELAYS):
        _give_up(delivery, f"Gave up after {delivery.attempts} attempts ({delivery.last_error}).")
    else:
        delay = RETRY_DELAYS[delivery.attempts - 1]
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        with transaction.atomic():
            delivery.save()
            _enqueue(delivery.pk, run_after=delivery.next_attempt_at)
        log.info(
            "webhook %s attempt %s failed (%s)",
            delivery.uid,
            delivery.attempts,
            delivery.last_error,
        )


def _give_up(delivery: WebhookDelivery, reason: str) -> None:
    delivery.status = WebhookDelivery.Status.FAILED
    delivery.next_attempt_at = None
    delivery.last_error = reason[:300]
    delivery.save()


def retry_now(delivery: WebhookDelivery) -> None:
    """A person asked for another attempt (after fixing the receiver)."""
    delivery.status = WebhookDelivery.Status.PENDING
    delivery.next_attempt_at = None
    delivery.save(update_fields=["status", "next_attempt_at"])
    _enqueue(delivery.pk)
