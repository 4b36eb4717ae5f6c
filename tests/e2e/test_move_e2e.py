"""The demo's way off Basic auth in Chromium at 1280 px: the dashboard says how many app-password
mailboxes stop working when Basic auth is turned off; two clicks (the move plan, then the move)
move them — a real `db_worker` verifies the sandbox's Graph app and runs the move against the
Microsoft sandbox and its SMTP/IMAP servers."""

import time

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from fleet.models import Credential, Mailbox, MoveRun
from tests.test_basic_auth_move import fresh_tokens, mail  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def demo(sandbox, mail, settings, monkeypatch, worker_env):
    """The demo's data (seed_demo) with Fleet pointing at the sandbox; worker processes too."""
    for name in ("MAIL_SMTP_HOST", "MAIL_SMTP_PORT", "MAIL_IMAP_HOST", "MAIL_IMAP_PORT"):
        monkeypatch.setenv(name, str(getattr(settings, name)))
    monkeypatch.setenv("MAIL_IMAP_CONSUMER_HOST", settings.MAIL_IMAP_CONSUMER_HOST)
    settings.SANDBOX_APP_PASSWORD = "sandbox-app-password"
    call_command("seed_demo")


def wait_for(condition, seconds=40):
    for _ in range(int(seconds * 5)):
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_the_demo_moves_off_basic_auth_in_two_clicks(demo, worker, page, live_server):
    graph_app = Credential.objects.get(kind="graph_app_only", workspace__slug="acme")
    assert wait_for(lambda: Credential.objects.get(pk=graph_app.pk).status == "valid")
    assert Credential.objects.get(pk=graph_app.pk).has_exchange_roles
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "fleet-demo")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    # Acme's dashboard (Globex, the viewer's workspace, has app-password mailboxes of its own).
    acme = graph_app.workspace_id
    page.goto(f"{live_server.url}/admin/?workspace={acme}")
    figure = page.locator("[data-figure=basic-auth-affected]")
    expect(figure).to_contain_text("stop working when Basic auth is turned off")
    # cara, dan, tara (Acme) and hal (Outlook.com); ivy is disabled.
    expect(figure.locator("strong").first).to_have_text("4")
    page.shots("dashboard")

    page.click("text=Open the move plan")  # click 1
    expect(page.locator("#move-plan")).to_contain_text("acme-outreach.com")
    expect(page.locator("tr[data-group=app_only]")).to_contain_text("3")
    expect(page.locator("tr[data-group=consent]")).to_contain_text("outlook.com")
    expect(page.locator("tr[data-group=blocked]")).to_contain_text("hotmail.com")
    page.shots("move-plan")

    page.click("#start-move")  # click 2
    expect(page.locator("#move-items")).to_be_visible()
    assert wait_for(lambda: MoveRun.objects.get().status == "finished")
    page.reload()
    expect(page.locator("#move-status")).to_have_text("Finished")
    expect(page.locator("#move-figures")).to_contain_text("2 moved")
    expect(page.locator("#move-items")).to_contain_text("APP_NOT_GRANTED_ON_MAILBOX")
    page.shots("move-run")
    moved = Mailbox.objects.filter(auth_method="graph_app_only", password="").values_list(
        "email", flat=True
    )
    assert {"cara@acme-outreach.com", "dan@acme-outreach.com"} <= set(moved)
    assert str(Mailbox.objects.get(email="tara@acme-outreach.com").password)  # kept

    page.click("#move-consent-links")
    expect(page.locator("#consent-links")).to_contain_text("hal.sales@outlook.com")
    page.shots("consent-links")
