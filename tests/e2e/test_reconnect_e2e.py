"""Bulk reconnect in Chromium at 1280 px: the mailbox list's "Reconnect all failing", the links
page (progress, copy, CSV, e-mail form), one owner's consent through the sandbox, progress."""

import pytest
from django.core import mail
from playwright.sync_api import expect

from fleet.models import Mailbox, ReconnectRun
from tests.browser import press
from tests.e2e.conftest import log_in
from tests.e2e.test_object_actions_e2e import laptop  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def test_reconnect_all_failing_links_page(laptop, live_server, people, ws_a, oauth_app, settings):
    settings.FLEET_BASE_URL = live_server.url
    for name in ("ava", "ben", "cara"):
        Mailbox.objects.create(
            workspace=ws_a,
            email=f"{name}@acme-outreach.com",
            auth_method="oauth",
            status="reauth_required",
            error_code="REAUTH_REQUIRED",
        )
    Mailbox.objects.create(
        workspace=ws_a, email="dan@acme-outreach.com", auth_method="oauth", status="active"
    )
    log_in(laptop, live_server, "alice")
    laptop.goto(f"{live_server.url}/admin/fleet/workspace/{ws_a.pk}/change/")
    expect(laptop.locator("#tool-reconnect_failing")).to_be_visible()  # the workspace's button
    laptop.shots("workspace-page")
    laptop.goto(f"{live_server.url}/admin/fleet/mailbox/?status__exact=reauth_required")
    laptop.shots("failing-list")
    laptop.click("#tool-reconnect-failing")
    expect(laptop.locator("#reconnect-progress")).to_contain_text("0 of 3 reconnected")
    expect(laptop.locator("ul.messagelist")).to_contain_text("3 consent link(s) ready")
    run = ReconnectRun.objects.get()
    assert run.selection == "filtered list: status__exact=reauth_required"
    laptop.shots("links-page")

    laptop.fill("#send-all-address", "it@acme-client.example")
    laptop.get_by_role("button", name="Send all links").click()
    expect(laptop.locator("ul.messagelist")).to_contain_text("3 link(s) sent to it@acme-client")
    assert len(mail.outbox) == 1 and "ava@acme-outreach.com" in mail.outbox[0].body

    # Ava opens her link (here from the e-mail), signs in at Microsoft, and comes back.
    link = run.items.select_related("consent_request").get(email="ava@acme-outreach.com")
    laptop.goto(link.consent_request.consent_url)
    callback = press(laptop.url, "ava@acme-outreach.com")
    laptop.goto(callback)
    laptop.shots("ava-connected")
    assert Mailbox.objects.get(email="ava@acme-outreach.com").status == "active"

    laptop.goto(f"{live_server.url}/admin/fleet/reconnectrun/{run.pk}/change/")
    expect(laptop.locator("#reconnect-progress")).to_contain_text("1 of 3 reconnected")
    row = laptop.locator("#reconnect-links tr[data-email='ava@acme-outreach.com']")
    expect(row).to_contain_text("active")
    expect(row.locator("form.fleet-send-one")).to_have_count(0)  # nothing left to send her
    # The page fits the laptop's width: no horizontal scrolling.
    assert laptop.evaluate("document.documentElement.scrollWidth") <= 1280
    laptop.shots("progress")


def test_uptime_on_the_dashboard_and_the_mailbox_page(laptop, live_server, people, ws_a, ws_b):
    from fleet import errors, mailbox_checks

    ann = Mailbox.objects.create(
        workspace=ws_a, email="ann@acme-outreach.com", auth_method="app_password", status="active"
    )
    ben = Mailbox.objects.create(
        workspace=ws_b, email="ben@globex.example", auth_method="app_password", status="active"
    )
    for passed in (True, True, False, True):  # as the connection tests record them
        mailbox_checks.record(ann, None if passed else errors.INVALID_CREDENTIALS, "535 5.7.3")
    mailbox_checks.record(ben, None, "")
    log_in(laptop, live_server, "root")
    block = laptop.locator("#dashboard-uptime")
    expect(block.locator("tr[data-workspace='Alpha']")).to_contain_text("75.0 %")
    expect(block.locator("tr[data-workspace='Beta']")).to_contain_text("100.0 %")
    block.scroll_into_view_if_needed()
    laptop.shots("dashboard-uptime")
    block.locator("tr[data-workspace='Alpha'] [data-figure=disconnections-24h]").click()
    expect(laptop.locator("#result_list tbody tr")).to_have_count(1)  # the one drop counted
    laptop.shots("disconnections-listed")

    laptop.goto(f"{live_server.url}/admin/fleet/mailbox/{ann.pk}/change/")
    expect(laptop.locator("#mailbox-uptime")).to_contain_text("75.0 % of its connection tests")
    expect(laptop.locator("#last-checks tbody tr")).to_have_count(4)
    laptop.locator("#mailbox-uptime").scroll_into_view_if_needed()
    laptop.shots("mailbox-uptime")
