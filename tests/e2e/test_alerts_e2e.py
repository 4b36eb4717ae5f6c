"""Disconnect alerts in Chromium at 1280 px: the digest e-mail's HTML as a mail client shows it
(received by a real SMTP server), and a manager opting out on their own membership page."""

import pytest
from playwright.sync_api import expect

from fleet import alerts, errors
from fleet.models import Mailbox, Membership, Role
from tests.conftest import make_user
from tests.e2e.conftest import log_in
from tests.e2e.test_admin_ux_e2e import laptop  # noqa: F401 (fixture)
from tests.test_alerts import smtp  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_digest_reads_well_and_a_manager_opts_out(laptop, live_server, ws_a, smtp, settings):
    settings.FLEET_BASE_URL = live_server.url
    manager = make_user("mona", email="mona@agency.example")
    mine = Membership.objects.create(user=manager, workspace=ws_a, role=Role.MANAGER)
    for name, code in [
        ("ann", errors.INVALID_CREDENTIALS),
        ("ben", errors.SMTP_AUTH_DISABLED),
        ("cid", errors.REAUTH_REQUIRED),
    ]:
        box = Mailbox.objects.create(
            workspace=ws_a,
            email=f"{name}@alpha.example",
            auth_method="app_password",
            status="active",
        )
        box.set_status("reauth_required" if code is errors.REAUTH_REQUIRED else "error", code)
    back = Mailbox.objects.create(
        workspace=ws_a,
        email="dee@alpha.example",
        auth_method="oauth",
        status="error",
        error_code="CONNECTION_TIMEOUT",
    )
    back.set_status("active")
    alerts.send_due(owner="local-test")
    (message,) = smtp.messages

    page = laptop
    page.set_content(message.body("html"))
    expect(page.get_by_role("heading", name="Disconnected (3)")).to_be_visible()
    expect(page.get_by_role("heading", name="Reconnected (1)")).to_be_visible()
    expect(page.get_by_text(errors.SMTP_AUTH_DISABLED.hint)).to_be_visible()
    page.shots("digest-email")

    # Her own opt-out link, followed in the admin.
    log_in(page, live_server, "mona")
    opt_out = f"{live_server.url}/admin/fleet/membership/{mine.pk}/change/"
    page.goto(opt_out)
    box = page.get_by_label("Alert e-mails")
    expect(box).to_be_checked()
    expect(page.locator("select[name=role]")).to_have_count(0)  # a manager's own: only this
    page.shots("membership-alert-emails")
    box.uncheck()
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    page.shots("after-opting-out")
    mine.refresh_from_db()
    assert mine.alert_emails is False

    # The digest as the admin keeps it: to whom, what it carried, each code with its hint.
    page.goto(f"{live_server.url}/admin/fleet/alertdigest/")
    expect(page.locator("#result_list")).to_contain_text("mona@agency.example")
    page.shots("digest-list")
    page.locator("#result_list tbody a").first.click()
    expect(page.get_by_text(errors.SMTP_AUTH_DISABLED.hint[:30])).to_be_visible()
    page.shots("digest-page")
