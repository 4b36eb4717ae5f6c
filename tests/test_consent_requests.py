"""Consent requests: kinds, status changes, expiry, tenant isolation; admin consent for a
credential; the deploy check that keeps production off the sandbox."""

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.urls import reverse
from django.utils import timezone

from fleet import consent
from fleet.errors import FleetError
from fleet.models import ConsentRequest, Credential
from tests.browser import local_path, press
from tests.test_tasks import run_workers
from tests.test_tokens import sandbox_env

CHANGELIST = "admin:fleet_consentrequest_changelist"


@pytest.fixture
def graph_app(sandbox, ws_a):
    app = sandbox.directory.add_app(
        "99999999-2222-4333-8444-555555555555", "graph-secret", "Bulk add"
    )
    return Credential.objects.create(
        workspace=ws_a,
        name="Graph app",
        kind=Credential.Kind.GRAPH_APP_ONLY,
        tenant_id="organizations",
        client_id=app.client_id,
        client_secret=app.client_secret,
    )


@pytest.mark.django_db(transaction=True)
def test_admin_consent_for_a_credential(sandbox, graph_app, personas, client_for, monkeypatch):
    sandbox_env(sandbox, monkeypatch)
    manager = client_for(personas["bob"])
    page = manager.post(
        reverse("admin:fleet_credential_changelist"),
        {"action": "request_admin_consent", "_selected_action": [graph_app.pk]},
    )
    request = ConsentRequest.objects.get(kind="admin", credential=graph_app)
    assert request.status == "queued" and request.consent_url in page.content.decode()

    consent_page = manager.get(reverse("consent_start", args=[request.uid]))["Location"]
    query = parse_qs(urlsplit(consent_page).query)
    assert "/organizations/v2.0/adminconsent" in consent_page
    assert query["scope"] == ["https://graph.microsoft.com/.default"]
    callback = press(consent_page, "it-admin@acme-outreach.com")
    assert "admin_consent=True" in callback
    assert manager.get(local_path(callback)).status_code == 200

    graph_app.refresh_from_db()
    request.refresh_from_db()
    assert request.status == "completed" and graph_app.admin_consented_at
    assert graph_app.tenant_id == sandbox.directory.tenant("acme-outreach.com").id
    run_workers(1)  # verify_credential: a client-credentials token from the sandbox
    graph_app.refresh_from_db()
    assert graph_app.status == "valid" and graph_app.last_verified_at


def test_admin_consent_v1_shape_and_unconsented_client_credentials(sandbox, graph_app):
    from fleet.credentials import verify

    graph_app.tenant_id = "acme-outreach.com"  # a tenant by domain name
    verify(graph_app)  # no admin consent yet: AADSTS65001
    assert (graph_app.status, graph_app.last_error) == ("invalid", "ADMIN_APPROVAL_REQUIRED")
    v1 = (
        f"{sandbox.browser_url}/acme-outreach.com/adminconsent?client_id={graph_app.client_id}"
        "&redirect_uri=https://app.example/cb&state=s1"
    )
    answer = parse_qs(urlsplit(press(v1, "it-admin@acme-outreach.com")).query)
    assert answer["admin_consent"] == ["True"] and answer["state"] == ["s1"]
    assert "scope" not in answer  # v1 answers carry no scope
    graph_app.tenant_id = answer["tenant"][0]
    assert verify(graph_app).status == "valid"


