"""The way off Basic auth, against the Microsoft sandbox (HTTPS on loopback) and its SMTP/IMAP
servers (real TLS on loopback): what Verify finds the app may do, app-only XOAUTH2 granted and
not granted, Basic auth turned off, the move plan's groups and a move run end to end."""

import threading
from datetime import date, timedelta

import pytest
from django.utils import timezone

from fleet import app_only, credentials, errors, mailbox_checks, mailproto, move
from fleet.microsoft import graph
from fleet.models import Credential, Mailbox, MailboxEvent, MoveItem, MoveRun
from sandbox.mailservers import SMTP_AUTH_DISABLED
from tests.browser import local_path, press
from tests.mail_fixtures import point_at

ACME = "3f2b8c1e-5a9d-4e7b-9c3a-acme0000a001"
CLIENT_ID = "66666666-2222-4333-8444-555555555555"
SECRET = "move-secret"
ALL_ROLES = ["User.Read.All", "MailboxSettings.Read", "IMAP.AccessAsApp", "SMTP.SendAsApp"]


@pytest.fixture(autouse=True)
def fresh_tokens():
    graph.forget_all_tokens()  # the sandbox signs with a new key after every reset
    yield
    graph.forget_all_tokens()


@pytest.fixture
def mail(sandbox_mail, settings):
    """New mailboxes (and Verify's sign-in check) point at the sandbox's mail servers."""
    settings.MAIL_SMTP_HOST = settings.MAIL_IMAP_HOST = settings.MAIL_IMAP_CONSUMER_HOST = (
        sandbox_mail.host
    )
    settings.MAIL_SMTP_PORT = sandbox_mail.smtp_port
    settings.MAIL_IMAP_PORT = sandbox_mail.imap_port
    settings.MAIL_CHECK_CONCURRENCY = 4
    return sandbox_mail


def make_app(sandbox, roles, granted=True):
    app = sandbox.directory.add_app(CLIENT_ID, SECRET, "Fleet move (tests)")
    app.roles = list(roles)
    acme = sandbox.directory.tenant(ACME)
    acme.consented_apps.add(CLIENT_ID)
    if granted:
        acme.exchange_apps.add(CLIENT_ID)
    return app


def graph_credential(ws, status=Credential.Status.UNVERIFIED):
    return Credential.objects.create(
        workspace=ws,
        name="Acme Graph",
        kind=Credential.Kind.GRAPH_APP_ONLY,
        tenant_id="acme-outreach.com",  # a verified domain: Fleet finds the tenant's GUID
        client_id=CLIENT_ID,
        client_secret=SECRET,
        secret_expires_at=date.today() + timedelta(days=300),
        status=status,
    )


def app_password_mailbox(ws, email, servers, password="app-pass-1", **extra):
    mailbox = Mailbox.objects.create(
        workspace=ws,
        email=email,
        auth_method=Mailbox.AuthMethod.APP_PASSWORD,
        password=password,
        totp_secret="JBSWY3DPEHPK3PXP",
        provider="outlook_com"
        if email.endswith(("outlook.com", "hotmail.com"))
        else "microsoft365",
        **extra,
    )
    servers.add(email, password)
    return point_at(mailbox, servers)


# --- 1. Verify: which permissions the app really holds ---------------------------------------------
def test_verify_with_every_role(sandbox, mail, ws_a):
    make_app(sandbox, ALL_ROLES)
    credential = credentials.verify(graph_credential(ws_a))
    assert credential.status == "valid", credential.last_error_message
    assert {p: credential.permissions[p] for p in ALL_ROLES} == dict.fromkeys(ALL_ROLES, True)
    assert credential.permissions["checked_with"] == "ava@acme-outreach.com"
    assert credential.tenant_guid == ACME and credential.has_exchange_roles


