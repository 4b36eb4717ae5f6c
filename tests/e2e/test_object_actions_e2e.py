"""The buttons on an object's page and on list rows (issue 14, item 1), in Chromium at a laptop's
1280x800: each shown only to the roles it works for and in the states it makes sense in, and
each doing what it says — checked in the database after the click."""

import re
from pathlib import Path

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from playwright.sync_api import expect

from fleet import errors
from fleet.models import (
    BulkAddResult,
    BulkAddRun,
    ConsentRequest,
    Credential,
    ImportBatch,
    Mailbox,
    MailboxEvent,
    Membership,
)
from tests.conftest import make_user
from tests.e2e.conftest import Shots, log_in
from tests.mail_fixtures import point_at
from tests.test_bulk_add import dns_zone, fresh_tokens, graph_credential, tenant  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)
WIDTH, HEIGHT = 1280, 800
TOTP_SECRET = "JBSWY3DPEHPK3PXP"
SANDBOX_APP_PASSWORD = "sandbox-app-password"  # what the sandbox's mail servers accept


@pytest.fixture
def laptop(browser, request, live_server):
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.shots = Shots(page, request.node.name)
    yield page
    context.close()


@pytest.fixture
def val(people, ws_a):
    """A viewer of workspace A (the people fixture's viewer sees only B)."""
    user = make_user("val")
    Membership.objects.create(user=user, workspace=ws_a, role="viewer")
    return user


def tools(page) -> list[str]:
    """The labels of the change form's tool buttons and links, History aside."""
    return [
        t.strip()
        for t in page.locator("ul.object-tools li.fleet-tool").all_text_contents()
        if t.strip()
    ]


def open_mailbox(page, live_server, mailbox):
    page.goto(f"{live_server.url}/admin/fleet/mailbox/{mailbox.pk}/change/")


def message(page) -> str:
    return page.locator("ul.messagelist").inner_text()


def logout(page, live_server):
    page.context.clear_cookies()


def sample_mailboxes(ws):
    """One mailbox per state that changes the buttons."""

    def make(email, **fields):
        fields.setdefault("auth_method", "app_password")
        return Mailbox.objects.create(workspace=ws, email=email, password="pw", **fields)

    return {
        "waiting": make(
            "waiting@acme-outreach.com", auth_method="oauth", needs_approval=True
        ),
        "ready": make("ready@acme-outreach.com", status="active", totp_secret=TOTP_SECRET),
        "warm": make("warm@acme-outreach.com", status="active", warmup_status="active"),
        "paused": make("paused@acme-outreach.com", status="active", warmup_status="paused"),
        "lost": make(
            "lost@acme-outreach.com",
            auth_method="oauth",
            status="reauth_required",
            warmup_status="paused",
        ),
        "off": make("off@acme-outreach.com", status="disabled"),
    }


EXPECTED = {
    # (mailbox, role): the buttons, in their order on the page
    ("waiting", "viewer"): [],
    ("waiting", "operator"): ["Test connection", "Connect with Microsoft"],
    ("waiting", "manager"): ["Test connection", "Connect with Microsoft", "Approve", "Disable"],
    ("ready", "viewer"): [],
    ("ready", "operator"): ["Test connection", "Reveal TOTP"],
    ("ready", "manager"): ["Test connection", "Start warmup", "Reveal TOTP", "Disable"],
    ("warm", "manager"): ["Test connection", "Pause warmup", "Disable"],
    ("paused", "manager"): ["Test connection", "Resume warmup", "Disable"],
    ("lost", "operator"): ["Test connection", "Reconnect"],
    # Warmup resumes only on a connected mailbox: a paused one that lost its grant offers none.
    ("lost", "manager"): ["Test connection", "Reconnect", "Disable"],
    ("off", "operator"): [],
    ("off", "manager"): ["Enable"],
}
LOGIN = {"viewer": "val", "operator": "alice", "manager": "mo"}


