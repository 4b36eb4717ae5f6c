"""Disconnect alerts: status changes become alert items and webhooks (`Mailbox.set_status_many`),
digest e-mails to managers and owners (fleet/alerts.py), received by a real SMTP server."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from fleet import alerts, errors, leases
from fleet.mailbox_checks import check_mailboxes
from fleet.models import (
    AlertDigest,
    AlertItem,
    Mailbox,
    Membership,
    Role,
    WebhookDelivery,
    Workspace,
)
from fleet.tasks import send_alert_digests
from tests.conftest import make_user
from tests.mail_fixtures import mail, point_at, servers  # noqa: F401 (fixtures)
from tests.receivers import Receiver
from tests.smtp_sink import SmtpSink
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


# --- 2. digest e-mails -------------------------------------------------------------------------------
@pytest.fixture
def smtp(settings):
    """A real SMTP server on loopback, and Django's SMTP backend pointed at it."""
    with SmtpSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = sink.host, sink.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_TIMEOUT = 5
        settings.DEFAULT_FROM_EMAIL = "Fleet <fleet@fleet.example.test>"
        settings.ALERT_DIGEST_MINUTES = 15
        yield sink


@pytest.fixture
def people(ws_a, ws_b):
    """Alpha: an owner, two managers (one opted out), a manager without an address, an operator
    and a viewer; Beta: its own manager, and one who manages both."""

    def member(name, ws, role, email=None, **extra):
        user = get_user_model().objects.filter(username=name).first() or make_user(
            name, email=f"{name}@agency.example" if email is None else email
        )
        Membership.objects.create(user=user, workspace=ws, role=role, **extra)
        return user

    return {
        "olive": member("olive", ws_a, Role.OWNER),
        "mona": member("mona", ws_a, Role.MANAGER),
        "mute": member("mute", ws_a, Role.MANAGER, alert_emails=False),
        "noaddr": member("noaddr", ws_a, Role.MANAGER, email=""),
        "otto": member("otto", ws_a, Role.OPERATOR),
        "vera": member("vera", ws_a, Role.VIEWER),
        "bea": member("bea", ws_b, Role.MANAGER),
        "both": member("both", ws_a, Role.VIEWER) and member("both", ws_b, Role.OWNER),
    }


def to(sink: SmtpSink) -> list[str]:
    return sorted(r for m in sink.messages for r in m.rcpt_tos)


def test_a_digest_reaches_the_managers_and_owners_with_codes_hints_and_links(ws_a, people, smtp):
    ann = make(ws_a, "ann@alpha.example")
    ben = make(ws_a, "ben@alpha.example")
    cid = make(ws_a, "cid@alpha.example", "reauth_required", "REAUTH_REQUIRED")
    ann.set_status("error", errors.INVALID_CREDENTIALS, "535 5.7.3 Authentication unsuccessful")
    ben.set_status("reauth_required", errors.REAUTH_REQUIRED)
    cid.set_status("active")

    assert alerts.send_due(owner="local-test") == {"opened": 1, "sent": 1, "failed": 0}

    # One e-mail each to Alpha's owner and the manager who wants them: not the opted-out one,
    # not the one without an address, not operators, viewers nor Beta's people.
    assert to(smtp) == ["mona@agency.example", "olive@agency.example"]
    message = next(m for m in smtp.messages if m.rcpt_tos == ["mona@agency.example"])
    assert message.subject == "[Fleet] Alpha: 2 mailboxes disconnected, 1 reconnected"
    assert message.parsed["From"] == "Fleet <fleet@fleet.example.test>"
    text, html = message.body("plain"), message.body("html")
    for body in (text, html):
        assert "ann@alpha.example" in body and "ben@alpha.example" in body
        assert "INVALID_CREDENTIALS" in body and "REAUTH_REQUIRED" in body
        assert errors.INVALID_CREDENTIALS.hint in body.replace("&#x27;", "'")
        assert errors.REAUTH_REQUIRED.hint in body.replace("&#x27;", "'")
        assert f"{BASE}/admin/fleet/mailbox/{ann.pk}/change/" in body
        assert f"{BASE}/admin/fleet/mailbox/{cid.pk}/change/" in body
        assert "535 5.7.3 Authentication unsuccessful" in body  # what Microsoft said
    reconnected = text.split("RECONNECTED (1)")[1]
    assert "cid@alpha.example" in reconnected and "was reauth_required" in reconnected
    failing = f"{BASE}/admin/fleet/mailbox/?workspace__id__exact={ws_a.pk}&status__in=error%2Creauth_required"
    assert failing in text and failing.replace("&", "&amp;") in html
    per_code = (
        f"{BASE}/admin/fleet/mailbox/?workspace__id__exact={ws_a.pk}&error_code=INVALID_CREDENTIALS"
    )
    assert per_code in text
    mona = Membership.objects.get(user=people["mona"], workspace=ws_a)
    assert f"{BASE}/admin/fleet/membership/{mona.pk}/change/" in text  # her own opt-out

    digest = AlertDigest.objects.get()
    assert (digest.status, digest.attempts, digest.lease_owner) == ("sent", 1, "")
    assert digest.items.count() == 3 and not AlertItem.objects.filter(digest=None).exists()

    # Nothing new: nothing sent.
    assert alerts.send_due(owner="local-test") == {"opened": 0, "sent": 0, "failed": 0}
    assert len(smtp.messages) == 2


