"""The mailbox import service (SendKit's CSV import API): validation messages word for word, encodings and
delimiters, duplicates, auto-configuration, all-or-exactly-what-it-reports, tenant isolation."""

import io

import pytest
import tablib
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_tasks_db.models import DBTaskResult
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet import errors, imports
from fleet.models import ImportBatch, Mailbox, Tag

pytestmark = pytest.mark.django_db


def csv_bytes(text, encoding="utf-8"):
    return text.encode(encoding)


def run(ws, data, user=None, tag="", name="mailboxes.csv"):
    return imports.import_mailboxes(ws, io.BytesIO(data), tag=tag, user=user, file_name=name)


def rejected(ws, data, user=None):
    before = (Mailbox.objects.count(), ImportBatch.objects.count(), Tag.objects.count())
    with pytest.raises(imports.ImportRejected) as info:
        run(ws, data, user)
    assert info.value.code == "VALIDATION_ERROR"
    # A rejected file writes nothing.
    assert (Mailbox.objects.count(), ImportBatch.objects.count(), Tag.objects.count()) == before
    return info.value.message


def test_realistic_file_imports_skips_and_fails(ws_a, personas, django_capture_on_commit_callbacks):
    Mailbox.objects.create(workspace=ws_a, email="Known@Contoso.com", auth_method="oauth")
    data = csv_bytes(
        "Email , PASSWORD,Name,TOTPSecret\n"
        "ann@contoso.com,pw1,Ann,JBSWY3DPEHPK3PXP\n"
        "bob@hotmail.com,pw2,Bob,\n"
        "cat@live.co.uk,pw3,,\n"
        "dan@outlook.com,pw4,,jbsw y3dp ehpk 3pxp\n"
        "known@contoso.com,pw5,,\n"  # already in the workspace
        "ANN@contoso.com,pw6,,\n"  # twice in the file
        ",pw7,,\n"
        "eve@contoso.com,,,\n"
        "not-an-address,pw8,,\n"
        "fay@contoso.com,pw9,,not*base32!\n"
        ",,,\n"  # blank line: ignored
    )
    with django_capture_on_commit_callbacks(execute=True):
        result = run(ws_a, data, personas["alice"], tag="Spring")

    assert result.as_dict() == {
        "imported": 4,
        "skipped": 2,
        "failed": 4,
        "errors": [
            {"row": 8, "email": "unknown", "error": "Missing email or password"},
            {"row": 9, "email": "eve@contoso.com", "error": "Missing email or password"},
            {"row": 10, "email": "not-an-address", "error": "Invalid email address"},
            {"row": 11, "email": "fay@contoso.com", "error": "TOTP secret is not valid base32"},
        ],
    }
    ann = Mailbox.objects.get(email="ann@contoso.com")
    assert (ann.provider, ann.smtp_host, ann.smtp_port, ann.smtp_security) == (
        "microsoft365",
        "smtp.office365.com",
        587,
        "starttls",
    )
    assert (ann.imap_host, ann.imap_port, ann.imap_security) == (
        "outlook.office365.com",
        993,
        "ssl",
    )
    assert (ann.status, ann.auth_method, ann.display_name) == ("pending", "app_password", "Ann")
    assert ann.password == "pw1" and ann.totp_secret == "JBSWY3DPEHPK3PXP"
    for email in ("bob@hotmail.com", "cat@live.co.uk", "dan@outlook.com"):
        box = Mailbox.objects.get(email=email)
        assert (box.provider, box.imap_host) == ("outlook_com", "imap-mail.outlook.com")
    assert Mailbox.objects.get(email="dan@outlook.com").totp_secret == "JBSWY3DPEHPK3PXP"

    batch = result.batch
    assert (batch.imported, batch.skipped, batch.failed, batch.total_rows) == (4, 2, 4, 10)
    assert batch.created_by == personas["alice"] and batch.file_name == "mailboxes.csv"
    assert batch.errors == result.as_dict()["errors"]
    assert set(batch.mailboxes.values_list("email", flat=True)) == {
        "ann@contoso.com",
        "bob@hotmail.com",
        "cat@live.co.uk",
        "dan@outlook.com",
    }
    assert set(Tag.objects.get(workspace=ws_a, name="Spring").mailboxes.all()) == set(
        batch.mailboxes.all()
    )
    assert batch.progress() == {"total": 4, "tested": 0, "active": 0, "failed": 0, "pending": 4}
    task = DBTaskResult.objects.get()  # the connection tests, queued once committed
    assert task.task_path == "fleet.tasks.test_due_mailboxes"
    due = Mailbox.objects.filter(check_due_at__isnull=False)
    assert sorted(due.values_list("pk", flat=True)) == sorted(
        batch.mailboxes.values_list("pk", flat=True)
    )


def test_existing_tag_is_reused_case_insensitively(ws_a):
    tag = Tag.objects.create(workspace=ws_a, name="Spring")
    run(ws_a, b"email,password\nann@contoso.com,pw\n", tag="spring ")
    assert list(Mailbox.objects.get().tags.all()) == [tag]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "CSV file is required"),
        (b"", "CSV file is empty"),
        (b"email,name\nann@contoso.com,Ann\n", "CSV must have email and password columns"),
        (b"mail;pass\nann@contoso.com;pw\n", "CSV must have email and password columns"),
        (
            b"email,password\n" + b"".join(b"u%d@contoso.com,pw\n" % i for i in range(501)),
            "Maximum 500 mailboxes per import",
        ),
        (b"\n\n  \n", "CSV file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "The file is not a CSV or XLSX file"),
        (b"PK\x03\x04 this is not a workbook", "The file is not a CSV or XLSX file"),
    ],
)
def test_rejected_files(ws_a, data, message):
    if data is None:
        with pytest.raises(imports.ImportRejected) as info:
            imports.import_mailboxes(ws_a, None)
        assert info.value.message == message
    else:
        assert rejected(ws_a, data) == message


