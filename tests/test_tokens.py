"""Token upkeep and the HTTP chokepoint, against the Microsoft sandbox over real HTTPS."""

import os
from datetime import timedelta

import msal
import pytest
import requests
from django.urls import reverse
from django.utils import timezone

from fleet import consent
from fleet.errors import FleetError
from fleet.microsoft import identity
from fleet.microsoft.http import MicrosoftError, MicrosoftSession, request_json
from fleet.models import Mailbox
from tests.browser import local_path, press
from tests.mail_fixtures import point_at
from tests.test_tasks import run_workers


def connect(client, mailbox, prompt=None):
    request = consent.initiate(mailbox.workspace, mailbox_uid=mailbox.uid)
    answer = client.get(reverse("consent_start", args=[request.uid]), {"prompt": prompt or ""})
    page = client.get(local_path(press(answer["Location"], mailbox.email)))
    assert page.status_code == 200, page.content.decode()
    mailbox.refresh_from_db()
    return mailbox


@pytest.fixture
def ava(ws_a):
    return Mailbox.objects.create(
        workspace=ws_a, email="ava@acme-outreach.com", auth_method="oauth"
    )


def sandbox_env(sandbox, monkeypatch):
    """Worker processes read their settings from the environment: point them at the sandbox."""
    monkeypatch.setenv("MICROSOFT_AUTHORITY_HOST", sandbox.base_url)
    monkeypatch.setenv("MICROSOFT_GRAPH_URL", sandbox.graph_url)
    monkeypatch.setenv("MICROSOFT_CA_BUNDLE", sandbox.ca_file)


def test_refresh_rotation_is_persisted(sandbox, oauth_app, ava, client):
    connect(client, ava)
    first_refresh, first_access = str(ava.refresh_token), str(ava.access_token)
    assert identity.access_token_for(ava) == first_access  # still fresh: no call

    Mailbox.objects.filter(pk=ava.pk).update(token_expires_at=timezone.now())
    ava.refresh_from_db()
    token = identity.access_token_for(ava)
    stored = Mailbox.objects.get(pk=ava.pk)
    assert token != first_access and str(stored.access_token) == token
    assert str(stored.refresh_token) not in ("", first_refresh)  # the rotated one is saved
    assert stored.token_expires_at > timezone.now() + timedelta(minutes=50)
    # The sandbox rotates strictly: the old refresh token is spent, so only a saved one works.
    spent = identity.build_app(oauth_app).acquire_token_by_refresh_token(
        first_refresh, identity.OUTLOOK_SCOPES
    )
    assert spent["error"] == "invalid_grant"


@pytest.mark.django_db(transaction=True)
def test_periodic_refresh_in_a_worker_then_revoked_grant_needs_reauth_then_reconnect(
    sandbox, sandbox_mail, oauth_app, ava, client, personas, client_for, monkeypatch
):
    sandbox_env(sandbox, monkeypatch)
    point_at(ava, sandbox_mail)  # the consent queues an XOAUTH2 connection test: it must pass
    connect(client, ava)
    before = str(ava.refresh_token)
    assert ava.token_keepalive_due_at > timezone.now() + timedelta(days=5)  # set by the consent
    Mailbox.objects.filter(pk=ava.pk).update(token_keepalive_due_at=timezone.now())
    from fleet.tasks import dispatch_token_keepalive

    dispatch_token_keepalive.enqueue()
    run_workers(1)  # the dispatch, then the keep-alive task it queued
    ava.refresh_from_db()
    assert str(ava.refresh_token) != before and ava.status == "active"
    assert ava.token_keepalive_due_at > timezone.now() + timedelta(days=5)
    assert not ava.token_lease_owner

    sandbox.switches.revoked = {"ava@acme-outreach.com"}  # e.g. the password was changed
    Mailbox.objects.filter(pk=ava.pk).update(token_expires_at=timezone.now())
    ava.refresh_from_db()
    with pytest.raises(FleetError) as revoked:
        identity.access_token_for(ava)
    assert revoked.value.code == "REAUTH_REQUIRED"
    ava.refresh_from_db()
    assert ava.token_keepalive_due_at is None  # nothing left to keep alive
    assert ava.status == "reauth_required" and ava.error_code == "REAUTH_REQUIRED"
    assert "AADSTS50173" in ava.error_message
    with pytest.raises(FleetError) as failure:
        identity.access_token_for(ava)
    assert failure.value.code == "REAUTH_REQUIRED"

    sandbox.switches.revoked = set()
    answer = client_for(personas["alice"]).post(
        reverse("admin:fleet_mailbox_changelist"),
        {"action": "reconnect", "_selected_action": [ava.pk]},
    )
    assert answer.status_code == 302 and "prompt=consent" in answer["Location"]
    page = client.get(local_path(press(answer["Location"], "ava@acme-outreach.com")))
    assert page.status_code == 200
    ava.refresh_from_db()
    assert ava.status == "active" and not ava.error_code
    assert list(ava.events.values_list("to_status", flat=True))[:2] == ["active", "reauth_required"]