def test_external_consent_request_completed_by_hand(ws_a, mailboxes, personas, client_for):
    operator = client_for(personas["alice"])
    add = operator.post(
        reverse("admin:fleet_consentrequest_add"),
        {
            "workspace": ws_a.pk,
            "kind": "external",
            "mailbox": mailboxes["a"].pk,
            "consent_url": "https://sequencer.example/consent?client_id=123456",
            # Request data as key and value rows (data_0 = key, data_1 = value, …).
            "data_0": "client_id",
            "data_1": "123456",
        },
    )
    assert add.status_code == 302, add.content.decode()[:2000]
    request = ConsentRequest.objects.get(kind="external")
    assert request.status == "queued" and request.created_by == personas["alice"]
    assert request.request_data == {"client_id": "123456"} and request.expires_at

    bad = operator.post(
        reverse("admin:fleet_consentrequest_add"),
        {
            "workspace": ws_a.pk,
            "kind": "external",
            "mailbox": mailboxes["a"].pk,
            "consent_url": "http://x.example/",
        },
    )
    # A sentence for people, without the internal code.
    assert bad.status_code == 200 and 'class="errornote"' in bad.content.decode()
    assert "VALIDATION_ERROR" not in bad.content.decode()
    assert ConsentRequest.objects.count() == 1

    operator.post(
        reverse(CHANGELIST), {"action": "complete_by_hand", "_selected_action": [request.pk]}
    )
    request.refresh_from_db()
    assert request.status == "completed" and request.completed_at
    assert mailboxes["a"].events.filter(kind="note", message__contains="External consent").exists()


def test_the_admin_form_checks_a_new_request_without_writing(ws_a, mailboxes, personas):
    """clean() only validates: the row is written by the admin's save_model."""
    from fleet.admin.consent import ConsentRequestForm

    form_class = type(
        "Form", (ConsentRequestForm,), {"user": personas["alice"], "base_url": "http://testserver/"}
    )
    data = {
        "workspace": ws_a.pk,
        "kind": "external",
        "mailbox": mailboxes["a"].pk,
        "consent_url": "https://sequencer.example/consent",
        "request_data": "{}",
    }
    form = form_class(data=data)
    assert form.is_valid(), form.errors
    assert form.prepared.pk is None and form.prepared.mailbox == mailboxes["a"]
    assert not ConsentRequest.objects.exists()
    refused = form_class(data={**data, "consent_url": "http://x.example/"})
    assert not refused.is_valid() and "must be an https:// URL" in str(refused.errors)
    assert not ConsentRequest.objects.exists()


def test_initiate_by_uid_or_username_and_domain(sandbox, oauth_app, ws_a, ws_b, mailboxes):
    from fleet.models import Mailbox

    ava = Mailbox.objects.create(workspace=ws_a, email="Ava@Acme-Outreach.com", auth_method="oauth")
    by_name = consent.initiate(
        ws_a, username="ava", domain="acme-outreach.com", request_data={"k": 1}
    )
    assert by_name.mailbox == ava and by_name.status == "queued"
    assert by_name.request_data == {"k": 1}
    with pytest.raises(FleetError) as other_tenant:
        consent.initiate(ws_a, mailbox_uid=mailboxes["b"].uid)  # a mailbox of workspace B
    assert other_tenant.value.code == "NOT_FOUND"
    with pytest.raises(FleetError) as nothing:
        consent.initiate(ws_a)
    assert nothing.value.code == "VALIDATION_ERROR"


def test_expiry(sandbox, oauth_app, ws_a, mailboxes, client):
    old = consent.initiate(ws_a, mailbox_uid=mailboxes["a"].uid)
    fresh = consent.initiate(ws_a, mailbox_uid=mailboxes["a"].uid)
    done = consent.initiate(ws_a, mailbox_uid=mailboxes["a"].uid)
    done.set_status("completed")
    past = timezone.now() - timedelta(minutes=1)
    ConsentRequest.objects.filter(pk__in=[old.pk, done.pk]).update(expires_at=past)

    assert consent.expire_stale() == 1
    statuses = dict(ConsentRequest.objects.values_list("pk", "status"))
    assert statuses == {old.pk: "expired", fresh.pk: "queued", done.pk: "completed"}
    page = client.get(reverse("consent_start", args=[old.uid]))
    assert page.status_code == 400 and "CONSENT_REQUEST_CLOSED" in page.content.decode()
    assert client.get(reverse("consent_start", args=[fresh.uid])).status_code == 302