def test_the_links_open_the_mailbox_and_the_filtered_list(
    ws_a, ws_b, people, smtp, client_for, settings
):
    settings.FLEET_BASE_URL = ""  # relative links, to follow with the test client
    ann, other = (
        make(ws_a, "ann@alpha.example"),
        make(ws_b, "ben@beta.example", "error", "TLS_FAILED"),
    )
    make(ws_a, "fine@alpha.example")
    ann.set_status("error", errors.INVALID_CREDENTIALS)
    alerts.send_due(owner="local-test")
    text = smtp.messages[0].body()
    links = [line.strip().split(" ")[-1] for line in text.splitlines() if "/admin/" in line]
    client = client_for(people["mona"])
    pages = {link: client.get(link) for link in links}
    assert all(page.status_code == 200 for page in pages.values()), pages
    listed = pages[next(link for link in links if "status__in" in link)].content.decode()
    assert "ann@alpha.example" in listed
    assert "fine@alpha.example" not in listed and other.email not in listed


def test_each_workspace_tells_only_its_own_people(ws_a, ws_b, people, smtp):
    make(ws_a, "ann@alpha.example").set_status("error", errors.CONNECTION_REFUSED)
    make(ws_b, "ben@beta.example").set_status("error", errors.TLS_FAILED)
    alerts.send_due(owner="local-test")

    by_rcpt = {m.rcpt_tos[0]: m for m in smtp.messages}
    assert sorted(by_rcpt) == [
        "bea@agency.example",
        "both@agency.example",  # owner of Beta (a viewer of Alpha gets nothing from Alpha)
        "mona@agency.example",
        "olive@agency.example",
    ]
    assert "ben@beta.example" in by_rcpt["bea@agency.example"].body()
    assert "ann@alpha.example" not in by_rcpt["bea@agency.example"].body()
    assert "ben@beta.example" not in by_rcpt["mona@agency.example"].body()