def test_mailbox_buttons_per_role_and_state(laptop, live_server, people, val, ws_a):
    boxes = sample_mailboxes(ws_a)
    for role in ("viewer", "operator", "manager"):
        logout(laptop, live_server)
        log_in(laptop, live_server, LOGIN[role])
        for (name, wanted_role), wanted in EXPECTED.items():
            if wanted_role != role:
                continue
            open_mailbox(laptop, live_server, boxes[name])
            assert tools(laptop) == wanted, (name, role)
            if name in ("waiting", "ready"):
                laptop.shots(f"{role}-{name}")


def test_mailbox_buttons_do_what_they_say(laptop, live_server, people, ws_a):
    boxes = sample_mailboxes(ws_a)
    log_in(laptop, live_server, "mo")
    shot = laptop.shots

    open_mailbox(laptop, live_server, boxes["waiting"])
    laptop.click("#tool-approve")
    expect(laptop.locator("ul.messagelist")).to_contain_text("approved; warmup can start")
    boxes["waiting"].refresh_from_db()
    assert not boxes["waiting"].needs_approval and boxes["waiting"].status == "active"
    assert "Approve" not in tools(laptop) and "Start warmup" in tools(laptop)
    shot("approved")

    laptop.click("#tool-start_warmup")  # the warmup form, then back to the mailbox
    expect(laptop.locator("h1")).to_contain_text("Start warmup")
    laptop.fill("#id_daily_volume", "35")
    laptop.fill("#id_response_rate", "25")
    shot("warmup-form")
    laptop.click("#warmup-form input[type=submit]")
    expect(laptop.locator("ul.messagelist")).to_contain_text("Warmup of waiting@acme-outreach.com started (35/day, 25%")
    boxes["waiting"].refresh_from_db()
    assert boxes["waiting"].warmup_status == "active"
    assert boxes["waiting"].warmup_daily_volume == 35
    assert "Pause warmup" in tools(laptop) and "Start warmup" not in tools(laptop)
    shot("warmup-started")

    laptop.click("#tool-pause_warmup")
    expect(laptop.locator("ul.messagelist")).to_contain_text("paused")
    boxes["waiting"].refresh_from_db()
    assert boxes["waiting"].warmup_status == "paused"
    laptop.click("#tool-resume_warmup")
    expect(laptop.locator("ul.messagelist")).to_contain_text("resumed (35/day, 25% responses)")
    boxes["waiting"].refresh_from_db()
    assert boxes["waiting"].warmup_status == "active"

    laptop.click("#tool-disable")
    expect(laptop.locator("ul.messagelist")).to_contain_text("disabled")
    boxes["waiting"].refresh_from_db()
    assert boxes["waiting"].status == "disabled"
    # Its warmup stays recorded as running: pausing it is still offered, with Enable.
    assert tools(laptop) == ["Pause warmup", "Enable"]
    shot("disabled")
    laptop.click("#tool-enable")
    expect(laptop.locator("ul.messagelist")).to_contain_text("enabled again")
    boxes["waiting"].refresh_from_db()
    assert boxes["waiting"].status == "pending"
    # Enabling queues its connection test.
    assert DBTaskResult.objects.filter(task_path="fleet.tasks.test_due_mailboxes").exists()
    assert Mailbox.objects.filter(pk=boxes["waiting"].pk, check_due_at__isnull=False).exists()

    open_mailbox(laptop, live_server, boxes["ready"])
    laptop.click("#tool-reveal_totp")
    code = laptop.locator("#totp-code").inner_text()
    assert re.fullmatch(r"\d{6}", code)
    assert MailboxEvent.objects.filter(mailbox=boxes["ready"], kind="totp_reveal").count() == 1
    shot("totp")

    # A page older than the mailbox: the button is refused with a reason, nothing happens.
    open_mailbox(laptop, live_server, boxes["paused"])
    Mailbox.objects.filter(pk=boxes["paused"].pk).update(warmup_status="active")
    laptop.click("#tool-resume_warmup")
    expect(laptop.locator("ul.messagelist")).to_contain_text("no longer allows it")
    shot("stale-page")
    assert "Traceback" not in laptop.content()