def test_consent_requests_are_tenant_isolated(ws_a, ws_b, mailboxes, personas, client_for):
    url = "https://sequencer.example/consent"
    in_a = consent.initiate(ws_a, kind="external", mailbox_uid=mailboxes["a"].uid, consent_url=url)
    in_b = consent.initiate(ws_b, kind="external", mailbox_uid=mailboxes["b"].uid, consent_url=url)
    alice = client_for(personas["alice"])
    listing = alice.get(reverse(CHANGELIST)).content.decode()
    assert str(in_a.uid) in listing and str(in_b.uid) not in listing
    assert (
        alice.get(reverse("admin:fleet_consentrequest_change", args=[in_b.pk])).status_code == 404
    )
    csv = alice.get(reverse("admin:fleet_consentrequest_links_csv"), {"uid": [in_a.uid, in_b.uid]})
    assert str(in_a.uid) in csv.content.decode() and str(in_b.uid) not in csv.content.decode()
    # An action on a forged selection touches only the user's own workspace.
    alice.post(reverse(CHANGELIST), {"action": "cancel", "_selected_action": [in_a.pk, in_b.pk]})
    assert ConsentRequest.objects.get(pk=in_b.pk).status == "queued"
    assert ConsentRequest.objects.get(pk=in_a.pk).status == "cancelled"
    # bob is a viewer of B: he sees B's request but cannot cancel it.
    bob = client_for(personas["bob"])
    assert str(in_b.uid) in bob.get(reverse(CHANGELIST)).content.decode()
    bob.post(reverse(CHANGELIST), {"action": "cancel", "_selected_action": [in_b.pk]})
    assert ConsentRequest.objects.get(pk=in_b.pk).status == "queued"
    # Filters: by status, kind and workspace.
    root = client_for(personas["root"])
    filtered = root.get(
        reverse(CHANGELIST), {"status__exact": "cancelled", "kind__exact": "external"}
    )
    assert (
        str(in_a.uid) in filtered.content.decode()
        and str(in_b.uid) not in filtered.content.decode()
    )
    by_ws = root.get(reverse(CHANGELIST), {"workspace__id__exact": ws_b.pk}).content.decode()
    assert str(in_b.uid) in by_ws and str(in_a.uid) not in by_ws


def test_check_deploy_refuses_the_sandbox(settings):
    settings.MICROSOFT_AUTHORITY_HOST = "https://127.0.0.1:8443"
    with pytest.raises(SystemCheckError, match=r"fleet\.E001"):
        call_command("check", deploy=True, fail_level="ERROR")
    settings.MICROSOFT_AUTHORITY_HOST = "https://login.microsoftonline.us"
    settings.MICROSOFT_GRAPH_URL = "https://localhost:9/v1.0"
    with pytest.raises(SystemCheckError, match="MICROSOFT_GRAPH_URL"):
        call_command("check", deploy=True, fail_level="ERROR")


def test_sandbox_switches_over_http(sandbox):
    url = f"{sandbox.base_url}/_sandbox/switches"
    answer = requests.post(url, json={"deny_consent": True}, verify=sandbox.ca_file, timeout=5)
    assert answer.json()["deny_consent"] is True and sandbox.switches.deny_consent
    bad = requests.post(url, json={"nope": 1}, verify=sandbox.ca_file, timeout=5)
    assert bad.status_code == 400
    assert re.search("unknown switch", bad.text)


def test_check_deploy_refuses_sandbox_mail_servers(settings):
    settings.MAIL_SMTP_HOST = "127.0.0.1"
    with pytest.raises(SystemCheckError, match=r"fleet\.E002"):
        call_command("check", deploy=True, fail_level="ERROR")
    settings.MAIL_SMTP_HOST = "smtp.office365.com"
    settings.MAIL_IMAP_CONSUMER_HOST = "localhost"
    with pytest.raises(SystemCheckError, match="MAIL_IMAP_CONSUMER_HOST"):
        call_command("check", deploy=True, fail_level="ERROR")
