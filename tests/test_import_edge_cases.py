"""Import edge cases on both paths, the admin's upload and POST /api/v1/mailboxes/import/outlook:
refused whole with the same message (VALIDATION_ERROR), no Confirm without rows, tab-delimited
and UTF-16 "Unicode text", tags over 64 characters, byte-exact passwords, and a 0-mailbox import
that promises no connection tests."""

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from fleet import imports
from fleet.models import ImportBatch, Mailbox
from tests.test_import_admin import CONFIRM, IMPORT, confirm_data, upload

HEADER_ONLY = b"email,password,name\n"
ONLY_BAD = b"email,password\nnot-an-address,pw\n,pw-without-address\nann@contoso.com,\n"
# Excel's "Unicode text": UTF-16 LE with a BOM, tab-delimited, CRLF.
UNICODE_TEXT = "email\tpassword\tname\r\ntab@contoso.com\t  spaced pw \tTab Person\r\n".encode(
    "utf-16"
)


@pytest.fixture
def api(live_server, api_keys):
    def post(data: bytes, tag: str = "", name: str = "m.csv"):
        return requests.post(
            f"{live_server.url}/api/v1/mailboxes/import/outlook",
            headers={"X-Api-Key": api_keys["a_operator"]},
            files={"file": (name, data, "text/csv")},
            data={"tag": tag} if tag else {},
            timeout=30,
        )

    return post


def admin_error(page) -> str:
    html = page.content.decode()
    start = html.index('<ul class="errorlist')
    return html[start : html.index("</ul>", start)]


@pytest.mark.parametrize(
    "data, message",
    [
        (HEADER_ONLY, imports.NO_ROWS),
        (
            ONLY_BAD,
            imports.NOTHING_TO_IMPORT + " (row 2: Invalid email address; row 3: "
            "Missing email or password; row 4: Missing email or password)",
        ),
        (b"", imports.FILE_EMPTY),
    ],
    ids=["header-only", "only-bad-rows", "empty"],
)
def test_files_with_nothing_to_import_are_refused_alike(
    data, message, api, client_for, personas, ws_a
):
    response = api(data)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "success": False,
        "error": {"code": "VALIDATION_ERROR", "message": message},
    }
    page = upload(client_for(personas["alice"]), ws_a, data=data, tag="")
    assert page.status_code == 200
    assert message in admin_error(page)  # the same words on the form
    assert not ImportBatch.objects.exists() and not Mailbox.objects.exists()


def test_no_confirm_without_rows_to_import(
    client_for, personas, ws_a, django_capture_on_commit_callbacks
):
    """Every row a duplicate: the preview says so and offers no Confirm; a forged confirm writes
    a record but never says tests are running."""
    Mailbox.objects.create(
        workspace=ws_a, email="ann@contoso.com", auth_method="app_password", password="x"
    )
    c = client_for(personas["alice"])
    page = upload(c, ws_a, data=b"email,password\nann@contoso.com,pw\n", tag="")
    html = page.content.decode()
    assert 'id="nothing-to-import"' in html
    assert 'name="confirm"' not in html and "Confirm import" not in html

    with_rows = upload(c, ws_a, data=b"email,password\nann@contoso.com,pw\nnew@contoso.com,pw\n")
    form = confirm_data(with_rows)  # a real confirm form, then the new row is taken away
    Mailbox.objects.create(
        workspace=ws_a, email="new@contoso.com", auth_method="app_password", password="x"
    )
    with django_capture_on_commit_callbacks(execute=False) as queued:
        done = c.post(CONFIRM, form, follow=True)
    text = done.content.decode()
    assert "Nothing was imported" in text and "Connection tests are running" not in text
    assert queued == []  # no test enqueued


def test_tab_delimited_unicode_text_is_read_with_exact_passwords(
    api, client_for, personas, ws_a, ws_b
):
    response = api(UNICODE_TEXT, name="mailboxes.txt")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["imported"] == 1
    mailbox = Mailbox.objects.get(email="tab@contoso.com")
    assert mailbox.password == "  spaced pw "  # byte for byte: only addresses are trimmed
    assert mailbox.display_name == "Tab Person"

    c = client_for(personas["bob"])  # manager of A: import into A through the admin
    Mailbox.objects.filter(pk=mailbox.pk).delete()
    page = upload(c, ws_a, data=UNICODE_TEXT, name="mailboxes.txt", tag="")
    assert "1</strong> to import" in page.content.decode()
    c.post(CONFIRM, confirm_data(page))
    assert Mailbox.objects.get(email="tab@contoso.com").password == "  spaced pw "


def test_plain_tab_delimited_and_trimmed_addresses(ws_a):
    data = b"  Email \t Password\n  pad@contoso.com  \tp\xc3\xa4ss \n"
    result = imports.import_mailboxes(ws_a, data)
    assert result.imported == 1
    assert Mailbox.objects.get(email="pad@contoso.com").password == "päss "


def test_tags_over_64_characters_are_refused(api, client_for, personas, ws_a):
    long_tag = "t" * 65
    response = api(b"email,password\nx@contoso.com,pw\n", tag=long_tag)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "VALIDATION_ERROR",
        "message": imports.TAG_TOO_LONG,
    }
    page = upload(
        client_for(personas["alice"]),
        ws_a,
        data=b"email,password\nx@contoso.com,pw\n",
        tag=long_tag,
    )
    assert imports.TAG_TOO_LONG in admin_error(page)
    assert not Mailbox.objects.exists()
    ok = api(b"email,password\nx@contoso.com,pw\n", tag="t" * 64)
    assert ok.status_code == 200
    assert Mailbox.objects.get(email="x@contoso.com").tags.get().name == "t" * 64


def test_empty_file_same_message_as_the_api(client_for, personas, ws_a):
    page = client_for(personas["alice"]).post(
        IMPORT,
        {
            "workspace": ws_a.pk,
            "format": "0",
            "resource": "0",
            "import_file": SimpleUploadedFile("e.csv", b""),
        },
    )
    assert imports.FILE_EMPTY in admin_error(page)
    assert reverse("admin:fleet_mailbox_import") == IMPORT
