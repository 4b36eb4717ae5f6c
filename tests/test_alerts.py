"""Disconnect alerts: status changes become alert items and webhooks (`Mailbox.set_status_many`),
digest e-mails to managers and owners (fleet/alerts.py), received by a real SMTP server."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet import errors
from fleet.models import AlertItem, Mailbox, WebhookDelivery, Workspace
from tests.receivers import Receiver
from tests.test_tasks import run_workers
from tests.test_webhooks import hook_up, verify

BASE = "https://fleet.example.test"


@pytest.fixture(autouse=True)
def base_url(settings):
    settings.FLEET_BASE_URL = BASE


def make(ws: Workspace, email: str, status: str = "active", code: str = "") -> Mailbox:
    return Mailbox.objects.create(
        workspace=ws, email=email, auth_method="app_password", status=status, error_code=code
    )


def hooked(ws: Workspace) -> Workspace:
    ws.webhook_url, ws.webhook_secret = "https://hooks.example.test/in", "whsec-alerts"
    ws.save()
    return ws


def events_of(ws: Workspace) -> list[tuple[str, dict]]:
    return [
        (d.event, d.payload["data"])
        for d in WebhookDelivery.objects.filter(workspace=ws).order_by("sequence")
    ]


# --- 1. status changes become alerts ---------------------------------------------------------------
def test_an_active_mailbox_dropping_is_an_alert_and_a_webhook(ws_a):
    hooked(ws_a)
    mailbox = make(ws_a, "ann@alpha.example")
    mailbox.set_status("error", errors.INVALID_CREDENTIALS, "535 5.7.3 Authentication unsuccessful")

    item = AlertItem.objects.get()
    assert (item.mailbox, item.email, item.kind) == (mailbox, "ann@alpha.example", "disconnected")
    assert (item.from_status, item.to_status, item.error_code) == (
        "active",
        "error",
        "INVALID_CREDENTIALS",
    )
    assert item.digest is None  # waits for the digest

    (changed, first), (dropped, data) = events_of(ws_a)
    assert (changed, first["to"]) == ("mailbox.status_changed", "error")
    assert dropped == "mailbox.disconnected"
    assert data["mailbox"]["uid"] == str(mailbox.uid)
    assert data["mailbox"]["email"] == "ann@alpha.example"
    assert data["code"] == "INVALID_CREDENTIALS"
    assert data["message"] == errors.INVALID_CREDENTIALS.message
    assert data["hint"] == errors.INVALID_CREDENTIALS.hint
    assert data["link"] == f"{BASE}/admin/fleet/mailbox/{mailbox.pk}/change/"
    assert (data["from"], data["to"]) == ("active", "error")


def test_coming_back_is_a_reconnected_alert_with_the_code_it_recovered_from(ws_a):
    hooked(ws_a)
    mailbox = make(ws_a, "ann@alpha.example", "reauth_required", "REAUTH_REQUIRED")
    mailbox.set_status("active", message="Connected by Microsoft OAuth consent")

    item = AlertItem.objects.get()
    assert (item.kind, item.from_status, item.to_status) == (
        "reconnected",
        "reauth_required",
        "active",
    )
    assert item.error_code == "REAUTH_REQUIRED"
    event, data = events_of(ws_a)[-1]
    assert event == "mailbox.reconnected"
    assert (data["code"], data["hint"]) == ("REAUTH_REQUIRED", errors.REAUTH_REQUIRED.hint)
    assert data["mailbox"]["error"] is None  # it is fine now
    assert data["link"].endswith(f"/admin/fleet/mailbox/{mailbox.pk}/change/")


@pytest.mark.parametrize(
    "before, code, after, error",
    [
        ("pending", "", "error", errors.INVALID_CREDENTIALS),  # never was connected
        ("pending", "", "active", None),  # a first connection is not a recovery
        ("error", "INVALID_CREDENTIALS", "reauth_required", errors.REAUTH_REQUIRED),
        ("error", "INVALID_CREDENTIALS", "error", errors.SMTP_AUTH_DISABLED),  # another code
        ("active", "", "disabled", None),  # a person turned it off
        ("error", "INVALID_CREDENTIALS", "pending", None),  # re-enabled, not yet tested
        ("active", "", "active", None),
    ],
)
def test_other_changes_are_not_alerts(ws_a, before, code, after, error):
    hooked(ws_a)
    make(ws_a, "ann@alpha.example", before, code).set_status(after, error)
    assert not AlertItem.objects.exists()
    assert not any(e.startswith(("mailbox.dis", "mailbox.rec")) for e, _ in events_of(ws_a))


def test_many_changes_cost_the_same_queries_as_two(ws_a, ws_b):
    """One INSERT of alert items, one of webhook deliveries per workspace, whatever the count."""
    hooked(ws_a), hooked(ws_b)

    def drop(n: int, prefix: str) -> int:
        boxes = [
            make(ws, f"{prefix}{i}@{ws.slug}.example") for i in range(n) for ws in (ws_a, ws_b)
        ]
        boxes = list(
            Mailbox.objects.filter(pk__in=[b.pk for b in boxes]).select_related("workspace")
        )
        with CaptureQueriesContext(connection) as queries:
            Mailbox.set_status_many(boxes, "error", errors.CONNECTION_TIMEOUT)
        return len(queries)

    drop(1, "first")  # the workspaces' webhook counters are created on their first event
    assert drop(2, "few") == drop(20, "many")
    assert AlertItem.objects.filter(kind="disconnected").count() == 2 * (1 + 2 + 20)
    for ws in (ws_a, ws_b):
        sequences = list(
            WebhookDelivery.objects.filter(workspace=ws)
            .order_by("sequence")
            .values_list("sequence", flat=True)
        )
        assert sequences == list(range(1, 2 * 23 + 1))  # status_changed + disconnected, gapless


@pytest.fixture
def receiver(settings, monkeypatch):
    for name in ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "WEBHOOK_ALLOW_HTTP"):
        setattr(settings, name, True)
        monkeypatch.setenv(name, "true")
    monkeypatch.setenv("FLEET_BASE_URL", BASE)
    r = Receiver().start()
    yield r
    r.stop()


@pytest.mark.django_db(transaction=True)
def test_the_disconnect_webhook_reaches_a_receiver_signed_and_in_order(ws_a, receiver):
    hook_up(ws_a, receiver)
    a, b = make(ws_a, "ann@alpha.example"), make(ws_a, "ben@alpha.example")
    Mailbox.set_status_many([a, b], "reauth_required", errors.REAUTH_REQUIRED)
    run_workers(1)

    bodies = [verify(r) for r in receiver.requests]
    assert [(b["sequence"], b["event"]) for b in bodies] == [
        (1, "mailbox.status_changed"),
        (2, "mailbox.disconnected"),
        (3, "mailbox.status_changed"),
        (4, "mailbox.disconnected"),
    ]
    dropped = bodies[1]["data"]
    assert receiver.requests[1].headers["X-Fleet-Event"] == "mailbox.disconnected"
    assert (dropped["code"], dropped["hint"]) == ("REAUTH_REQUIRED", errors.REAUTH_REQUIRED.hint)
    assert dropped["link"] == f"{BASE}/admin/fleet/mailbox/{a.pk}/change/"
