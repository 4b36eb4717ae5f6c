"""The admin's import (upload → preview → confirm), the batch page with its progress, export
without secrets, TOTP reveal and the Test connection action."""

import csv
import io
import re

import pyotp
import pytest
import tablib
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django_tasks_db.models import DBTaskResult
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from import_export.forms import SelectableFieldsExportForm as ExportForm

from fleet.admin.imports import MailboxExportResource
from fleet.models import ImportBatch, Mailbox, MailboxEvent

pytestmark = pytest.mark.django_db
IMPORT = reverse("admin:fleet_mailbox_import")
CONFIRM = reverse("admin:fleet_mailbox_process_import")

FILE = (
    b"email,password,name\n"
    b"ann@contoso.com,s3cret-ann,Ann\n"
    b"bob@hotmail.com,s3cret-bob,\n"
    b"ann@contoso.com,s3cret-dup,\n"
    b",s3cret-none,\n"
)


def upload(client, ws, data=FILE, name="boxes.csv", tag="spring"):
    return client.post(
        IMPORT,
        {
            "workspace": ws.pk,
            "tag": tag,
            "format": "0",
            "resource": "0",
            "import_file": SimpleUploadedFile(name, data),
        },
    )


def confirm_data(page):
    html = page.content.decode()
    form = html[html.index('action="' + CONFIRM) :]
    return dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', form[: form.index("</form>")]))


def preview_rows(page) -> list[list[str]]:
    """The preview table's rows: the row's kind, then its cells as import-export renders them."""
    html = page.content.decode()
    table = html[html.index('<table class="import-preview">') :]
    table = table[: table.index("</table>")]
    return [
        [
            re.sub(r"\s+", " ", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in re.findall(r"<tr class=[^>]*>(.*?)</tr>", table, re.S)
    ]


def test_preview_rows_show_what_each_row_brings(client_for, personas, ws_a):
    """The preview writes nothing and builds its rows from the file's values: the cells are
    import-export's own (`<ins>` for what a new row brings, escaped, secrets as dots)."""
    data = (
        b"email,password,name,totpsecret\n"
        b"jo@contoso.com,pw-jo,Jo <&> Co,JBSWY3DPEHPK3PXP\n"
        b"ann@contoso.com,pw-ann,,\n"
        b"jo@contoso.com,pw-dup,Again,\n"
        b"not-an-address,pw,,\n"
    )
    preview = upload(client_for(personas["alice"]), ws_a, data)
    ins = '<ins style="background:#e6ffe6;">{}</ins>'.format
    dots = ins("••••••")
    assert preview_rows(preview) == [
        ["New", ins("jo@contoso.com"), ins("Jo &lt;&amp;&gt; Co"), dots, dots],
        ["New", ins("ann@contoso.com"), "", dots, ""],
        ["Skipped", ins("jo@contoso.com"), ins("Again"), dots, ""],
        ["Skipped", ins("not-an-address"), "", dots, ""],
    ]
    assert not Mailbox.objects.exists()


def test_an_address_longer_than_254_characters_is_refused_in_the_preview(
    client_for, personas, ws_a
):
    long = "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com"  # valid parts, 312 characters
    assert len(long) > 254
    preview = upload(
        client_for(personas["alice"]),
        ws_a,
        f"email,password\n{long},pw\nok@contoso.com,pw\n".encode(),
    )
    html = preview.content.decode()
    assert "Invalid email address" in html and "<strong>1</strong> to import" in html


def test_upload_preview_confirm(client_for, personas, ws_a, django_capture_on_commit_callbacks):
    client = client_for(personas["alice"])
    preview = upload(client, ws_a)
    html = preview.content.decode()
    assert preview.status_code == 200
    assert "Confirm import" in html
    assert "<strong>2</strong> to import" in html and "Missing email or password" in html
    assert "s3cret" not in html  # no secret in the preview
    assert not Mailbox.objects.exists()  # the preview wrote nothing

    data = confirm_data(preview)
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(CONFIRM, data)
    batch = ImportBatch.objects.get()
    assert done.status_code == 302
    assert done["Location"] == reverse("admin:fleet_importbatch_change", args=[batch.pk])
    assert (batch.imported, batch.skipped, batch.failed) == (2, 1, 1)
    assert batch.tag.name == "spring" and batch.file_name == "boxes.csv"
    assert DBTaskResult.objects.filter(task_path="fleet.tasks.test_due_mailboxes").count() == 1
    assert Mailbox.objects.filter(check_due_at__isnull=False).count() == 2

    page = client.get(done["Location"])
    assert page.status_code == 200
    body = page.content.decode()
    assert "fleet-progress" in body and "import_progress.js" in body
    assert "Missing email or password" in body
    progress = client.get(reverse("admin:fleet_importbatch_progress", args=[batch.pk])).json()
    assert progress == {"total": 2, "tested": 0, "active": 0, "failed": 0, "pending": 2}

    # A second confirm of the same upload finds nothing to import.
    again = client.post(CONFIRM, data)
    assert again.status_code == 302 and Mailbox.objects.count() == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"email,name\nann@contoso.com,Ann\n", "CSV must have email and password columns"),
        (
            b"email,password\n" + b"".join(b"u%d@contoso.com,pw\n" % i for i in range(501)),
            "Maximum 500 mailboxes per import",
        ),
        (b"\x00\x01\x02binary", "The file is not a CSV or XLSX file"),
    ],
)
def test_file_errors_show_on_the_form(client_for, personas, ws_a, data, message):
    page = upload(client_for(personas["alice"]), ws_a, data)
    assert page.status_code == 200
    assert message in page.content.decode()
    assert "Confirm import" not in page.content.decode()


