"""A person imports a CSV in the browser: upload, preview, confirm, watch the progress bar, and
end with every mailbox active or in error with a code (tests run by a real worker against real
SMTP/IMAP servers on loopback)."""

import re

import pytest
from playwright.sync_api import expect

from fleet.models import ImportBatch, Mailbox
from sandbox.mailservers import SMTP_AUTH_DISABLED, MailServers
from tests.e2e.conftest import log_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mail(settings, monkeypatch):
    with MailServers(reply_delay=0.05) as servers:
        values = {
            "MAIL_SMTP_HOST": servers.host,
            "MAIL_SMTP_PORT": servers.smtp_port,
            "MAIL_IMAP_HOST": servers.host,
            "MAIL_IMAP_CONSUMER_HOST": servers.host,
            "MAIL_IMAP_PORT": servers.imap_port,
            "MAIL_TLS_CA_FILE": servers.ca_file,
            "MAIL_TIMEOUT": 5,
        }
        for name, value in values.items():
            setattr(settings, name, value)  # the live server (this process)
            monkeypatch.setenv(name, str(value))  # the worker process
        yield servers


def test_import_preview_confirm_progress(page, live_server, people, ws_a, mail, worker, tmp_path):
    mail.add("ann@contoso.example", password="good-ann")
    mail.add("ben@contoso.example", password="good-ben")
    mail.add("cat@contoso.example", password="good-cat", smtp_reply=SMTP_AUTH_DISABLED)
    mail.add("dee@hotmail.com", password="good-dee")
    csv_file = tmp_path / "spring-batch.csv"
    csv_file.write_text(
        "Email; Password; Name\n"
        "ann@contoso.example;good-ann;Ann\n"
        "ben@contoso.example;wrong-password;Ben\n"
        "cat@contoso.example;good-cat;Cat\n"
        "dee@hotmail.com;good-dee;Dee\n"
        "ann@contoso.example;again;Ann twice\n"
        "not-an-address;x;Nobody\n",
        encoding="utf-8-sig",
    )
    shot = page.shots
    log_in(page, live_server, "alice")
    shot("logged-in")

    page.goto(f"{live_server.url}/admin/fleet/mailbox/")
    page.click(".object-tools a[href$='/admin/fleet/mailbox/import/']")
    page.select_option("select[name=workspace]", str(ws_a.pk))
    page.fill("input[name=tag]", "spring")
    page.set_input_files("input[name=import_file]", str(csv_file))
    shot("upload-form")
    page.get_by_role("button", name=re.compile("submit", re.I)).click()

    expect(page.locator(".fleet-import-summary")).to_contain_text("4 to import")
    expect(page.locator("body")).to_contain_text("1 duplicate")
    expect(page.locator("body")).to_contain_text("not-an-address")
    assert "good-ann" not in page.content()  # no secret in the preview
    assert not Mailbox.objects.exists()  # the preview wrote nothing
    shot("preview")

    page.get_by_role("button", name=re.compile("Confirm import", re.I)).click()
    batch = ImportBatch.objects.get()
    page.wait_for_url(re.compile(rf"/admin/fleet/importbatch/{batch.pk}/"))
    shot("progress-started")
    # The bar is refreshed from the progress endpoint, without reloading the page.
    expect(page.locator("[data-key=tested]")).to_have_text("4", timeout=30_000)
    expect(page.locator("[data-key=active]")).to_have_text("2")
    expect(page.locator("[data-key=failed]")).to_have_text("2")
    shot("progress-finished")

    page.get_by_role("link", name="see these mailboxes").click()
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(4)
    expect(page.locator("#result_list")).to_contain_text("INVALID_CREDENTIALS")
    expect(page.locator("#result_list")).to_contain_text("SMTP_AUTH_DISABLED")
    shot("final-statuses")
    statuses = dict(Mailbox.objects.values_list("email", "status"))
    assert statuses == {
        "ann@contoso.example": "active",
        "ben@contoso.example": "error",
        "cat@contoso.example": "error",
        "dee@hotmail.com": "active",
    }
