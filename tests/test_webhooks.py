import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from fleet import errors, webhooks
from fleet.models import Mailbox, WebhookDelivery, Workspace
from tests.receivers import Receiver
from tests.test_tasks import run_workers

SECRET = "whsec-test-signing-secret"


@pytest.fixture
def receiver(settings, monkeypatch):
    """A plain-http receiver on loopback: allowed here (and in workers) by the two settings that
    let an agency receive on its own network (fleet/webhook_targets.py)."""
    for name in ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "WEBHOOK_ALLOW_HTTP"):
        setattr(settings, name, True)
        monkeypatch.setenv(name, "true")
    r = Receiver().start()
    yield r
    r.stop()


def hook_up(ws: Workspace, receiver: Receiver) -> Workspace:
    ws.webhook_url = receiver.url
    ws.webhook_secret = SECRET
    ws.save()
    return ws


def verify(received) -> dict:
    """What a receiver does: recompute the signature independently and compare."""
    timestamp = received.headers["X-Fleet-Timestamp"]
    expected = hmac.new(
        SECRET.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(received.headers["X-Fleet-Signature"], f"sha256={expected}")
    assert abs(int(timestamp) - timezone.now().timestamp()) < 120
    return json.loads(received.body)


@pytest.mark.django_db(transaction=True)
def test_status_change_is_delivered_signed(ws_a, receiver):
    hook_up(ws_a, receiver)
    mailbox = Mailbox.objects.create(workspace=ws_a, email="w@alpha.example", auth_method="oauth")
    mailbox.set_status("error", errors.SECRET_UNREADABLE)
    run_workers(1)

    assert len(receiver.requests) == 1
    got = receiver.requests[0]
    body = verify(got)
    delivery = WebhookDelivery.objects.get()
    assert got.headers["X-Fleet-Event"] == "mailbox.status_changed"
    assert got.headers["X-Fleet-Delivery"] == str(delivery.uid) == body["id"]
    assert body["data"]["from"] == "pending" and body["data"]["to"] == "error"
    assert body["data"]["mailbox"]["error"]["code"] == "SECRET_UNREADABLE"
    assert body["data"]["mailbox"]["email"] == "w@alpha.example"
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)


def test_a_tampered_body_fails_verification():
    body = b'{"id":"1"}'
    signature = webhooks.sign(SECRET, "1700000000", body)
    forged = webhooks.sign(SECRET, "1700000000", b'{"id":"2"}')
    assert signature != forged
    assert signature != webhooks.sign("other-secret", "1700000000", body)


@pytest.mark.django_db(transaction=True)
def test_retried_after_500_then_delivered(ws_a, receiver):
    receiver.statuses = [500, 200]
    hook_up(ws_a, receiver)
    delivery = webhooks.emit(ws_a, "webhook.test", {"n": 1})
    run_workers(1)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    wait = delivery.next_attempt_at - timezone.now()
    assert timedelta(seconds=50) < wait <= timedelta(seconds=60)  # first backoff step
    waiting = DBTaskResult.objects.filter(status="READY").get()
    assert waiting.run_after > timezone.now()

    run_workers(1)  # not due yet: nothing happens
    assert len(receiver.requests) == 1

    DBTaskResult.objects.filter(pk=waiting.pk).update(run_after=timezone.now())  # time passes
    run_workers(1)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)
    ids = {r.headers["X-Fleet-Delivery"] for r in receiver.requests}
    assert ids == {str(delivery.uid)}  # the same event id on every attempt


@pytest.mark.django_db(transaction=True)
def test_410_turns_the_webhook_off(ws_a, receiver):
    receiver.statuses = [410]
    hook_up(ws_a, receiver)
    delivery = webhooks.emit(ws_a, "webhook.test", {})
    run_workers(1)
    delivery.refresh_from_db()
    ws_a.refresh_from_db()
    assert delivery.status == "failed" and delivery.last_status_code == 410
    assert not ws_a.webhook_enabled and "410" in ws_a.webhook_disabled_reason
    assert webhooks.emit(ws_a, "webhook.test", {}) is None  # nothing more is queued
    assert len(receiver.requests) == 1


def test_redirects_are_not_followed(ws_a, receiver):
    receiver.statuses = [302]
    hook_up(ws_a, receiver)
    delivery = WebhookDelivery.objects.create(workspace=ws_a, event="webhook.test", payload={})
    webhooks.deliver(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.last_status_code == 302 and delivery.status == "pending"
    assert len(receiver.requests) == 1


def test_gives_up_after_about_a_day(ws_a, receiver):
    receiver.statuses = [503]
    hook_up(ws_a, receiver)
    assert 20 * 3600 < sum(webhooks.RETRY_DELAYS) < 26 * 3600
    delivery = WebhookDelivery.objects.create(
        workspace=ws_a, event="webhook.test", payload={}, attempts=len(webhooks.RETRY_DELAYS)
    )
    webhooks.deliver(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "failed" and "Gave up" in delivery.last_error


def test_unreachable_receiver_is_retried(ws_a, receiver):
    hook_up(ws_a, receiver)
    url = receiver.url
    receiver.stop()  # nobody listens there any more
    delivery = WebhookDelivery.objects.create(workspace=ws_a, event="webhook.test", payload={})
    webhooks.deliver(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.last_status_code is None
    assert "ConnectionError" in delivery.last_error and url
    receiver.start()  # so that the fixture can stop it


def test_no_webhook_no_delivery(ws_a):
    m = Mailbox.objects.create(workspace=ws_a, email="q@alpha.example", auth_method="oauth")
    m.set_status("active")
    assert not WebhookDelivery.objects.exists()


def test_webhook_url_needs_a_secret(ws_a):
    from django.core.exceptions import ValidationError

    ws_a.webhook_url = "https://hooks.example.com/fleet"
    with pytest.raises(ValidationError, match="signing secret"):
        ws_a.full_clean()


def test_admin_lists_deliveries_and_sends_test_events(ws_a, ws_b, personas, client_for, receiver):
    from fleet.models import Membership

    owner = personas["bob"]
    Membership.objects.filter(user=owner, workspace=ws_a).update(role="owner")
    hook_up(ws_a, receiver)
    hook_up(ws_b, receiver)
    other = webhooks.emit(ws_b, "webhook.test", {})

    c = client_for(owner)
    response = c.post(
        reverse("admin:fleet_workspace_changelist"),
        {"action": "send_test_event", "_selected_action": [ws_a.pk, ws_b.pk]},
    )
    assert response.status_code == 302
    # Only A, where bob is owner; he is a mere viewer of B.
    assert WebhookDelivery.objects.filter(workspace=ws_a, event="webhook.test").count() == 1
    assert WebhookDelivery.objects.filter(workspace=ws_b).count() == 1

    page = c.get(reverse("admin:fleet_webhookdelivery_changelist")).content.decode()
    assert "webhook.test" in page
    shown = c.get(reverse("admin:fleet_webhookdelivery_changelist")).context["cl"].result_list
    assert {d.workspace_id for d in shown} == {ws_a.pk}
    url = reverse("admin:fleet_webhookdelivery_change", args=[other.pk])
    assert c.get(url).status_code == 404
    # Operators do not see deliveries at all.
    assert (
        client_for(personas["alice"])
        .get(reverse("admin:fleet_webhookdelivery_changelist"))
        .status_code
        == 403
    )
    # The signing secret is never shown back.
    assert (
        SECRET
        not in c.get(reverse("admin:fleet_workspace_change", args=[ws_a.pk])).content.decode()
    )