def test_forged_post_for_a_role_is_refused(laptop, live_server, people, ws_a):
    """No button for the operator, and a hand-made POST answers the 403 page."""
    box = sample_mailboxes(ws_a)["waiting"]
    log_in(laptop, live_server, "alice")
    open_mailbox(laptop, live_server, box)
    token = laptop.locator("input[name=csrfmiddlewaretoken]").first.get_attribute("value")
    answer = laptop.request.post(
        f"{live_server.url}/admin/fleet/mailbox/{box.pk}/do/approve/",
        form={"csrfmiddlewaretoken": token},
        headers={"Referer": laptop.url},
    )
    assert answer.status == 403 and "needs the manager role" in answer.text()
    box.refresh_from_db()
    assert box.needs_approval
    # Without the CSRF token nothing runs either.
    answer = laptop.request.post(f"{live_server.url}/admin/fleet/mailbox/{box.pk}/do/test/")
    assert answer.status == 403
    assert not DBTaskResult.objects.exists()


def test_row_buttons_on_the_mailbox_list(
    laptop, live_server, people, val, ws_a, sandbox_mail, worker
):
    boxes = sample_mailboxes(ws_a)
    ready = point_at(boxes["ready"], sandbox_mail)
    sandbox_mail.add(ready.email, SANDBOX_APP_PASSWORD)
    ready.password = SANDBOX_APP_PASSWORD
    ready.status = "error"
    ready.error_code = errors.INVALID_CREDENTIALS.code
    ready.save()

    def row_buttons():
        return dict(
            zip(
                laptop.locator("#result_list tbody .field-address").all_inner_texts(),
                [
                    (c.locator("button.fleet-row-action").all_text_contents() or ["—"])[0]
                    for c in laptop.locator("#result_list tbody td.field-status_badge").all()
                ],
                strict=True,
            )
        )

    log_in(laptop, live_server, "val")
    laptop.goto(f"{live_server.url}/admin/fleet/mailbox/")
    assert set(row_buttons().values()) == {"—"}  # a viewer gets no button
    laptop.shots("viewer-list")

    logout(laptop, live_server)
    log_in(laptop, live_server, "mo")
    laptop.goto(f"{live_server.url}/admin/fleet/mailbox/")
    buttons = row_buttons()
    assert buttons["waiting@acme-outreach.com"] == "Approve"
    assert buttons["lost@acme-outreach.com"] == "Reconnect"
    assert buttons["off@acme-outreach.com"] == "Enable"
    assert buttons["ready@acme-outreach.com"] == "Test"  # short on a row; whole in its title
    # The buttons sit under the status, inside the list's box at 1280 px.
    box = laptop.locator("#changelist .results").bounding_box()
    for button in laptop.locator("button.fleet-row-action").all():
        edge = button.bounding_box()
        assert edge["x"] + edge["width"] <= min(box["x"] + box["width"], WIDTH)
    laptop.shots("manager-list")

    logout(laptop, live_server)
    log_in(laptop, live_server, "alice")
    laptop.goto(f"{live_server.url}/admin/fleet/mailbox/?q=acme-outreach.com")
    buttons = row_buttons()
    assert buttons["waiting@acme-outreach.com"] == "Connect"  # not Approve
    assert buttons["off@acme-outreach.com"] == "—"
    laptop.shots("operator-list")
    laptop.locator("#result_list tr", has_text="ready@acme-outreach.com").locator(
        "button.fleet-row-action"
    ).click()
    # Back on the same list (its search kept), the test queued; the worker signs in.
    expect(laptop.locator("ul.messagelist")).to_contain_text("Connection test of ready@")
    assert "q=acme-outreach.com" in laptop.url
    for _ in range(40):
        ready.refresh_from_db()
        if ready.status == "active":
            break
        laptop.wait_for_timeout(250)
    assert ready.status == "active" and not ready.error_code
    laptop.reload()
    expect(laptop.locator("#result_list tr", has_text="ready@acme-outreach.com")).to_contain_text(
        "Active"
    )
    laptop.shots("tested-from-the-row")


