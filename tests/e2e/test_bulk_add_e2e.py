"""A manager pastes addresses in the browser, runs a Graph app-only bulk add against the
Microsoft sandbox (Graph over HTTPS, DNS on loopback) in a real worker, and reads every
mailbox's code and what to do about it."""

import re

import pytest
from playwright.sync_api import expect

from fleet.models import BulkAddRun
from tests.e2e.conftest import log_in
from tests.test_bulk_add import dns_zone, fresh_tokens, graph_credential, tenant  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


LINES = """ava@acme-outreach.com,Ava Stone
sales@acme-outreach.com,Sales desk
nobody@acme-outreach.com
paul@acme-outreach.com,Paul (no licence)
quinn@acme-outreach.com
tom@acme-sales.example,Tom
"""


def test_bulk_add_and_read_the_codes(
    page, live_server, people, graph_credential, worker_env, worker
):
    shot = page.shots
    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/admin/fleet/mailbox/")
    page.get_by_role("link", name="Bulk add (Graph)").click()
    page.fill("textarea[name=accounts]", "not-an-address\n" + LINES)
    shot("form-with-a-bad-line")
    page.click("input[type=submit]")
    expect(page.locator(".errorlist")).to_contain_text("not-an-address")
    assert not BulkAddRun.objects.exists()  # bad lines are reported before anything runs
    shot("bad-line-reported")

    page.fill("textarea[name=accounts]", LINES)
    page.click("input[type=submit]")
    run = BulkAddRun.objects.get()
    page.wait_for_url(re.compile(rf"/admin/fleet/bulkaddrun/{run.pk}/"))
    shot("run-started")
    # The results page follows the run without a reload until it is finished.
    expect(page.locator("#content-main")).to_contain_text("6 of 6 checked", timeout=30_000)
    expect(page.locator("#content-main")).to_contain_text("Partly connected")
    shot("run-finished")

    codes = page.locator("table.fleet-codes")
    for code in ("WRONG_ALIAS", "MAILBOX_NOT_FOUND", "MAILBOX_NOT_ENABLED", "ACCESS_DENIED"):
        expect(codes).to_contain_text(code)
    expect(page.locator("table.fleet-results")).to_contain_text(
        "primary address: olivia@acme-outreach.com"
    )
    page.locator("table.fleet-codes a", has_text="WRONG_ALIAS").click()
    rows = page.locator("table.fleet-results tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("sales@acme-outreach.com")
    shot("filtered-by-code")
    run.refresh_from_db()
    assert (run.status, run.outcome, run.connected, run.failed) == (
        "finished",
        "partly_connected",
        2,
        4,
    )
