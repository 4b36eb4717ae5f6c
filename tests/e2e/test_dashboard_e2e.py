"""The dashboard in the browser: every figure links to a list showing that many rows; and a
viewer sees only their workspace and cannot act."""

import re

import pytest
from playwright.sync_api import expect

from fleet.models import ConsentRequest, Mailbox
from tests.e2e.conftest import log_in
from tests.test_dashboard import add_mailboxes

pytestmark = pytest.mark.django_db(transaction=True)


def count_in_list(page) -> int:
    """The number of rows the changelist says it shows ("12 mailboxes", "3 consent requests")."""
    text = page.locator(".paginator").inner_text()
    return int(re.search(r"(\d+)\s", text).group(1))


def test_every_figure_matches_the_list_behind_it(page, live_server, people, ws_a, ws_b):
    add_mailboxes(ws_a, 14, "a")
    add_mailboxes(ws_b, 6, "b")
    for ws in (ws_a, ws_b):
        ConsentRequest.objects.create(workspace=ws, kind="user", username="u", domain="x.example")
    log_in(page, live_server, "mo")  # manager of A only
    page.shots("dashboard")
    figures = page.locator("a[data-figure]")
    targets = []
    for i in range(figures.count()):
        link = figures.nth(i)
        count = link.locator(".fleet-card-count")
        shown = count.inner_text() if count.count() else link.inner_text()
        targets.append(
            (link.get_attribute("data-figure"), int(shown.split()[0]), link.get_attribute("href"))
        )
    assert len(targets) >= 10
    checked = 0
    for name, shown, href in targets:
        page.goto(f"{live_server.url}{href}")
        assert count_in_list(page) == shown, (name, href)
        checked += shown
    assert checked > 14  # the figures are not all zero
    page.shots("last-list")
    # A's figures only: B's mailboxes are counted nowhere.
    page.goto(f"{live_server.url}/admin/")
    total = page.locator(".fleet-total").inner_text()
    assert total.startswith("14 mailboxes")


def test_viewer_sees_only_their_workspace_and_cannot_act(page, live_server, people, ws_a, ws_b):
    a = Mailbox.objects.create(workspace=ws_a, email="secret@alpha.example", auth_method="oauth")
    b = Mailbox.objects.create(workspace=ws_b, email="seen@beta.example", auth_method="oauth")
    log_in(page, live_server, "vic")  # viewer of B
    expect(page.locator("h1")).to_contain_text("All your workspaces")
    assert page.locator(".fleet-total").inner_text().startswith("1 mailbox")
    page.shots("viewer-dashboard")

    page.goto(f"{live_server.url}/admin/fleet/mailbox/")
    expect(page.locator("#result_list")).to_contain_text("seen@beta.example")
    assert "secret@alpha.example" not in page.content() and "Alpha" not in page.content()
    assert page.locator("select[name=action]").count() == 0  # no action to run
    assert page.locator(".object-tools a[href$='/import/']").count() == 0
    page.shots("viewer-list")

    response = page.goto(f"{live_server.url}/admin/fleet/mailbox/{a.pk}/change/")
    assert response.status == 404
    page.goto(f"{live_server.url}/admin/fleet/mailbox/{b.pk}/change/")
    assert page.locator("input[name=_save]").count() == 0  # read only
    page.shots("viewer-mailbox-read-only")


def test_sweep_now_on_the_workspace_page(page, live_server, people, ws_a):
    """An operator's *Sweep now* on the workspace page queues a test of each of its mailboxes
    (disabled ones excepted) and says so, with a link to their list."""
    add_mailboxes(ws_a, 4, "s")
    log_in(page, live_server, "mo")
    page.goto(f"{live_server.url}/admin/fleet/workspace/{ws_a.pk}/change/")
    page.shots("workspace-with-sweep-now")
    page.click("#tool-sweep_now")
    expect(page.locator("ul.messagelist")).to_contain_text("queued for a connection test")
    page.shots("sweep-now-queued")
    due = Mailbox.objects.filter(workspace=ws_a, check_due_at__isnull=False)
    assert due.count() == Mailbox.objects.filter(workspace=ws_a).exclude(status="disabled").count()