def test_dashboard_buttons(laptop, live_server, people, val, ws_a, oauth_app, settings):
    settings.FLEET_BASE_URL = live_server.url
    for name in ("eve", "omar"):
        Mailbox.objects.create(
            workspace=ws_a,
            email=f"{name}@acme-outreach.com",
            auth_method="oauth",
            status="reauth_required",
        )
    Mailbox.objects.create(
        workspace=ws_a,
        email="dan@acme-outreach.com",
        auth_method="app_password",
        password="pw",
        status="error",
        error_code=errors.INVALID_CREDENTIALS.code,
    )
    log_in(laptop, live_server, "val")
    expect(laptop.locator(".fleet-reauth")).to_contain_text("2 mailboxes need reauthorization")
    assert laptop.locator("[data-cta]").count() == 0  # a viewer gets links, not buttons
    laptop.shots("viewer-dashboard")

    logout(laptop, live_server)
    log_in(laptop, live_server, "alice")
    laptop.shots("operator-dashboard")
    laptop.click("[data-cta=retest-INVALID_CREDENTIALS]")
    expect(laptop.locator("ul.messagelist")).to_contain_text(
        "Connection tests queued for 1 mailbox(es) with INVALID_CREDENTIALS"
    )
    assert DBTaskResult.objects.filter(task_path="fleet.tasks.test_due_mailboxes").count() == 1

    laptop.get_by_role("button", name="Reconnect 2 mailboxes").click()
    expect(laptop.locator("#reconnect-progress")).to_contain_text("0 of 2 reconnected")
    expect(laptop.locator("#reconnect-links")).to_contain_text("eve@acme-outreach.com")
    assert ConsentRequest.objects.filter(kind="user", mailbox__status="reauth_required").count() == 2
    laptop.shots("reconnect-links")


@pytest.fixture
def mail(sandbox_mail, settings):
    """New addresses' SMTP/IMAP servers are the sandbox's (Verify signs in with XOAUTH2)."""
    settings.MAIL_SMTP_HOST = settings.MAIL_IMAP_HOST = settings.MAIL_IMAP_CONSUMER_HOST = (
        sandbox_mail.host
    )
    settings.MAIL_SMTP_PORT = sandbox_mail.smtp_port
    settings.MAIL_IMAP_PORT = sandbox_mail.imap_port
    return sandbox_mail