def test_at_most_one_digest_per_window(ws_a, people, smtp):
    start = timezone.now()
    ann, ben, cid = (make(ws_a, f"{n}@alpha.example") for n in ("ann", "ben", "cid"))
    ann.set_status("error", errors.CONNECTION_TIMEOUT)
    ben.set_status("error", errors.CONNECTION_TIMEOUT)  # two drops inside one window
    alerts.send_due(owner="local-test", now=start + timedelta(seconds=1))
    assert len(smtp.messages) == 2  # one e-mail each for Olive and Mona, with both drops
    assert all("ann@alpha" in m.body() and "ben@alpha" in m.body() for m in smtp.messages)

    cid.set_status("reauth_required", errors.REAUTH_REQUIRED)  # 14 minutes later: waits
    assert alerts.send_due(owner="local-test", now=start + timedelta(minutes=14))["opened"] == 0
    assert len(smtp.messages) == 2
    alerts.send_due(owner="local-test", now=start + timedelta(minutes=15, seconds=2))
    assert len(smtp.messages) == 4
    latest = smtp.messages[-1].body()
    assert "cid@alpha.example" in latest and "ann@alpha.example" not in latest
    assert smtp.messages[-1].subject == "[Fleet] Alpha: 1 mailbox disconnected"


def test_an_smtp_failure_is_retried_and_the_digest_sent_once(ws_a, people, smtp):
    make(ws_a, "ann@alpha.example").set_status("error", errors.CONNECTION_REFUSED)
    smtp.refuse_with = "451 4.3.0 Mail server temporarily rejected message"
    assert alerts.send_due(owner="local-test")["failed"] == 1
    digest = AlertDigest.objects.get()
    assert digest.status == "pending" and digest.next_attempt_at > timezone.now()
    assert "451" in digest.last_error and digest.lease_owner == ""

    smtp.refuse_with = None
    assert alerts.send_due(owner="local-test")["sent"] == 0  # not due yet
    later = digest.next_attempt_at + timedelta(seconds=1)
    assert alerts.send_due(owner="local-test", now=later) == {"opened": 0, "sent": 1, "failed": 0}
    assert to(smtp) == ["mona@agency.example", "olive@agency.example"]
    assert AlertDigest.objects.get().status == "sent" and AlertDigest.objects.count() == 1


def test_a_sender_that_died_after_sending_costs_at_most_one_extra_copy(ws_a, people, smtp):
    make(ws_a, "ann@alpha.example").set_status("error", errors.CONNECTION_REFUSED)
    digest = alerts.open_digest(ws_a.pk)
    # A worker leased it, the SMTP server accepted the e-mails, and the worker died there.
    assert leases.claim(AlertDigest.objects.filter(pk=digest.pk), "dead-worker")
    alerts.deliver(digest)
    assert len(smtp.messages) == 2
    make(ws_a, "ben@alpha.example").set_status("error", errors.CONNECTION_REFUSED)

    assert alerts.send_due(owner="local-test")["sent"] == 0  # still leased: not sent twice
    expired = timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS + 1)
    assert alerts.reclaim_expired(expired) == 1
    assert alerts.send_due(owner="local-test", now=expired)["sent"] == 1
    assert len(smtp.messages) == 4  # the one resend
    assert all("ben@alpha" not in m.body() for m in smtp.messages)  # ben waits for the next one
    assert AlertDigest.objects.get(pk=digest.pk).status == "sent"
    assert AlertItem.objects.get(email="ben@alpha.example").digest is None


def test_nobody_to_tell_closes_the_items_without_an_email(ws_b, smtp):
    make(ws_b, "ben@beta.example").set_status("error", errors.CONNECTION_REFUSED)
    assert alerts.send_due(owner="local-test") == {"opened": 1, "sent": 0, "failed": 0}
    assert AlertDigest.objects.get().status == "no_recipients"
    assert smtp.messages == [] and not AlertItem.objects.filter(digest=None).exists()