def test_transient_failures_leave_the_mailbox_alone(sandbox, oauth_app, ava, client):
    connect(client, ava)
    Mailbox.objects.filter(pk=ava.pk).update(token_expires_at=timezone.now())
    ava.refresh_from_db()
    sandbox.switches.server_errors = 1
    with pytest.raises(FleetError) as outage:
        identity.access_token_for(ava)
    assert outage.value.code == "MICROSOFT_UNAVAILABLE"
    ava.refresh_from_db()
    assert ava.status == "active" and not ava.token_lease_owner
    assert identity.access_token_for(ava) == str(ava.access_token)  # the next call succeeds
    assert sandbox.counts["refresh"] == 1  # the 503 was answered in front of the endpoint


def test_our_ca_setting_wins_over_requests_ca_bundle(sandbox):
    assert os.environ.get("REQUESTS_CA_BUNDLE")  # set on this machine and in CI
    url = f"{sandbox.base_url}/common/v2.0/.well-known/openid-configuration"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, timeout=5)  # plain requests trusts only the system bundle
    assert MicrosoftSession().get(url).json()["token_endpoint"].startswith(sandbox.base_url)
    # msal's own verify= loses against the environment variable; our session does not.
    app = msal.ConfidentialClientApplication(
        "x",
        client_credential="y",
        authority=f"{sandbox.base_url}/common",
        instance_discovery=False,
        http_client=MicrosoftSession(),
    )
    assert app.authority.token_endpoint.startswith(sandbox.base_url)


def test_chokepoint_errors_say_whether_to_retry(sandbox, oauth_app, ava, client, settings):
    connect(client, ava)
    graph_token = identity.build_app(oauth_app).acquire_token_by_refresh_token(
        str(ava.refresh_token), ["https://graph.microsoft.com/User.Read"]
    )["access_token"]
    me = request_json("GET", f"{settings.MICROSOFT_GRAPH_URL}/me", access_token=graph_token)
    assert me["userPrincipalName"] == "ava@acme-outreach.com" and me["id"] == ava.graph_user_id

    sandbox.switches.throttle, sandbox.switches.retry_after = 1, 7
    with pytest.raises(MicrosoftError) as throttled:
        request_json("GET", f"{settings.MICROSOFT_GRAPH_URL}/me", access_token=graph_token)
    assert throttled.value.status == 429 and not throttled.value.permanent
    assert throttled.value.retry_after == 7
    sandbox.switches.server_errors = 1
    with pytest.raises(MicrosoftError) as outage:
        request_json("GET", f"{settings.MICROSOFT_GRAPH_URL}/me", access_token=graph_token)
    assert outage.value.status == 503 and not outage.value.permanent
    with pytest.raises(MicrosoftError) as refused:
        request_json("GET", f"{settings.MICROSOFT_GRAPH_URL}/me", access_token="forged")
    assert refused.value.permanent and refused.value.code == "InvalidAuthenticationToken"

    settings.MICROSOFT_HTTP_TIMEOUT = 0.2
    sandbox.switches.latency = 0.5
    with pytest.raises(MicrosoftError) as slow:
        MicrosoftSession().get(f"{settings.MICROSOFT_GRAPH_URL}/me")
    assert not slow.value.permanent
    sandbox.switches.latency = 0
