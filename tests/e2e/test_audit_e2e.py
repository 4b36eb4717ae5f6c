"""The audit log in the browser: a manager disables a mailbox and finds the entry (who, how,
from where, what changed) in the log, linked to the mailbox; a viewer of another workspace does
not see it."""

import pytest
from playwright.sync_api import expect

from fleet.models import Mailbox
from tests.e2e.conftest import log_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_managers_change_shows_in_the_log(page, live_server, people, ws_a, ws_b):
    page.set_viewport_size({"width": 1280, "height": 800})
    mailbox = Mailbox.objects.create(
        workspace=ws_a, email="sales@alpha.example", auth_method="app_password", status="active"
    )
    log_in(page, live_server, "mo")  # manager of A
    page.goto(f"{live_server.url}/admin/fleet/mailbox/")
    page.check(f"input[name=_selected_action][value='{mailbox.pk}']")
    page.select_option("select[name=action]", "disable")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("1 mailbox(es) disabled")

    page.goto(f"{live_server.url}/admin/fleet/auditentry/")
    row = page.locator("#result_list tbody tr").first
    expect(row).to_contain_text("mailbox.disabled")
    expect(row).to_contain_text("status: active → disabled")
    expect(row).to_contain_text("mo")
    expect(row).to_contain_text("127.0.0.1")
    expect(page.locator(".paginator")).to_contain_text("1 entry")
    page.shots("audit-log")
    row.locator("a", has_text="sales@alpha.example").click()
    expect(page.locator("h2, h1").first).to_be_visible()
    assert page.url.endswith(f"/admin/fleet/mailbox/{mailbox.pk}/change/")

    page.goto(f"{live_server.url}/admin/fleet/auditentry/?action=mailbox.disabled")
    page.locator("#result_list tbody tr th a").first.click()
    expect(page.locator("pre")).to_contain_text('"before": "active"')
    page.shots("audit-entry")


def test_a_viewer_of_another_workspace_sees_none_of_it(page, live_server, people, ws_a):
    from fleet import mailboxes

    mailbox = Mailbox.objects.create(
        workspace=ws_a, email="sales@alpha.example", auth_method="app_password", status="active"
    )
    mailboxes.disable(mailbox, actor=people["mo"], via="admin")
    log_in(page, live_server, "vic")  # viewer of B
    page.goto(f"{live_server.url}/admin/fleet/auditentry/")
    expect(page.locator(".paginator")).to_contain_text("0 entries")
