"""Issue 12 item 4: what disconnect alerts cost where they are made and where they are sent.

- A chunk of mailboxes of one workspace (webhook on) dropping in one `Mailbox.set_status_many`
  call: its events, alert items and webhooks (`mailbox.status_changed` + `mailbox.disconnected`
  each) in a fixed number of statements, beside the same rows written one event at a time
  (`WebhookDelivery.objects.emit` per event and an alert row per mailbox, as a per-mailbox hook
  would). Floor: five statements (events, status, alert items, sequence numbers, deliveries);
  SQLite splits the larger INSERTs into batches (its limit on query parameters).
- 200 drops inside one digest window: e-mails sent to the workspace's two managers, beside one
  e-mail per change and person. Floor: one per person.
"""

from __future__ import annotations

import time
from functools import partial

from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import reverse
from django.utils import timezone

from fleet import alerts, errors
from fleet.models import (
    AlertItem,
    Mailbox,
    MailboxEvent,
    Membership,
    Role,
    WebhookDelivery,
    Workspace,
)
from tests.bench.runner import Row

SIZES = (20, 200)


def workspace(slug: str) -> Workspace:
    ws = Workspace.objects.create(
        name=slug, slug=slug, webhook_url="https://hooks.example.test/in", webhook_secret="s"
    )
    WebhookDelivery.objects.emit(ws, "webhook.test", {})  # its sequence counter exists
    return ws


def boxes(ws: Workspace, n: int) -> list[Mailbox]:
    Mailbox.objects.bulk_create(
        Mailbox(
            workspace=ws,
            email=f"m{i}@{ws.slug}.example",
            auth_method="app_password",
            status="active",
        )
        for i in range(n)
    )
    return list(Mailbox.objects.filter(workspace=ws).select_related("workspace"))


def one_at_a_time(mailboxes: list[Mailbox], error: errors.ErrorCode) -> None:
    """The baseline: the same rows, one statement group per mailbox and event."""
    with transaction.atomic():
        MailboxEvent.objects.bulk_create(
            MailboxEvent(
                workspace_id=m.workspace_id,
                mailbox=m,
                email=m.email,
                from_status=m.status,
                to_status="error",
                error_code=error.code,
            )
            for m in mailboxes
        )
        Mailbox.objects.filter(pk__in=[m.pk for m in mailboxes]).update(
            status="error", error_code=error.code
        )
        for m in mailboxes:
            previous, m.status, m.error_code = m.status, "error", error.code
            data = m.webhook_data()
            WebhookDelivery.objects.emit(
                m.workspace,
                "mailbox.status_changed",
                {"mailbox": data, "from": previous, "to": "error"},
            )
            item = AlertItem.for_change(m, previous, "", timezone.now())
            item.save()
            WebhookDelivery.objects.emit(m.workspace, item.webhook_event, item.webhook_data(data))


def measure(fn) -> tuple[int, float]:
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        fn()
    return len(queries), (time.perf_counter() - started) * 1000


def run() -> list[Row]:
    reverse("admin:index")  # the URLconf loads once, outside the timings (links are reversed)
    rows = []
    for n in SIZES:
        fleet_ws, base_ws = workspace(f"fleet{n}"), workspace(f"base{n}")
        fleet_boxes, base_boxes = boxes(fleet_ws, n), boxes(base_ws, n)
        fleet_q, fleet_ms = measure(
            partial(Mailbox.set_status_many, fleet_boxes, "error", errors.CONNECTION_TIMEOUT)
        )
        base_q, base_ms = measure(partial(one_at_a_time, base_boxes, errors.CONNECTION_TIMEOUT))
        for ws in (fleet_ws, base_ws):  # the same rows either way
            assert WebhookDelivery.objects.filter(workspace=ws).count() == 2 * n + 1
            assert AlertItem.objects.filter(workspace=ws).count() == n
        scenario = f"{n} mailboxes drop (set_status_many)"
        rows.append(Row(scenario, "SQL statements", fleet_q, base_q, 5))
        rows.append(Row(scenario, "wall time", round(fleet_ms, 1), round(base_ms, 1), None, "ms"))

    ws = Workspace.objects.create(name="Digest", slug="digest")
    for name in ("m1", "m2"):
        user = get_user_model().objects.create_user(name, f"{name}@agency.example", "x")
        Membership.objects.create(user=user, workspace=ws, role=Role.MANAGER)
    Mailbox.set_status_many(boxes(ws, 200), "error", errors.INVALID_CREDENTIALS)
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        mail.outbox = []
        measure(lambda: alerts.send_due(owner="bench"))
        sent = len(mail.outbox)
    rows.append(Row("200 drops in one window, 2 managers", "e-mails sent", sent, 200 * 2, 2))
    return rows