def test_a_test_outcome_that_does_not_change_the_status_sends_nothing(ws_a, people, smtp, mail):
    """Connection tests through real SMTP/IMAP servers: passing again, or failing again with the
    same code, changes no status, so no alert and no e-mail; a real drop does."""
    mail.add("ann@alpha.example", "right")
    mail.add("ben@alpha.example", "right")
    ann = point_at(make(ws_a, "ann@alpha.example"), mail, password="right")
    ben = point_at(
        make(ws_a, "ben@alpha.example", "error", "INVALID_CREDENTIALS"), mail, password="wrong"
    )
    assert check_mailboxes([ann.pk, ben.pk]) == {"active": 1, "error": 1}
    assert not AlertItem.objects.exists()
    assert alerts.send_due(owner="local-test")["opened"] == 0 and smtp.messages == []

    Mailbox.objects.filter(pk=ann.pk).update(password="changed-by-the-user")
    assert check_mailboxes([ann.pk]) == {"error": 1}
    alerts.send_due(owner="local-test")
    assert to(smtp) == ["mona@agency.example", "olive@agency.example"]
    assert "INVALID_CREDENTIALS" in smtp.messages[0].body()


@pytest.mark.django_db(transaction=True)
def test_the_periodic_task_sends_from_a_real_worker(ws_a, people, smtp, monkeypatch):
    for name, value in {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": smtp.host,
        "EMAIL_PORT": str(smtp.port),
        "FLEET_BASE_URL": BASE,
    }.items():
        monkeypatch.setenv(name, value)
    make(ws_a, "ann@alpha.example").set_status("error", errors.CONNECTION_REFUSED)
    send_alert_digests.enqueue()
    run_workers(1)
    assert to(smtp) == ["mona@agency.example", "olive@agency.example"]
    assert f"{BASE}/admin/fleet/mailbox/" in smtp.messages[0].body()
    assert AlertDigest.objects.get().status == "sent"


# --- opting out ---------------------------------------------------------------------------------------
def opt_out_page(client, membership):
    return client.get(reverse("admin:fleet_membership_change", args=[membership.pk]))


def test_members_opt_out_for_themselves_and_managers_for_anyone(ws_a, people, client_for, smtp):
    mine = Membership.objects.get(user=people["mona"], workspace=ws_a)
    olive = Membership.objects.get(user=people["olive"], workspace=ws_a)
    otto = Membership.objects.get(user=people["otto"], workspace=ws_a)

    # Mona (a manager) on her own membership: only "alert e-mails" is hers to change.
    client = client_for(people["mona"])
    page = opt_out_page(client, mine).content.decode()
    assert 'name="alert_emails"' in page and 'name="role"' not in page
    response = client.post(reverse("admin:fleet_membership_change", args=[mine.pk]), {})
    assert response.status_code == 302
    mine.refresh_from_db()
    assert (mine.alert_emails, mine.role) == (False, Role.MANAGER)
    # … and on the owner's, as a manager of the workspace.
    client.post(reverse("admin:fleet_membership_change", args=[olive.pk]), {})
    olive.refresh_from_db()
    assert olive.alert_emails is False and olive.role == Role.OWNER

    # Otto (an operator) may change his own, not a colleague's: that page is read-only.
    client = client_for(people["otto"])
    assert 'name="alert_emails"' in opt_out_page(client, otto).content.decode()
    assert 'name="alert_emails"' not in opt_out_page(client, mine).content.decode()
    refused = client.post(
        reverse("admin:fleet_membership_change", args=[mine.pk]), {"alert_emails": "on"}
    )
    assert refused.status_code == 403
    mine.refresh_from_db()
    assert mine.alert_emails is False

    # The owner's page keeps the whole form (role, member), with the switch.
    page = opt_out_page(client_for(people["olive"]), otto).content.decode()
    assert 'name="alert_emails"' in page and 'name="role"' in page

    # Everyone opted out: nobody to send to.
    make(ws_a, "ann@alpha.example").set_status("error", errors.CONNECTION_REFUSED)
    alerts.send_due(owner="local-test")
    assert smtp.messages == [] and AlertDigest.objects.get().status == "no_recipients"