@pytest.mark.parametrize("missing", ["User.Read.All", "MailboxSettings.Read"])
def test_verify_without_a_graph_role_is_invalid_naming_it(sandbox, mail, ws_a, missing):
    Mailbox.objects.create(workspace=ws_a, email="ben@acme-outreach.com", auth_method="oauth")
    make_app(sandbox, [r for r in ALL_ROLES if r != missing])
    credential = credentials.verify(graph_credential(ws_a))
    assert credential.status == "invalid"
    assert credential.last_error == "APP_PERMISSION_MISSING"
    assert missing in credential.last_error_message
    assert credential.permissions[missing] is False
    other = ({"User.Read.All", "MailboxSettings.Read"} - {missing}).pop()
    assert credential.permissions[other] is True


@pytest.mark.parametrize("missing", ["IMAP.AccessAsApp", "SMTP.SendAsApp"])
def test_verify_without_an_exchange_role_is_a_warning(sandbox, mail, ws_a, missing):
    make_app(sandbox, [r for r in ALL_ROLES if r != missing])
    credential = credentials.verify(graph_credential(ws_a))
    assert credential.status == "valid" and credential.last_error == ""
    assert credential.permissions[missing] is False
    kept = ({"IMAP.AccessAsApp", "SMTP.SendAsApp"} - {missing}).pop()
    assert credential.permissions[kept] is True  # its sign-in passed
    assert not credential.has_exchange_roles and credential.missing_permissions == [missing]


def test_verify_roles_held_but_no_exchange_grant(sandbox, mail, ws_a):
    """The sign-in is refused; the token's roles claim says the roles are there."""
    make_app(sandbox, ALL_ROLES, granted=False)
    credential = credentials.verify(graph_credential(ws_a))
    assert credential.status == "valid"
    assert credential.permissions["IMAP.AccessAsApp"] is True
    assert credential.permissions["SMTP.SendAsApp"] is True


# --- 2. App-only SMTP and IMAP --------------------------------------------------------------------
@pytest.fixture
def verified(sandbox, mail, ws_a):
    make_app(sandbox, ALL_ROLES)
    return credentials.verify(graph_credential(ws_a))


def graph_mailbox(ws, email, credential, servers):
    mailbox = Mailbox.objects.create(
        workspace=ws, email=email, auth_method="graph_app_only", credential=credential
    )
    return point_at(mailbox, servers)


def test_app_only_sign_in_granted_and_not_granted(verified, mail, ws_a, sandbox):
    ava = graph_mailbox(ws_a, "ava@acme-outreach.com", verified, mail)
    assert app_only.uses_app_only_mail(ava)
    error, detail = app_only.app_only_probe(ava)
    assert error is None and "App-only XOAUTH2" in detail and "IMAP: OK" in detail

    tara = graph_mailbox(ws_a, "tara@acme-outreach.com", verified, mail)  # exchange_excluded
    error, detail = app_only.app_only_probe(tara)
    assert error is errors.APP_NOT_GRANTED_ON_MAILBOX and detail.startswith("SMTP AUTH: 535")
    assert "New-ServicePrincipal" in error.hint and "Add-MailboxPermission" in error.hint
    # IMAP on its own: AUTHENTICATE XOAUTH2 refused the same way.
    token = app_only.exchange_token(verified)
    login = mailproto.Login(tara.email, access_token=token, app_only=True)
    with pytest.raises(mailproto.MailCheckError) as refused:
        mailproto.check_imap(mailproto.Server(mail.host, mail.imap_port, "ssl"), login)
    assert refused.value.error is errors.APP_NOT_GRANTED_ON_MAILBOX
    # A Graph token is not an Exchange one: the servers refuse it.
    with pytest.raises(mailproto.MailCheckError):
        mailproto.check_imap(
            mailproto.Server(mail.host, mail.imap_port, "ssl"),
            mailproto.Login(ava.email, access_token=graph.app_token(verified), app_only=True),
        )