def test_credential_buttons(laptop, live_server, people, ws_a, graph_credential, sandbox, mail):
    from tests.test_bulk_add import CLIENT_ID, SECRET

    globex = sandbox.directory.tenant("7c4d2e9f-1b3a-4f6c-8d2e-9105ebe0b002")
    assert CLIENT_ID not in globex.consented_apps
    unconsented = Credential.objects.create(
        workspace=ws_a,
        name="Globex Graph",
        kind=Credential.Kind.GRAPH_APP_ONLY,
        tenant_id=globex.id,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        secret_expires_at=graph_credential.secret_expires_at,
    )
    log_in(laptop, live_server, "alice")  # an operator: no credential buttons
    laptop.goto(f"{live_server.url}/admin/fleet/credential/{unconsented.pk}/change/")
    assert tools(laptop) == []
    laptop.shots("operator-credential")

    logout(laptop, live_server)
    log_in(laptop, live_server, "mo")
    laptop.goto(f"{live_server.url}/admin/fleet/credential/")
    # The list's long ids are cut, with a copy button that copies the whole id.
    cell = laptop.locator("#result_list tr", has_text="Globex Graph").locator("td.field-tenant")
    cell.locator("button.fleet-copy").click()
    expect(cell.locator("button.fleet-copy")).to_have_text("Copied")
    assert laptop.evaluate("navigator.clipboard.readText()") == globex.id
    laptop.shots("credential-list-copied")

    laptop.goto(f"{live_server.url}/admin/fleet/credential/{unconsented.pk}/change/")
    assert tools(laptop) == ["Verify"]
    laptop.click("#tool-verify")
    expect(laptop.locator("ul.messagelist")).to_contain_text(
        "Globex Graph is invalid: ADMIN_APPROVAL_REQUIRED"
    )
    unconsented.refresh_from_db()
    assert unconsented.status == "invalid"
    assert tools(laptop) == ["Verify", "Request admin consent"]
    # The breadcrumb names the credential once, without doubled brackets.
    expect(laptop.locator(".breadcrumbs")).to_contain_text("Globex Graph (Graph app-only)")
    assert "))" not in laptop.locator(".breadcrumbs").inner_text()
    laptop.shots("verified-invalid")

    laptop.click("#tool-admin_consent")
    expect(laptop.locator("#consent-links-intro")).to_contain_text("Global Administrator")
    assert "mailbox owner" not in laptop.locator("#consent-links-intro").inner_text()
    admin_request = ConsentRequest.objects.get(kind="admin", credential=unconsented)
    expect(laptop.locator("#consent-links input")).to_have_value(admin_request.consent_url)
    laptop.shots("admin-consent-link")

    laptop.goto(f"{live_server.url}/admin/fleet/credential/{graph_credential.pk}/change/")
    laptop.click("#tool-verify")
    expect(laptop.locator("ul.messagelist")).to_contain_text("Acme Graph is valid")
    graph_credential.refresh_from_db()
    assert graph_credential.status == "valid" and graph_credential.last_verified_at
    # The test app holds the Graph permissions but not the Exchange ones: said, and the admin
    # consent that would grant them is offered.
    expect(laptop.locator("ul.messagelist")).to_contain_text("Missing for app-only SMTP/IMAP")
    assert tools(laptop) == ["Verify", "Request admin consent"]
    laptop.shots("verified-valid")


def test_consent_request_buttons(laptop, live_server, people, val, ws_a, oauth_app, settings):
    from fleet import consent

    settings.FLEET_BASE_URL = live_server.url
    box = Mailbox.objects.create(workspace=ws_a, email="eve@acme-outreach.com", auth_method="oauth")
    user_request = consent.initiate(ws_a, mailbox_uid=box.uid)
    external = consent.initiate(
        ws_a,
        kind="external",
        mailbox_uid=box.uid,
        consent_url="https://sequencer.example/connect?mailbox=eve",
    )

    def open_request(cr):
        laptop.goto(f"{live_server.url}/admin/fleet/consentrequest/{cr.pk}/change/")

    log_in(laptop, live_server, "val")
    open_request(user_request)
    assert tools(laptop) == ["Copy link"]
    laptop.click("#tool-copy_link")
    expect(laptop.locator("#tool-copy_link")).to_have_text("Copied")
    assert laptop.evaluate("navigator.clipboard.readText()") == user_request.consent_url
    laptop.shots("viewer-copied")
    # The list leads with whom the consent is for and its kind; the id comes last, cut.
    laptop.goto(f"{live_server.url}/admin/fleet/consentrequest/")
    headers = [h.strip().lower() for h in laptop.locator("#result_list thead th").all_inner_texts()]
    assert headers[1:3] == ["mailbox or tenant", "kind"]
    assert headers[-1] == "id"
    laptop.shots("consent-list")

    logout(laptop, live_server)
    log_in(laptop, live_server, "alice")
    open_request(external)
    assert tools(laptop) == ["Copy link", "Mark completed", "Cancel"]
    laptop.click("#tool-complete")
    expect(laptop.locator("ul.messagelist")).to_contain_text("marked completed")
    external.refresh_from_db()
    assert external.status == "completed"
    assert tools(laptop) == []
    laptop.shots("external-completed")

    open_request(user_request)
    assert tools(laptop) == ["Copy link", "Cancel"]
    laptop.click("#tool-cancel")
    expect(laptop.locator("ul.messagelist")).to_contain_text("cancelled")
    user_request.refresh_from_db()
    assert user_request.status == "cancelled"
    assert tools(laptop) == []
    laptop.shots("user-cancelled")