def test_opting_out_is_refused_to_outsiders(ws_a, ws_b, people):
    mine = Membership.objects.get(user=people["mona"], workspace=ws_a)
    with pytest.raises(PermissionError):
        alerts.set_alert_emails(mine, False, people["bea"])  # a manager of another workspace
    with pytest.raises(PermissionError):
        alerts.set_alert_emails(mine, False, people["otto"])  # an operator colleague
    assert alerts.set_alert_emails(mine, False, people["mona"]) is True
    assert alerts.set_alert_emails(mine, True, people["olive"]) is True


# --- the API: one's own alert e-mails -------------------------------------------------------------
def test_the_api_reads_and_changes_the_keys_own_alert_emails(api, api_keys, personas, ws_a, ws_b):
    path = f"/api/v1/workspaces/{ws_a.pk}/alerts"
    bob = Membership.objects.get(user=personas["bob"], workspace=ws_a)  # manager of A

    got = api("GET", path, api_keys["bob_platform"])
    assert got.status_code == 200
    assert got.json()["data"] == {
        "workspace_id": ws_a.pk,
        "role": "manager",
        "alert_emails": True,
        "receives_digests": False,  # bob has no e-mail address
    }
    changed = api("PUT", path, api_keys["a_manager"], data={"alert_emails": False})
    assert changed.status_code == 200 and changed.json()["data"]["alert_emails"] is False
    bob.refresh_from_db()
    assert bob.alert_emails is False

    # A read-only key reads, never writes; another workspace's key is refused; bad bodies named.
    assert api("GET", path, api_keys["a_viewer"]).status_code == 200
    refused = api("PUT", path, api_keys["a_viewer"], data={"alert_emails": True})
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "PERMISSION_DENIED")
    bad = api("PUT", path, api_keys["a_manager"], data={"alert_emails": "maybe"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "VALIDATION_ERROR")
    assert "alert_emails" in bad.json()["error"]["fields"]
    bob.refresh_from_db()
    assert bob.alert_emails is False

    other = api("GET", path, api_keys["b_viewer"])  # a key of workspace B
    assert (other.status_code, other.json()["error"]["code"]) == (403, "OUTSIDE_KEY_WORKSPACE")
    # Outsiders see nothing; a superuser without a membership has no setting here.
    assert api("GET", path, api_keys["olga_platform"]).status_code == 404
    nobody = api("GET", path, api_keys["root_platform"])
    assert (nobody.status_code, nobody.json()["error"]["code"]) == (404, "NOT_FOUND")
    # An operator's platform key may read its own, not change it (digests go to managers).
    assert api("GET", path, api_keys["alice_platform"]).json()["data"]["role"] == "operator"
    assert (
        api("PUT", path, api_keys["alice_platform"], data={"alert_emails": False}).status_code
        == 403
    )


def test_managers_see_the_digests_of_their_workspaces_in_the_admin(
    ws_a, ws_b, people, smtp, client_for
):
    make(ws_a, "ann@alpha.example").set_status("error", errors.INVALID_CREDENTIALS)
    make(ws_b, "ben@beta.example").set_status("error", errors.TLS_FAILED)
    alerts.send_due(owner="local-test")
    mine = AlertDigest.objects.get(workspace=ws_a)
    theirs = AlertDigest.objects.get(workspace=ws_b)

    client = client_for(people["mona"])
    listed = client.get(reverse("admin:fleet_alertdigest_changelist")).content.decode()
    assert "mona@agency.example" in listed and "bea@agency.example" not in listed
    page = client.get(reverse("admin:fleet_alertdigest_change", args=[mine.pk])).content.decode()
    assert "ann@alpha.example" in page and errors.INVALID_CREDENTIALS.hint[:40] in page.replace(
        "&#x27;", "'"
    )
    assert (
        client.get(reverse("admin:fleet_alertdigest_change", args=[theirs.pk])).status_code == 404
    )
    # Operators do not see the digests at all.
    assert (
        client_for(people["otto"]).get(reverse("admin:fleet_alertdigest_changelist")).status_code
        == 403
    )