def test_one_token_call_under_a_renewal_race(verified, sandbox):
    client = graph.GraphClient(verified)
    client.get("/users?$top=1&$select=id")
    before = sandbox.counts["token"]
    sandbox.identity.key = b"k" * 32  # every token issued so far is now refused (401)
    barrier = threading.Barrier(4)
    errors_seen = []

    def chunk():
        barrier.wait()
        try:
            client.send([graph.GraphRequest("1", "/users?$top=1&$select=id")])
        except Exception as exc:  # pragma: no cover - reported below
            errors_seen.append(exc)

    threads = [threading.Thread(target=chunk) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors_seen
    assert sandbox.counts["token"] - before == 1


# --- 5. Basic auth turned off --------------------------------------------------------------------
def test_basic_auth_off_and_smtp_auth_disabled_point_at_the_move_plan(sandbox, mail, ws_a):
    sandbox.switches.basic_auth_off = {"acme-outreach.com"}
    cara = app_password_mailbox(ws_a, "cara@acme-outreach.com", mail)
    dan = app_password_mailbox(ws_a, "dan@acme-outreach.com", mail)
    mail.add("dan@acme-outreach.com", "app-pass-1", smtp_reply=SMTP_AUTH_DISABLED)
    mailbox_checks.check_mailboxes([cara.pk, dan.pk])
    cara.refresh_from_db(), dan.refresh_from_db()
    assert cara.error_code == "BASIC_AUTH_DISABLED" and "550 5.7.30" in cara.error_message
    assert dan.error_code == "SMTP_AUTH_DISABLED" and "535 5.7.139" in dan.error_message
    for mailbox in (cara, dan):
        assert "move plan" in mailbox.error.hint


# --- 3. and 4. The move plan and the move ------------------------------------------------------------
@pytest.fixture
def fleet_to_move(verified, oauth_app, mail, ws_a):
    """ava and tara (Acme: app-only; tara outside the Exchange grant), hal (Outlook.com: consent),
    lena (Globex: no credential there, consent), ivy (disabled: blocked)."""
    made = {
        email: app_password_mailbox(ws_a, email, mail)
        for email in (
            "ava@acme-outreach.com",
            "tara@acme-outreach.com",
            "hal.sales@outlook.com",
            "lena@globex-sales.com",
            "ivy.growth@hotmail.com",
        )
    }
    made["ivy.growth@hotmail.com"].set_status("disabled")
    move.refresh_domain_tenants(ws_a)
    return made


def test_the_move_plan_groups_by_what_will_move_them(fleet_to_move, ws_a):
    plan = {d.domain: d for d in move.plan(ws_a).domains}
    assert {d: (p.group, p.count) for d, p in plan.items()} == {
        "acme-outreach.com": ("app_only", 2),
        "outlook.com": ("consent", 1),
        "globex-sales.com": ("consent", 1),
        "hotmail.com": ("blocked", 1),
    }
    assert plan["acme-outreach.com"].credential.client_id == CLIENT_ID
    assert "Exchange roles" in plan["globex-sales.com"].reason
    assert "disabled" in plan["hotmail.com"].reason


def test_without_an_oauth_app_consent_mailboxes_are_blocked(verified, mail, ws_a):
    app_password_mailbox(ws_a, "hal.sales@outlook.com", mail)
    move.refresh_domain_tenants(ws_a)
    (only,) = move.plan(ws_a).domains
    assert only.group == "blocked" and "OAuth app" in only.reason


def test_a_move_switches_after_a_passing_test_and_asks_for_consent(
    fleet_to_move, ws_a, personas, client, sandbox, django_capture_on_commit_callbacks
):
    run = move.start_move(ws_a, personas["alice"])
    assert move.start_move(ws_a, personas["alice"]) == run  # one open move per workspace
    run = move.execute_move(run)
    assert run.status == "finished" and run.lease_until is None
    items = {i.email: i for i in run.items.select_related("mailbox", "consent_request")}
    state = {e: (i.state, i.error_code) for e, i in items.items()}
    assert state == {
        "ava@acme-outreach.com": ("moved", ""),
        "tara@acme-outreach.com": ("failed", "APP_NOT_GRANTED_ON_MAILBOX"),
        "hal.sales@outlook.com": ("awaiting_consent", ""),
        "lena@globex-sales.com": ("awaiting_consent", ""),
        "ivy.growth@hotmail.com": ("blocked", "MOVE_BLOCKED"),
    }
    assert (run.total, run.processed, run.moved, run.consent_sent, run.failed) == (5, 5, 1, 2, 2)

    ava = Mailbox.objects.get(email="ava@acme-outreach.com")
    assert (ava.auth_method, ava.credential.client_id, str(ava.password)) == (
        "graph_app_only",
        CLIENT_ID,
        "",
    )
    assert str(ava.totp_secret) == "JBSWY3DPEHPK3PXP" and ava.status == "active"
    assert MailboxEvent.objects.filter(
        mailbox=ava, message__contains="Moved off Basic auth"
    ).exists()
    tara = Mailbox.objects.get(email="tara@acme-outreach.com")  # left as it was
    assert (tara.auth_method, str(tara.password), tara.credential_id) == (
        "app_password",
        "app-pass-1",
        None,
    )
    assert MailboxEvent.objects.filter(
        mailbox=tara, error_code="APP_NOT_GRANTED_ON_MAILBOX"
    ).exists()

    # The consent group: hal consents through the sandbox's pages, with his address as hint.
    hal_item = items["hal.sales@outlook.com"]
    assert hal_item.consent_request.mailbox.email == "hal.sales@outlook.com"
    authorize = client.get(f"/connect/{hal_item.consent_request.uid}/")["Location"]
    assert "login_hint=hal.sales%40outlook.com" in authorize
    with django_capture_on_commit_callbacks(execute=True):
        page = client.get(local_path(press(authorize, "hal.sales@outlook.com")))
    assert page.status_code == 200
    hal = Mailbox.objects.get(email="hal.sales@outlook.com")
    assert hal.auth_method == "oauth" and str(hal.password) == "app-pass-1"  # not yet wiped
    assert move.finish_consent_move(hal_item.pk) == "moved"  # what the task runs: the test passed
    hal.refresh_from_db()
    assert str(hal.password) == "" and hal.status == "active" and str(hal.refresh_token)
    run.refresh_from_db()
    assert (run.moved, run.consent_sent) == (2, 1)


def test_a_consent_whose_test_fails_keeps_the_password(
    fleet_to_move, ws_a, client, sandbox, django_capture_on_commit_callbacks
):
    run = move.execute_move(move.start_move(ws_a))
    item = run.items.get(email="lena@globex-sales.com")
    lena = item.mailbox
    # Globex needs admin consent for user consent: grant it, then lena consents.
    sandbox.directory.tenant("globex-sales.com").consented_apps.add(
        lena.workspace.credentials.get(kind="oauth_app").client_id
    )
    authorize = client.get(f"/connect/{item.consent_request.uid}/")["Location"]
    with django_capture_on_commit_callbacks(execute=True):
        client.get(local_path(press(authorize, "lena@globex-sales.com")))
    sandbox.switches.revoked = {"lena@globex-sales.com"}  # the servers refuse her token now
    assert move.finish_consent_move(item.pk) == "failed"
    lena.refresh_from_db()
    assert str(lena.password) == "app-pass-1"
    item.refresh_from_db()
    assert item.error_code == "INVALID_CREDENTIALS"


def test_a_run_whose_worker_died_is_reclaimed_and_finishes_once(
    fleet_to_move, ws_a, django_capture_on_commit_callbacks
):
    run = move.start_move(ws_a)
    # A worker claimed it, moved ava, then died: the lease runs out.
    assert move.claim(run)
    run.refresh_from_db()
    item = run.items.select_related("mailbox").get(email="ava@acme-outreach.com")
    item.credential = ws_a.credentials.get(kind="graph_app_only")
    error, detail = app_only.probe_with(item.mailbox, item.credential)
    assert error is None
    move.switch_to_app_only(item, detail)
    assert move.reclaim_expired() == 0  # the lease still holds
    later = timezone.now() + move.lease() + timedelta(seconds=1)
    with django_capture_on_commit_callbacks() as queued:
        assert move.reclaim_expired(later) == 1
    assert len(queued) == 1  # run_move enqueued again
    run.refresh_from_db()
    assert run.status == "queued" and run.attempts == 1
    run = move.execute_move(run)
    assert run.status == "finished" and run.attempts == 2
    ava_events = MailboxEvent.objects.filter(
        email="ava@acme-outreach.com", message__contains="Moved off Basic auth"
    )
    assert ava_events.count() == 1  # moved once, not twice
    assert run.items.get(email="ava@acme-outreach.com").state == "moved"


def test_a_run_that_died_too_often_fails_and_changes_nothing_more(fleet_to_move, ws_a):
    run = move.start_move(ws_a)
    MoveRun.objects.filter(pk=run.pk).update(
        status="running", attempts=move.MAX_ATTEMPTS, lease_until=timezone.now()
    )
    assert move.reclaim_expired(timezone.now() + timedelta(seconds=1)) == 1
    run.refresh_from_db()
    assert run.status == "failed" and run.error_code == "MOVE_INTERRUPTED"
    assert set(run.items.values_list("state", flat=True)) == {"failed", "blocked"}
    assert Mailbox.objects.filter(auth_method="app_password").count() == 5
    assert not MoveItem.objects.filter(run=run, state="pending").exists()


# --- The admin: dashboard figure → plan → move (two clicks), the run's page, consent links -----
def test_dashboard_plan_and_run_pages(fleet_to_move, ws_a, personas, client_for, ws_b):
    from django.urls import reverse

    from fleet.models import Membership

    Membership.objects.filter(user=personas["alice"], workspace=ws_a).update(role="operator")
    c = client_for(personas["alice"])
    board = c.get(reverse("admin:index"))
    assert board.status_code == 200
    figure = board.context["board"].basic_auth_affected
    assert figure.count == 4  # ivy is disabled
    assert b"stop working when Basic auth is turned off" in board.content
    plan_page = c.get(figure.url)
    assert plan_page.status_code == 200 and b'id="start-move"' in plan_page.content
    started = c.post(reverse("admin:fleet_moverun_plan"), {"workspace": ws_a.pk})
    run = MoveRun.objects.get(workspace=ws_a)
    assert started.status_code == 302 and started["Location"].endswith(f"/{run.pk}/change/")
    move.execute_move(run)
    page = c.get(started["Location"])
    assert page.status_code == 200 and b"APP_NOT_GRANTED_ON_MAILBOX" in page.content
    assert b"New-ServicePrincipal" in page.content  # the hint beside the code
    links = c.get(reverse("admin:fleet_moverun_consent_links", args=[run.pk]))
    assert links.status_code == 200
    assert {cr.target for cr in links.context["consent_requests"]} == {
        "hal.sales@outlook.com",
        "lena@globex-sales.com",
    }
    # A viewer sees the plan but gets no button (never a button that ends in 403) and may not POST.
    viewer = personas["bob"]
    Membership.objects.filter(user=viewer, workspace=ws_a).update(role="viewer")
    v = client_for(viewer)
    assert b'id="start-move"' not in v.get(figure.url).content
    assert v.post(reverse("admin:fleet_moverun_plan"), {"workspace": ws_a.pk}).status_code == 403
    # Another workspace's run is not visible.
    olga = client_for(personas["olga"])
    assert olga.get(started["Location"]).status_code in (302, 404)
