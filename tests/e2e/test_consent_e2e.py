"""A manager connects a mailbox in the browser through the Microsoft sandbox's consent page and
comes back to it active, its XOAUTH2 connection test passed in a real worker."""

import re

import pytest
from playwright.sync_api import expect

from fleet.models import Mailbox
from tests.e2e.conftest import log_in
from tests.mail_fixtures import point_at

pytestmark = pytest.mark.django_db(transaction=True)


def test_connect_through_the_sandbox_consent_page(
    page, live_server, people, ws_a, sandbox, sandbox_mail, oauth_app, settings, worker
):
    settings.FLEET_BASE_URL = live_server.url  # the redirect URI the sandbox sends the browser to
    nora = Mailbox.objects.create(
        workspace=ws_a, email="nora@acme-outreach.com", auth_method="oauth", display_name="Nora"
    )
    point_at(nora, sandbox_mail)
    shot = page.shots
    log_in(page, live_server, "mo")
    page.goto(f"{live_server.url}/admin/fleet/mailbox/?q=nora")
    page.check("input[name=_selected_action]")
    page.select_option("select[name=action]", "connect_with_microsoft")
    shot("connect-action")
    page.click("button[name=index]")

    page.wait_for_url(re.compile(re.escape(sandbox.browser_url)))
    assert page.url.startswith("http://127.0.0.1")  # plain http on loopback: no certificate warning
    expect(page.locator("input[name=username]")).to_have_value(
        "nora@acme-outreach.com"
    )  # login_hint
    if page.locator("input[type=password]").count():
        page.fill("input[type=password]", "sandbox")
    shot("sandbox-consent-page")
    page.click("button[value=accept]")

    page.wait_for_url(re.compile(r"/oauth/callback/"))
    expect(page.locator("h1")).to_contain_text("Connected: nora@acme-outreach.com")
    shot("connected")

    page.goto(f"{live_server.url}/admin/fleet/mailbox/{nora.pk}/change/")
    for _ in range(30):  # the worker runs the XOAUTH2 test within a few seconds
        if "Connection test" in page.locator(".fleet-history:not(#last-checks)").inner_text():
            break
        page.wait_for_timeout(500)
        page.reload()
    history = page.locator(".fleet-history:not(#last-checks)").inner_text()
    assert "Connection test" in history and "pending → active" in history
    shot("mailbox-active-with-history")
    nora.refresh_from_db()
    assert nora.status == "active" and nora.last_checked_at and not nora.error_code


def test_denied_consent_says_what_to_do(
    page, live_server, people, ws_a, sandbox, oauth_app, settings
):
    settings.FLEET_BASE_URL = live_server.url
    Mailbox.objects.create(workspace=ws_a, email="ava@acme-outreach.com", auth_method="oauth")
    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/admin/fleet/mailbox/?q=ava")
    page.check("input[name=_selected_action]")
    page.select_option("select[name=action]", "connect_with_microsoft")
    page.click("button[name=index]")
    page.wait_for_url(re.compile(re.escape(sandbox.browser_url)))
    if page.locator("input[type=password]").count():
        page.fill("input[type=password]", "sandbox")
    page.click("button[value=deny]")
    page.wait_for_url(re.compile(r"/oauth/callback/"))
    expect(page.locator("body")).to_contain_text("CONSENT_DENIED")
    expect(page.locator("body")).to_contain_text("Accept")  # the hint: open the link again, accept
    assert "Traceback" not in page.content()
    page.shots("denied")
