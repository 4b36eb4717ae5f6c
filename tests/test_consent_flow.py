"""Delegated OAuth consent end to end: Fleet (through msal, over HTTPS) against the Microsoft
sandbox on loopback, with a person's browser played by `requests`."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse
from django.utils import timezone

from fleet import consent
from fleet.errors import FleetError
from fleet.models import ConsentRequest, Mailbox, MailboxEvent, WebhookDelivery
from tests.browser import local_path, press


@pytest.fixture
def ava(ws_a):
    return Mailbox.objects.create(
        workspace=ws_a, email="ava@acme-outreach.com", auth_method="oauth", display_name="Ava"
    )


def start(client, consent_request) -> str:
    """Open the consent link; returns the Microsoft authorize URL it redirects to."""
    answer = client.get(reverse("consent_start", args=[consent_request.uid]))
    assert answer.status_code == 302, answer.content.decode()[:500]
    return answer["Location"]


def test_known_mailbox_consent_end_to_end(sandbox, oauth_app, ava, client):
    assert "REQUESTS_CA_BUNDLE" in __import__("os").environ  # our CA setting must win over it
    request = consent.initiate(ava.workspace, mailbox_uid=ava.uid)
    assert request.status == "queued" and request.consent_url.endswith(f"/connect/{request.uid}/")

    authorize = start(client, request)
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(sandbox.browser_url)  # the browser sees plain http on loopback
    assert query["login_hint"] == ["ava@acme-outreach.com"]
    assert query["code_challenge_method"] == ["S256"] and query["nonce"]
    assert "offline_access" in query["scope"][0] and "SMTP.Send" in query["scope"][0]
    request.refresh_from_db()
    assert request.status == "pending" and request.oauth_state

    callback = press(authorize, "ava@acme-outreach.com")
    page = client.get(local_path(callback))
    assert page.status_code == 200, page.content.decode()
    assert "Connected: ava@acme-outreach.com" in page.content.decode()

    ava.refresh_from_db()
    request.refresh_from_db()
    assert ava.status == "active" and ava.auth_method == "oauth"
    assert ava.credential == oauth_app and ava.graph_user_id
    assert ava.refresh_token and ava.access_token and ava.token_expires_at
    assert request.status == "completed" and request.completed_at and request.mailbox == ava
    assert request.oauth_state is None and not request.auth_flow
    event = MailboxEvent.objects.get(mailbox=ava, to_status="active")
    assert "OAuth consent" in event.message
    # The stored access token is one the sandbox's SMTP/IMAP servers accept for XOAUTH2.
    from sandbox.identity import validate_access_token

    assert validate_access_token("ava@acme-outreach.com", str(ava.access_token))
    assert not validate_access_token("ben@acme-outreach.com", str(ava.access_token))


def consent_for(client, mailbox, username, button="accept"):
    request = consent.initiate(mailbox.workspace, mailbox_uid=mailbox.uid)
    callback = press(start(client, request), username, button)
    return request, client.get(local_path(callback)), callback


def test_new_mailbox_consent_is_pending_until_a_manager_approves(
    sandbox, oauth_app, ws_a, personas, client_for
):
    ws_a.webhook_url, ws_a.webhook_secret = "https://hooks.example/fleet", "whsec-test"
    ws_a.save()
    manager = client_for(personas["bob"])
    page = manager.post(reverse("admin:fleet_mailbox_connect_new"), {"workspace": ws_a.pk})
    assert page.status_code == 200
    request = ConsentRequest.objects.get(workspace=ws_a, mailbox=None)
    assert request.consent_url in page.content.decode()

    callback = press(start(manager, request), "nora@acme-outreach.com")
    result = manager.get(local_path(callback))
    assert "waiting for a manager" in result.content.decode()
    nora = Mailbox.objects.get(workspace=ws_a, email="nora@acme-outreach.com")
    assert nora.status == "pending" and nora.needs_approval
    assert nora.display_name == "Nora Quinn" and nora.refresh_token
    assert nora.events.get().to_status == "pending"
    # The workspace's webhook hears of it: the pending mailbox and the consent request's steps.
    events = list(WebhookDelivery.objects.filter(workspace=ws_a).order_by("pk"))
    pending = [e for e in events if e.event == "mailbox.pending"]
    assert len(pending) == 1 and pending[0].payload["data"]["mailbox"]["email"] == nora.email
    steps = [e.payload["data"]["to"] for e in events if e.event == "consent_request.status_changed"]
    assert steps == ["pending", "processing", "completed"]

    changelist = reverse("admin:fleet_mailbox_changelist")
    start_warmup = {
        "action": "start_warmup",
        "_selected_action": [nora.pk],
        "apply": "1",
        "daily_volume": "40",
        "response_rate": "25",
    }
    manager.post(changelist, start_warmup)
    nora.refresh_from_db()
    assert nora.warmup_status == "not_started"  # refused: not approved

    # An operator may not approve; a manager may.
    client_for(personas["alice"]).post(
        changelist, {"action": "approve", "_selected_action": [nora.pk]}
    )
    nora.refresh_from_db()
    assert nora.needs_approval
    manager = client_for(personas["bob"])
    manager.post(changelist, {"action": "approve", "_selected_action": [nora.pk]})
    nora.refresh_from_db()
    assert not nora.needs_approval and nora.status == "active"

    manager.post(changelist, start_warmup)
    nora.refresh_from_db()
    assert (nora.warmup_status, nora.warmup_daily_volume, nora.warmup_response_rate) == (
        "active",
        40,
        25,
    )
    manager.post(changelist, {**start_warmup, "daily_volume": "2001"})
    nora.refresh_from_db()
    assert nora.warmup_daily_volume == 40  # out of range: refused, nothing changed
    manager.post(changelist, {"action": "pause_warmup", "_selected_action": [nora.pk]})
    nora.refresh_from_db()
    assert nora.warmup_status == "paused"


def test_signing_in_as_another_mailbox_stores_nothing(sandbox, oauth_app, ava, client):
    request, page, _ = consent_for(client, ava, "ben@acme-outreach.com")
    assert page.status_code == 400
    assert "MAILBOX_MISMATCH" in page.content.decode()
    ava.refresh_from_db()
    request.refresh_from_db()
    assert not ava.refresh_token and not ava.access_token and ava.status == "pending"
    assert request.status == "failed" and request.error_code == "MAILBOX_MISMATCH"
    assert not Mailbox.objects.filter(email="ben@acme-outreach.com").exists()


def test_denied_consent(sandbox, oauth_app, ava, client):
    request, page, callback = consent_for(client, ava, "ava@acme-outreach.com", "deny")
    assert "error=access_denied" in callback
    assert page.status_code == 400 and "CONSENT_DENIED" in page.content.decode()
    request.refresh_from_db()
    ava.refresh_from_db()
    assert request.error_code == "CONSENT_DENIED" and not ava.refresh_token
    # The person may try again from the same link, and accept this time.
    callback = press(start(client, request), "ava@acme-outreach.com")
    assert client.get(local_path(callback)).status_code == 200
    ava.refresh_from_db()
    assert ava.status == "active"


def test_admin_approval_required_then_admin_consents_then_user_connects(
    sandbox, oauth_app, ws_a, client
):
    lena = Mailbox.objects.create(
        workspace=ws_a, email="lena@globex-sales.com", auth_method="oauth"
    )
    request, page, callback = consent_for(client, lena, "lena@globex-sales.com")
    assert "AADSTS65001" in parse_qs(urlsplit(callback).query)["error_description"][0]
    body = page.content.decode()
    assert page.status_code == 400 and "ADMIN_APPROVAL_REQUIRED" in body
    admin_request = ConsentRequest.objects.get(kind="admin", credential=oauth_app)
    assert admin_request.consent_url in body

    # A non-admin cannot grant it (AADSTS90094); the tenant's administrator can.
    admin_consent_page = start(client, admin_request)
    assert "/v2.0/adminconsent?" in admin_consent_page
    refused = client.get(local_path(press(admin_consent_page, "lena@globex-sales.com")))
    assert "ADMIN_APPROVAL_REQUIRED" in refused.content.decode()
    granted = client.get(
        local_path(press(start(client, admin_request), "it-admin@globex-sales.com"))
    )
    assert granted.status_code == 200, granted.content.decode()
    oauth_app.refresh_from_db()
    assert oauth_app.admin_consented_at is not None

    callback = press(start(client, request), "lena@globex-sales.com")
    assert client.get(local_path(callback)).status_code == 200
    lena.refresh_from_db()
    assert lena.status == "active" and lena.refresh_token


def test_forged_replayed_and_expired_state(sandbox, oauth_app, ava, client):
    forged = client.get(reverse("oauth_callback"), {"code": "x", "state": "made-up"})
    assert forged.status_code == 400 and "STATE_INVALID" in forged.content.decode()
    assert "Traceback" not in forged.content.decode()
    assert client.get(reverse("oauth_callback")).status_code == 400  # no state at all

    _request, page, callback = consent_for(client, ava, "ava@acme-outreach.com")
    assert page.status_code == 200
    replay = client.get(local_path(callback))
    assert replay.status_code == 400 and "STATE_INVALID" in replay.content.decode()

    other = Mailbox.objects.create(
        workspace=ava.workspace, email="ben@acme-outreach.com", auth_method="oauth"
    )
    late = consent.initiate(other.workspace, mailbox_uid=other.uid)
    callback = press(start(client, late), "ben@acme-outreach.com")
    # The person took longer than OAUTH_STATE_TTL at Microsoft's page.
    ConsentRequest.objects.filter(pk=late.pk).update(state_expires_at=timezone.now())
    expired = client.get(local_path(callback))
    assert expired.status_code == 400 and "STATE_EXPIRED" in expired.content.decode()
    other.refresh_from_db()
    late.refresh_from_db()
    assert not other.refresh_token and late.status == "pending"  # open: the link works again
    assert client.get(local_path(callback)).status_code == 400  # and the old state is spent


def test_no_oauth_app_means_microsoft_oauth_not_configured(sandbox, ava, personas, client_for):
    with pytest.raises(FleetError) as failure:
        consent.initiate(ava.workspace, mailbox_uid=ava.uid)
    assert failure.value.code == "MICROSOFT_OAUTH_NOT_CONFIGURED"
    assert failure.value.message == "Microsoft OAuth not configured"
    manager = client_for(personas["bob"])
    page = manager.post(
        reverse("admin:fleet_mailbox_changelist"),
        {"action": "connect_with_microsoft", "_selected_action": [ava.pk]},
        follow=True,
    )
    assert "MICROSOFT_OAUTH_NOT_CONFIGURED" in page.content.decode()
    page = manager.post(reverse("admin:fleet_mailbox_connect_new"), {"workspace": ava.workspace_id})
    # The form's error is a sentence with what to do, not the internal code.
    assert "Microsoft OAuth not configured. A manager adds a credential" in page.content.decode()
    assert not ConsentRequest.objects.exists()


def test_connect_action_one_mailbox_redirects_many_give_links_and_csv(
    sandbox, oauth_app, ava, personas, client_for
):
    ben = Mailbox.objects.create(
        workspace=ava.workspace, email="ben@acme-outreach.com", auth_method="oauth"
    )
    operator = client_for(personas["alice"])
    changelist = reverse("admin:fleet_mailbox_changelist")
    one = operator.post(
        changelist, {"action": "connect_with_microsoft", "_selected_action": [ava.pk]}
    )
    assert one.status_code == 302 and one["Location"].startswith(sandbox.browser_url)
    assert "login_hint=ava%40acme-outreach.com" in one["Location"]

    many = operator.post(
        changelist, {"action": "connect_with_microsoft", "_selected_action": [ava.pk, ben.pk]}
    )
    body = many.content.decode()
    requests_made = ConsentRequest.objects.filter(mailbox=ben)
    assert many.status_code == 200 and requests_made.count() == 1
    assert requests_made.get().consent_url in body
    csv_url = re.search(r'id="consent-links-csv" href="([^"]+)"', body).group(1)
    rows = operator.get(csv_url.replace("&amp;", "&")).content.decode().splitlines()
    assert rows[0].startswith("email,kind,consent_url") and len(rows) == 3
    assert any(r.startswith("ben@acme-outreach.com,user,http://testserver/connect/") for r in rows)