def test_import_batch_retest_failed(laptop, live_server, people, val, ws_a, sandbox_mail, worker):
    fixed = point_at(
        Mailbox.objects.create(
            workspace=ws_a,
            email="cara@acme-outreach.com",
            auth_method="app_password",
            password=SANDBOX_APP_PASSWORD,  # corrected since the import
            status="error",
            error_code=errors.INVALID_CREDENTIALS.code,
        ),
        sandbox_mail,
    )
    sandbox_mail.add(fixed.email, SANDBOX_APP_PASSWORD)
    fine = Mailbox.objects.create(
        workspace=ws_a,
        email="ava@acme-outreach.com",
        auth_method="app_password",
        password="pw",
        status="active",
    )
    batch = ImportBatch.objects.create(
        workspace=ws_a, file_name="acme.csv", total_rows=2, imported=2
    )
    batch.mailboxes.set([fixed, fine])
    url = f"{live_server.url}/admin/fleet/importbatch/{batch.pk}/change/"

    log_in(laptop, live_server, "val")
    laptop.goto(url)
    assert tools(laptop) == []
    logout(laptop, live_server)
    log_in(laptop, live_server, "alice")
    laptop.goto(url)
    assert tools(laptop) == ["Retest failed"]
    laptop.shots("batch-with-a-failure")
    laptop.click("#tool-retest_failed")
    expect(laptop.locator("ul.messagelist")).to_contain_text("queued for 1 failed mailbox")
    for _ in range(40):
        fixed.refresh_from_db()
        if fixed.status == "active":
            break
        laptop.wait_for_timeout(250)
    assert fixed.status == "active"
    laptop.reload()
    assert tools(laptop) == []  # nothing failed any more
    laptop.shots("retested")


def test_bulk_add_run_buttons(
    laptop, live_server, people, val, ws_a, graph_credential, worker_env, worker
):
    run = BulkAddRun.objects.create(
        workspace=ws_a,
        credential=graph_credential,
        status="finished",
        outcome="partly_connected",
        total=3,
        processed=3,
        connected=1,
        failed=2,
        finished_at=timezone.now(),
    )
    for n, (email, code) in enumerate(
        [
            ("rosa@acme-outreach.com", ""),
            ("sam@acme-outreach.com", errors.THROTTLED.code),
            ("sales@acme-outreach.com", errors.WRONG_ALIAS.code),
        ]
    ):
        BulkAddResult.objects.create(
            run=run, position=n, email=email, done=True, success=not code, error_code=code
        )
    url = f"{live_server.url}/admin/fleet/bulkaddrun/{run.pk}/change/"

    log_in(laptop, live_server, "val")
    laptop.goto(url)
    assert tools(laptop) == ["Export CSV"]
    with laptop.expect_download() as download:
        laptop.click("#tool-export")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert "sam@acme-outreach.com" in text and "THROTTLED" in text
    laptop.shots("viewer-run")

    logout(laptop, live_server)
    log_in(laptop, live_server, "alice")
    laptop.goto(url)
    assert tools(laptop) == ["Export CSV", "Run again for failed"]
    laptop.shots("operator-run")
    laptop.click("#tool-run_again")
    again = BulkAddRun.objects.exclude(pk=run.pk).get()
    laptop.wait_for_url(re.compile(rf"/admin/fleet/bulkaddrun/{again.pk}/"))
    assert sorted(again.results.values_list("email", flat=True)) == [
        "sales@acme-outreach.com",
        "sam@acme-outreach.com",
    ]
    # The worker runs it against the sandbox's Graph: sam connects now, the alias does not.
    expect(laptop.locator("#content-main")).to_contain_text("2 of 2 checked", timeout=30_000)
    again.refresh_from_db()
    assert again.connected == 1 and again.failed == 1
    assert again.results.get(email="sam@acme-outreach.com").success
    laptop.shots("run-again-finished")
