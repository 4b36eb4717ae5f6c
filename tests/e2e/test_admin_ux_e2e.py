"""The admin at a laptop's 1280x800, in Chromium: chart labels readable, every list column
on screen, hints visible without hovering, and a viewer's 403 page (issue 14)."""

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from fleet import errors
from fleet.models import Credential, Mailbox, MailboxEvent, Membership
from tests.e2e.conftest import Shots, log_in
from tests.test_dashboard import add_mailboxes

pytestmark = pytest.mark.django_db(transaction=True)
WIDTH, HEIGHT = 1280, 800


@pytest.fixture
def laptop(browser, request):
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.shots = Shots(page, request.node.name)
    yield page
    context.close()


def long_fleet(ws):
    """Mailboxes and credentials with the longest values the lists meet."""
    Mailbox.objects.create(
        workspace=ws,
        email="a.very.long.mailbox.address.for.outreach@subsidiary.contoso-outreach-example.com",
        display_name="A display name that goes on and on",
        auth_method="app_password",
        password="pw",
        status=Mailbox.Status.ERROR,
        error_code=errors.SMTP_AUTH_DISABLED.code,
        last_checked_at=timezone.now(),
    )
    for i in range(3):
        Credential.objects.create(
            workspace=ws,
            name=f"Graph app registration of the tenant {i}",
            kind=Credential.Kind.GRAPH_APP_ONLY,
            tenant_id="6f1c2a9e-3b7d-4e58-9a0c-1d2e3f4a5b6c",
            client_id="0a1b2c3d-4e5f-6789-abcd-ef0123456789",
            client_secret="s3cret",
            status=Credential.Status.INVALID,
            last_error=errors.ADMIN_APPROVAL_REQUIRED.code,
        )


def columns_inside(page) -> list[tuple[str, float, float]]:
    """Each column header of the result list: (text, left, right) and the right edge of what
    shows of it: the list scrolls inside its box, so the box's edge is what counts."""
    return page.eval_on_selector_all(
        "#result_list thead th",
        "ths => { const box = document.querySelector('#changelist .results')"
        ".getBoundingClientRect(); return ths.map(th => { const r = th.getBoundingClientRect();"
        " return [th.innerText.trim(), r.left, r.right, Math.min(box.right, innerWidth)]; }); }",
    )


def test_chart_labels_are_readable(laptop, live_server, people, ws_a):
    add_mailboxes(ws_a, 6, "a")
    box = Mailbox.objects.filter(workspace=ws_a).first()
    MailboxEvent.objects.create(
        workspace=ws_a, mailbox=box, email=box.email, kind="status",
        from_status="pending", to_status="active",
    )
    log_in(laptop, live_server, "mo")
    chart = laptop.locator("#trend-chart")
    chart.scroll_into_view_if_needed()
    laptop.shots("dashboard-chart")
    ticks = laptop.eval_on_selector_all(
        "#trend-chart .fleet-tick",
        "els => els.map(e => [e.innerText, parseFloat(getComputedStyle(e).fontSize),"
        " e.getBoundingClientRect().height])",
    )
    assert len(ticks) >= 5  # day labels, the axis figures, the units
    for text, size, height in ticks:
        assert size >= 11 and height >= 11, (text, size, height)
    assert "per day" in chart.locator(".fleet-trend-units").inner_text()
    assert chart.locator(".fleet-trend-title").inner_text()
    assert chart.locator("svg > title").text_content()
    assert "made" in chart.locator("svg > desc").text_content()


@pytest.mark.parametrize("who", ["mo", "vic"])
def test_lists_show_every_column_at_1280(laptop, live_server, people, ws_a, ws_b, who):
    Membership.objects.create(user=people["vic"], workspace=ws_a, role="viewer")
    long_fleet(ws_a)
    add_mailboxes(ws_a, 5, "a")
    log_in(laptop, live_server, who)
    for name, path in (("mailboxes", "mailbox"), ("credentials", "credential")):
        laptop.goto(f"{live_server.url}/admin/fleet/{path}/")
        laptop.shots(f"{name}-{who}")
        columns = columns_inside(laptop)
        assert len(columns) >= 6
        off = [c for c in columns if c[1] < 0 or c[2] > c[3] + 0.5]
        assert off == [], f"{name}: columns off-screen at {WIDTH}px: {off}"
        # No horizontal scrolling of the page either.
        assert laptop.evaluate("document.documentElement.scrollWidth") <= WIDTH


def test_hints_are_visible_without_hovering(laptop, live_server, people, ws_a):
    long_fleet(ws_a)
    log_in(laptop, live_server, "alice")
    laptop.goto(f"{live_server.url}/admin/fleet/mailbox/")
    hint = laptop.locator("#result_list .fleet-hint").first
    assert hint.is_visible()
    assert hint.inner_text() == errors.SMTP_AUTH_DISABLED.hint
    laptop.shots("list-hint")
    laptop.locator("#result_list tbody a").first.click()
    explained = laptop.locator(".fleet-error-explained")
    expect(explained).to_be_visible()  # once the mailbox's page has loaded
    text = explained.inner_text()
    assert errors.SMTP_AUTH_DISABLED.code in text and errors.SMTP_AUTH_DISABLED.hint in text
    assert "Seen " in text
    explained.scroll_into_view_if_needed()
    laptop.shots("mailbox-page-hint")


def test_403_page_for_a_viewer(laptop, live_server, people, ws_b):
    log_in(laptop, live_server, "vic")
    laptop.goto(f"{live_server.url}/admin/fleet/mailbox/")
    assert laptop.locator("text=Bulk add (Graph)").count() == 0  # not offered
    laptop.evaluate("location.href = '/admin/fleet/bulkaddrun/start/'")  # typed in, say
    laptop.wait_for_url("**/bulkaddrun/start/")
    laptop.shots("403")
    assert "needs the operator role" in laptop.locator("#forbidden-reason").inner_text()
    assert laptop.locator("#site-name").is_visible()  # the admin's frame
    laptop.locator("#forbidden-back").click()
    laptop.wait_for_url("**/admin/fleet/mailbox/")