def test_missing_file_message(client_for, personas, ws_a):
    page = client_for(personas["alice"]).post(IMPORT, {"workspace": ws_a.pk, "format": "0"})
    assert "CSV file is required" in page.content.decode()


def test_operator_of_a_cannot_import_into_b(client_for, personas, ws_a, ws_b):
    client = client_for(personas["alice"])
    page = upload(client, ws_b)
    assert "Select a valid choice" in page.content.decode()
    # A forged confirm naming workspace B is refused as well.
    data = confirm_data(upload(client, ws_a))
    data["workspace"] = str(ws_b.pk)
    client.post(CONFIRM, data)
    assert not Mailbox.objects.filter(workspace=ws_b).exists()
    assert not ImportBatch.objects.exists()
    # Viewers and outsiders have no import at all.
    assert client_for(personas["olga"]).get(IMPORT).status_code == 403


def test_other_workspaces_batches_are_hidden(client_for, personas, ws_b):
    batch = ImportBatch.objects.create(workspace=ws_b, file_name="b.csv")
    client = client_for(personas["alice"])
    assert client.get(reverse("admin:fleet_importbatch_change", args=[batch.pk])).status_code == 404
    url = reverse("admin:fleet_importbatch_progress", args=[batch.pk])
    assert client.get(url).status_code == 404


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.binary(max_size=300))
def test_arbitrary_uploads_never_give_a_500(client_for, personas, ws_a, data):
    page = upload(client_for(personas["alice"]), ws_a, data)
    assert page.status_code == 200
    assert not Mailbox.objects.exists()


def test_export_has_no_secrets_and_neutralises_formulas(client_for, personas, ws_a, ws_b):
    Mailbox.objects.create(
        workspace=ws_a,
        email="ann@contoso.com",
        display_name='=HYPERLINK("http://evil")',
        error_message="+cmd|' /C calc'!A0",
        auth_method="app_password",
        password="pw-secret-1",
        totp_secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        refresh_token="rt-secret",
    )
    Mailbox.objects.create(workspace=ws_b, email="ben@beta.example", auth_method="oauth")
    client = client_for(personas["alice"])
    # Every column ticked (the export form lets people choose columns).
    columns = {
        ExportForm.create_boolean_field_name(MailboxExportResource, f): "on"
        for f in MailboxExportResource().get_export_order()
    }
    response = client.post(
        reverse("admin:fleet_mailbox_export"), {"format": "0", "resource": "0", **columns}
    )
    body = b"".join(response.streaming_content if response.streaming else [response.content])
    text = body.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["email"] for r in rows] == ["ann@contoso.com"]  # scoped to A
    assert not {"password", "totp_secret", "refresh_token", "access_token"} & set(rows[0])
    for secret in ("pw-secret-1", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "rt-secret"):
        assert secret not in text
    assert rows[0]["display_name"] == '\'=HYPERLINK("http://evil")'
    assert rows[0]["error_message"].startswith("'+")

    xlsx = client.post(
        reverse("admin:fleet_mailbox_export"), {"format": "1", "resource": "0", **columns}
    )
    sheet = tablib.Dataset().load(xlsx.content, format="xlsx")
    assert sheet.dict[0]["display_name"].startswith("'=")
    assert "pw-secret-1" not in str(sheet.dict)


def test_totp_reveal_shows_the_code_and_records_it(client_for, personas, ws_a):
    box = Mailbox.objects.create(
        workspace=ws_a,
        email="ann@contoso.com",
        auth_method="app_password",
        totp_secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
    )
    client = client_for(personas["alice"])
    change = client.get(reverse("admin:fleet_mailbox_change", args=[box.pk])).content.decode()
    assert "Show current code" in change and "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP" not in change
    page = client.post(reverse("admin:fleet_mailbox_totp", args=[box.pk]))
    html = page.content.decode()
    code = re.search(r'id="totp-code">(\d{6})<', html).group(1)
    assert pyotp.TOTP("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").verify(code, valid_window=1)
    seconds = int(re.search(r'id="totp-seconds">(\d+)<', html).group(1))
    assert 1 <= seconds <= 30
    event = MailboxEvent.objects.get(kind="totp_reveal")
    assert (event.mailbox, event.actor) == (box, personas["alice"])


def test_totp_reveal_needs_operator_and_post(client_for, personas, ws_b):
    box = Mailbox.objects.create(
        workspace=ws_b,
        email="ben@beta.example",
        auth_method="app_password",
        totp_secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
    )
    url = reverse("admin:fleet_mailbox_totp", args=[box.pk])
    assert client_for(personas["bob"]).post(url).status_code == 404  # viewer of B
    assert client_for(personas["alice"]).post(url).status_code == 404  # not a member of B
    assert client_for(personas["root"]).get(url).status_code == 405
    assert not MailboxEvent.objects.filter(kind="totp_reveal").exists()


def test_test_connection_action_queues_only_permitted_mailboxes(
    client_for, personas, mailboxes, django_capture_on_commit_callbacks
):
    client = client_for(personas["bob"])  # manager of A, viewer of B
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("admin:fleet_mailbox_changelist"),
            {
                "action": "test_connection",
                "_selected_action": [mailboxes["a"].pk, mailboxes["b"].pk],
            },
        )
    assert DBTaskResult.objects.get().task_path == "fleet.tasks.test_due_mailboxes"
    due = Mailbox.objects.filter(check_due_at__isnull=False)
    assert list(due.values_list("pk", "check_requested_by")) == [
        (mailboxes["a"].pk, personas["bob"].pk)
    ]
