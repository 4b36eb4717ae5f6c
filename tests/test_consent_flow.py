"""Delegated OAuth consent end to end: Fleet (through msal, over HTTPS) against the Microsoft
sandbox on loopback, with a person's browser played by `requests`."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from fleet import consent
from fleet.models import ConsentRequest, Mailbox, MailboxEvent
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
    from fleet.sandbox.identity import validate_access_token

    assert validate_access_token("ava@acme-outreach.com", str(ava.access_token))
    assert not validate_access_token("ben@acme-outreach.com", str(ava.access_token))
