"""Every code with its hint, inline: the mailbox page, the list, an import batch's page, the
export; form errors are sentences without internal codes."""

import csv
import io
import re

from django.urls import reverse
from django.utils import timezone

from fleet import errors
from fleet.models import ImportBatch, Mailbox

CODE = errors.INVALID_CREDENTIALS


def text_of(html: str) -> str:
    """What a reader sees without hovering: tags and attributes (title=…) dropped."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def failing_mailbox(ws, email="ann@alpha.example"):
    return Mailbox.objects.create(
        workspace=ws,
        email=email,
        auth_method="app_password",
        password="pw",
        status=Mailbox.Status.ERROR,
        error_code=CODE.code,
        error_message="535 5.7.3 Authentication unsuccessful",
        last_checked_at=timezone.now(),
    )


def test_mailbox_page_shows_code_message_hint_and_when(ws_a, personas, client_for):
    mailbox = failing_mailbox(ws_a)
    page = client_for(personas["alice"]).get(reverse("admin:fleet_mailbox_change", args=[mailbox.pk]))
    shown = text_of(page.content.decode())
    assert CODE.code in shown
    assert "535 5.7.3 Authentication unsuccessful" in shown
    assert f"What to do: {CODE.hint}" in shown
    assert "Seen " + timezone.localtime(mailbox.last_checked_at).strftime("%Y-%m-%d") in shown


def test_list_shows_the_hint_under_the_code(ws_a, personas, client_for):
    failing_mailbox(ws_a)
    page = client_for(personas["alice"]).get(reverse("admin:fleet_mailbox_changelist"))
    html = page.content.decode()
    assert re.search(rf'{CODE.code}</code><span class="fleet-hint">{re.escape(CODE.hint[:30])}', html)
    assert CODE.hint in text_of(html)  # in the text, not only in a title attribute


def test_import_batch_page_lists_failed_tests(ws_a, personas, client_for):
    bad = failing_mailbox(ws_a)
    good = Mailbox.objects.create(
        workspace=ws_a, email="ok@alpha.example", auth_method="oauth", status="active"
    )
    batch = ImportBatch.objects.create(workspace=ws_a, file_name="m.csv", imported=2)
    batch.mailboxes.add(bad, good)
    page = client_for(personas["alice"]).get(reverse("admin:fleet_importbatch_change", args=[batch.pk]))
    html = page.content.decode()
    table = html[html.index('id="failed-tests"') :]
    table = table[: table.index("</table>")]
    assert reverse("admin:fleet_mailbox_change", args=[bad.pk]) in table
    assert CODE.code in table and CODE.hint in text_of(table)
    assert "ok@alpha.example" not in table


def test_export_carries_the_hint(ws_a, personas, client_for):
    failing_mailbox(ws_a)
    c = client_for(personas["alice"])
    response = c.post(
        reverse("admin:fleet_mailbox_export"),
        {"format": "0", "resource": "0", **{f"mailboxexportresource_{f}": "on" for f in (
            "email", "error_code", "error_message", "error_hint")}},
    )
    assert response.status_code == 200, response.content[:500]
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0]["error_hint"] == CODE.hint


def test_bulk_add_form_errors_are_sentences_without_codes(ws_a, personas, client_for):
    page = client_for(personas["alice"]).post(
        reverse("admin:fleet_bulkaddrun_start"),
        {"workspace": ws_a.pk, "accounts": "ok@alpha.example\nnot an address\n"},
    )
    html = page.content.decode()
    assert page.status_code == 200
    assert "VALIDATION_ERROR" not in html
    assert re.search(r"<li>Line 2: [^<]+\.</li>", html), text_of(html)[-1500:]
