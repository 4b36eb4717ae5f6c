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


def emit(ws, event="webhook.test", data=None):
    return WebhookDelivery.objects.emit(ws, event, data or {})


def send(ws) -> int:
    """What a send task does, in this process."""
    return webhooks.send_due(ws.pk, owner="test-sender")


@pytest.mark.django_db(transaction=True)
def test_retried_after_500_then_delivered(ws_a, receiver):
    receiver.statuses = [500, 200]
    hook_up(ws_a, receiver)
    delivery = emit(ws_a, data={"n": 1})
    run_workers(1)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    wait = delivery.next_attempt_at - timezone.now()
    assert timedelta(seconds=50) < wait <= timedelta(seconds=60)  # first backoff step
    assert not DBTaskResult.objects.filter(status="READY").exists()  # the sweeper's job now

    assert webhooks.sweep() == 0  # not due yet: nothing is handed on
    run_workers(1)
    assert len(receiver.requests) == 1

    later = delivery.next_attempt_at + timedelta(seconds=1)  # time passes
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert webhooks.sweep(later) == 1
    run_workers(1)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)
    ids = {r.headers["X-Fleet-Delivery"] for r in receiver.requests}
    assert ids == {str(delivery.uid)}  # the same event id on every attempt


@pytest.mark.django_db(transaction=True)
def test_410_turns_the_webhook_off(ws_a, receiver):
    receiver.statuses = [410]
    hook_up(ws_a, receiver)
    delivery = emit(ws_a)
    run_workers(1)
    delivery.refresh_from_db()
    ws_a.refresh_from_db()
    assert delivery.status == "failed" and delivery.last_status_code == 410
    assert not ws_a.webhook_enabled and "410" in ws_a.webhook_disabled_reason
    assert emit(ws_a) is None  # nothing more is queued
    assert len(receiver.requests) == 1


def test_redirects_are_not_followed(ws_a, receiver):
    receiver.statuses = [302]
    hook_up(ws_a, receiver)
    delivery = emit(ws_a)
    assert send(ws_a) == 1
    delivery.refresh_from_db()
    assert delivery.last_status_code == 302 and delivery.status == "pending"
    assert len(receiver.requests) == 1


def test_gives_up_after_about_a_day(ws_a, receiver):
    receiver.statuses = [503]
    hook_up(ws_a, receiver)
    assert 20 * 3600 < sum(webhooks.RETRY_DELAYS) < 26 * 3600
    delivery = emit(ws_a)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=len(webhooks.RETRY_DELAYS))
    send(ws_a)
    delivery.refresh_from_db()
    assert delivery.status == "failed" and "Gave up" in delivery.last_error


def test_unreachable_receiver_is_retried(ws_a, receiver):
    hook_up(ws_a, receiver)
    url = receiver.url
    receiver.stop()  # nobody listens there any more
    delivery = emit(ws_a)
    send(ws_a)
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
    other = emit(ws_b)

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


def test_sequences_are_per_workspace_gapless_and_given_back_on_rollback(ws_a, ws_b, receiver):
    from django.db import transaction

    hook_up(ws_a, receiver)
    hook_up(ws_b, receiver)
    assert emit(ws_a).sequence == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        assert emit(ws_a).sequence == 2
        raise RuntimeError("the change that emitted it failed")
    assert emit(ws_b).sequence == 1  # each workspace counts on its own
    second = emit(ws_a)
    assert second.sequence == 2  # the rolled-back number is used again: no gap
    assert second.payload["sequence"] == 2 and second.payload["occurred_at"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_emits_get_distinct_gapless_sequences(ws_a, receiver):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    hook_up(ws_a, receiver)

    def emit_some(n):
        try:
            return [emit(ws_a).sequence for _ in range(n)]
        finally:
            connection.close()

    with ThreadPoolExecutor(4) as pool:
        got = sorted(s for chunk in pool.map(emit_some, [10] * 4) for s in chunk)
    assert got == list(range(1, 41))


def test_later_events_wait_behind_a_failing_one_until_it_gives_up(ws_a, receiver):
    receiver.statuses = [503, 200]
    hook_up(ws_a, receiver)
    first, second = emit(ws_a), emit(ws_a)
    assert send(ws_a) == 1  # the first failed; the second waits behind it
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.attempts, second.attempts) == ("pending", 1, 0)
    assert send(ws_a) == 0  # its retry is not due: nothing goes out of order
    assert webhooks.stop_retrying(first)  # an owner gives it up in the admin
    assert send(ws_a) == 1
    second.refresh_from_db()
    assert second.status == "delivered"
    got = [r.headers["X-Fleet-Sequence"] for r in receiver.requests]
    assert got == ["1", "2"]
    assert receiver.requests[1].headers["X-Fleet-Occurred-At"] == second.payload["occurred_at"]


def test_admin_shows_deliveries_waiting_failing_and_stranded(ws_a, personas, client_for, receiver):
    from fleet.models import Membership

    Membership.objects.filter(user=personas["bob"], workspace=ws_a).update(role="owner")
    hook_up(ws_a, receiver)
    failing, waiting = emit(ws_a), emit(ws_a)
    WebhookDelivery.objects.filter(pk=failing.pk).update(
        attempts=1, last_error="HTTP 503", next_attempt_at=timezone.now() + timedelta(minutes=1)
    )
    stranded = emit(ws_a)  # an earlier sender died holding it
    WebhookDelivery.objects.filter(pk=stranded.pk).update(
        lease_owner="dead", lease_expires_at=timezone.now() - timedelta(minutes=1), attempts=1
    )
    c = client_for(personas["bob"])
    url = reverse("admin:fleet_webhookdelivery_changelist")

    def shown(state):
        response = c.get(url, {"delivery": state})
        assert response.status_code == 200
        return {d.pk for d in response.context["cl"].result_list}

    assert shown("failing") == {failing.pk}
    assert shown("waiting") == {waiting.pk}
    assert shown("stranded") == {stranded.pk}
    assert shown("sending") == set()
    response = c.post(url, {"action": "stop_retrying", "_selected_action": [failing.pk]})
    assert response.status_code == 302
    failing.refresh_from_db()
    assert failing.status == "failed" and "Retries stopped by bob" in failing.last_error