def test_exactly_500_rows_are_accepted(ws_a):
    data = b"email,password\n" + b"".join(b"u%d@contoso.com,pw\n" % i for i in range(500))
    assert run(ws_a, data).imported == 500


def test_huge_file_is_refused_before_it_is_read(ws_a, settings):
    settings.IMPORT_MAX_FILE_SIZE = 1000

    class Upload(io.BytesIO):
        size = 10**9  # what Django tells from the request

        def read(self, *args):
            raise AssertionError("read a file that was too large")

    with pytest.raises(imports.ImportRejected) as info:
        imports.import_mailboxes(ws_a, Upload())
    assert "larger than" in info.value.message
    # Without a size attribute, at most limit + 1 bytes are read.
    assert "larger than" in rejected(ws_a, b"email,password\n" + b"x" * 2000)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        ("email,password,name\nann@contoso.com,pw,Zoë Ærø\n".encode(), "utf-8"),
        ("email,password,name\nann@contoso.com,pw,Zoë Ærø\n".encode("utf-8-sig"), "utf-8 BOM"),
        ("email,password,name\nann@contoso.com,pw,Zoë Ærø\n".encode("utf-16"), "utf-16"),
        ("email,password,name\nann@contoso.com,pw,Zoë Ærø\n".encode("cp1252"), "windows-1252"),
        ("email;password;name\r\nann@contoso.com;pw;Zoë Ærø\r\n".encode(), "semicolons"),
        ('"email";"password";"name"\nann@contoso.com;pw;"Zoë Ærø"\n'.encode("cp1252"), "quoted"),
    ],
)
def test_encodings_and_delimiters(ws_a, data, name):
    assert run(ws_a, data).imported == 1, name
    box = Mailbox.objects.get()
    assert (box.email, box.password, box.display_name) == ("ann@contoso.com", "pw", "Zoë Ærø")


def test_xlsx(ws_a):
    sheet = tablib.Dataset(headers=[" Email", "Password ", "name"])
    sheet.append(["ann@contoso.com", "pw", "Ann"])
    sheet.append(["bob@hotmail.com", 12345, None])
    result = run(ws_a, sheet.export("xlsx"), name="boxes.xlsx")
    assert result.imported == 2
    assert Mailbox.objects.get(email="bob@hotmail.com").password == "12345"


def test_operator_of_a_cannot_import_into_b(ws_a, ws_b, personas):
    for user in (personas["alice"], personas["bob"], personas["olga"]):  # bob only views B
        with pytest.raises(errors.FleetError) as info:
            run(ws_b, b"email,password\nann@contoso.com,pw\n", user=user)
        assert info.value.code == "PERMISSION_DENIED"
    assert not Mailbox.objects.exists()
    assert run(ws_a, b"email,password\nann@contoso.com,pw\n", user=personas["alice"]).imported == 1


def test_duplicates_are_per_workspace(ws_a, ws_b):
    Mailbox.objects.create(workspace=ws_b, email="ann@contoso.com", auth_method="oauth")
    result = run(ws_a, b"email,password\nann@contoso.com,pw\n")
    assert (result.imported, result.skipped) == (1, 0)


def test_query_count_does_not_grow_with_rows(ws_a, ws_b):
    def queries(ws, n):
        data = b"email,password\n" + b"".join(b"u%d@contoso.com,pw\n" % i for i in range(n))
        with CaptureQueriesContext(connection) as ctx:
            assert run(ws, data, tag="t").imported == n
        sql = [q["sql"] for q in ctx.captured_queries]
        return [s for s in sql if not s.startswith("INSERT")], [
            s for s in sql if s.startswith("INSERT")
        ]

    few_other, few_inserts = queries(ws_a, 5)
    many_other, many_inserts = queries(ws_b, 400)
    assert len(few_other) == len(many_other)
    if connection.vendor == "postgresql":
        assert len(few_inserts) == len(many_inserts)  # one bulk INSERT per table
    else:
        # SQLite caps the parameters of one statement, so Django splits bulk inserts; they stay
        # bulk (dozens of rows per statement), never one per row.
        assert len(many_inserts) < 400 // 10


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.text(max_size=300).map(lambda t: ("email,password,name,totpsecret\n" + t).encode()),
        st.lists(
            st.tuples(st.text(max_size=20), st.text(max_size=12), st.text(max_size=8)),
            max_size=8,
        ).map(
            lambda rows: (
                "email;password;totpsecret\n" + "\n".join(";".join(r) for r in rows)
            ).encode("utf-8", "surrogatepass")
        ),
    )
)
def test_arbitrary_bytes_never_crash_and_never_import_partially(ws_a, data):
    before = Mailbox.objects.count()
    try:
        result = run(ws_a, data)
    except imports.ImportRejected:
        assert Mailbox.objects.count() == before
        return
    # Exactly what it reports was written.
    assert Mailbox.objects.count() - before == result.imported
    assert result.imported + result.skipped + result.failed <= imports.MAX_ROWS
    Mailbox.objects.all().delete()
