"""Bulk import of Outlook / Microsoft 365 mailboxes with app passwords from CSV or XLSX (SendKit's CSV import API).

One path for every caller: `read_table` turns the uploaded bytes into a normalised table (or
rejects the file with one of the seed's messages), `MailboxImportResource` (django-import-export)
checks every row before anything is written and saves the good rows in bulk inside one
transaction, together with their `ImportBatch`; the connection tests are enqueued once it has
committed. The admin drives the resource through import-export's preview and confirm steps;
`import_mailboxes()` is the same import for code (the JSON API).

A file is rejected whole (nothing written) when it is missing, empty, too large, not a table,
lacks the email/password columns or has more than 500 rows. Otherwise each row is imported,
skipped (its address is already in the file or in the workspace) or failed (with a reason), and
the result says which — exactly what was written.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import tempfile
from dataclasses import dataclass, field

import tablib
from diff_match_patch import diff_match_patch
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db.models.functions import Lower
from django.utils.safestring import mark_safe
from import_export import fields, resources, widgets
from import_export.formats import base_formats
from import_export.results import RowResult
from import_export.tmp_storages import TempFolderStorage

from fleet import access, audit, errors, health, mailboxes, providers
from fleet.inserts import insert_many
from fleet.models import ImportBatch, Mailbox, Role, Workspace
from fleet.secrets import fernet
from fleet.uploads import FILE_EMPTY as FILE_EMPTY  # the seed's texts, re-exported
from fleet.uploads import FILE_REQUIRED as FILE_REQUIRED
from fleet.uploads import NOT_A_TABLE as NOT_A_TABLE
from fleet.uploads import FileRejected as ImportRejected
from fleet.uploads import read_rows, read_upload

MAX_ROWS = 500
COLUMNS = ("email", "password", "name", "totpsecret")

# SendKit's messages, word for word.
COLUMNS_REQUIRED = "CSV must have email and password columns"
TOO_MANY_ROWS = "Maximum 500 mailboxes per import"
MISSING_EMAIL_OR_PASSWORD = "Missing email or password"
# Ours, in the same voice.
INVALID_EMAIL = "Invalid email address"
INVALID_TOTP = "TOTP secret is not valid base32"
NAME_TOO_LONG = "Name is longer than 255 characters"
PASSWORD_TOO_LONG = "Password is longer than 256 characters"
NO_ROWS = "CSV file has a header but no mailboxes"
NOTHING_TO_IMPORT = "No row can be imported"
TAG_MAX_LENGTH = 64
TAG_TOO_LONG = f"Tag is longer than {TAG_MAX_LENGTH} characters"

# --- Reading the file: fleet/uploads.py (shared with the bulk add) -----------------------------


def read_table(data: bytes, file_name: str = "") -> tablib.Dataset:
    """Bytes of a CSV (UTF-8 with or without BOM, UTF-16, Windows-1252; comma, semicolon or tab)
    or XLSX file → a Dataset with the columns email, password, name, totpsecret (blank rows kept
    so that row numbers match the file). Only column names and addresses are trimmed: a password
    is kept byte for byte, spaces included. Rejects files it cannot read, whose header or size
    breaks the rules, or that hold no row that could be imported (header only, or every row bad):
    the admin and the API refuse them alike, with VALIDATION_ERROR and the same message."""
    rows = read_rows(data)
    header = [cell.strip().lower() for cell in rows[0]]
    if "email" not in header or "password" not in header:
        raise ImportRejected(COLUMNS_REQUIRED)
    body = rows[1:]
    while body and not any(cell.strip() for cell in body[-1]):
        body.pop()
    if sum(1 for row in body if any(cell.strip() for cell in row)) > MAX_ROWS:
        raise ImportRejected(TOO_MANY_ROWS)
    position = {name: header.index(name) for name in COLUMNS if name in header}
    table = tablib.Dataset(headers=list(COLUMNS))
    for row in body:
        cells = {
            name: row[position[name]] if name in position and position[name] < len(row) else ""
            for name in COLUMNS
        }
        cells["email"] = cells["email"].strip()
        table.append([cells[name] for name in COLUMNS])
    refuse_without_importable_rows(table)
    return table


def refuse_without_importable_rows(table: tablib.Dataset) -> None:
    """A file with only a header, or only rows that cannot be imported, is refused whole: an
    import of nothing would write an empty batch and promise connection tests."""
    problems = []
    for number, values in enumerate(table, start=2):  # the header is row 1
        row = dict(zip(COLUMNS, values, strict=True))
        if is_blank(row):
            continue
        problem = row_error(row)
        if problem is None:
            return
        problems.append(f"row {number}: {problem}")
    if not problems:
        raise ImportRejected(NO_ROWS)
    shown = "; ".join(problems[:10]) + ("; …" if len(problems) > 10 else "")
    raise ImportRejected(f"{NOTHING_TO_IMPORT} ({shown})")


def check_tag(tag: str) -> str:
    """The tag to apply (trimmed), refusing one longer than a tag may be."""
    tag = (tag or "").strip()
    if len(tag) > TAG_MAX_LENGTH:
        raise ImportRejected(TAG_TOO_LONG)
    return tag


def row_error(row: dict[str, str]) -> str | None:
    """Why a row cannot be imported, or None."""
    if not row["email"] or not row["password"].strip():
        return MISSING_EMAIL_OR_PASSWORD
    try:
        if len(row["email"]) > 254:  # the column's length, and the longest path SMTP carries
            raise ValidationError("too long")
        validate_email(row["email"])
    except ValidationError:
        return INVALID_EMAIL
    if len(row["password"]) > 256:
        return PASSWORD_TOO_LONG
    if len(row["name"]) > 255:
        return NAME_TOO_LONG
    if row["totpsecret"] and normalise_totp(row["totpsecret"]) is None:
        return INVALID_TOTP
    return None


def normalise_totp(secret: str) -> str | None:
    """Authenticator apps show secrets in groups, lower or upper case: A2B3 C4D5 … → A2B3C4D5…"""
    value = re.sub(r"[\s-]", "", secret).upper().rstrip("=")
    if len(value) < 16:  # under 80 bits: no authenticator issues such secrets
        return None
    try:
        base64.b32decode(value + "=" * (-len(value) % 8))
    except (binascii.Error, ValueError):
        return None
    return value


def is_blank(row: dict[str, str]) -> bool:
    return not any(value.strip() for value in row.values())


# --- The import ---------------------------------------------------------------------------------
@dataclass
class ImportResult:
    """SendKit's result: counts and the first 50 error details."""

    imported: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[dict] = field(default_factory=list)
    batch: ImportBatch | None = None
    duplicates: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "imported": self.imported,
            "skipped": self.skipped,
            "failed": self.failed,
            "errors": self.errors[: ImportBatch.MAX_ERRORS],
        }


SECRET_SHOWN = "••••••"


class SecretWidget(widgets.CharWidget):
    """Imports the value; shows only that there is one (import previews never show secrets)."""

    def render(self, value, obj=None, **kwargs):
        return SECRET_SHOWN if value else ""


def inserted(value: str) -> str:
    """A preview cell as import-export's diff shows a value new rows bring (`<ins>`, escaped),
    without diffing it against the blank instance it would first copy."""
    if not value:
        return ""
    return mark_safe(  # noqa: S308 (diff_prettyHtml escapes the text)
        diff_match_patch().diff_prettyHtml([(diff_match_patch.DIFF_INSERT, value)])
    )


class MailboxImportResource(resources.ModelResource):
    """Rows → new app-password mailboxes of one workspace. Each row is judged in `before_import`
    (one query for the addresses already there); saving is one bulk insert.

    Where the time went (issue 15, cProfile of the admin's preview + confirm of 500 rows): the
    preview ran the whole import and rolled it back (500 instances filled with their servers,
    500 passwords encrypted, one bulk insert, a rollback), and import-export deep-copied every
    blank new instance to diff it against the row. Every rule is decided in `before_import`
    already, so the preview now builds each row's result from the row itself (`import_row`):
    the same cells, the same checks and messages; the confirm imports as before, without the
    diff (`skip_diff`).
    """

    email = fields.Field(attribute="email", column_name="email")
    display_name = fields.Field(attribute="display_name", column_name="name")
    password = fields.Field(attribute="password", column_name="password", widget=SecretWidget())
    totp_secret = fields.Field(
        attribute="totp_secret", column_name="totpsecret", widget=SecretWidget()
    )

    class Meta:
        model = Mailbox
        fields = ("email", "display_name", "password", "totp_secret")
        force_init_instance = True  # never update: known addresses are skipped
        skip_diff = True  # every row is new: its preview is its own values (after_import_row)
        use_bulk = True
        batch_size = MAX_ROWS
        skip_unchanged = False
        report_skipped = True
        use_transactions = True
        name = "Outlook mailboxes with app passwords (email, password, name, totpsecret)"

    def __init__(
        self,
        workspace: Workspace | None = None,
        tag: str = "",
        user=None,
        via: str = mailboxes.ADMIN,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.workspace = workspace
        self.tag_name = (tag or "").strip()
        self.user = user
        self.via = via
        self.result = ImportResult()
        self.verdicts: dict[int, str] = {}  # data row number → "new" | "skip" | "fail"
        self.created: list[Mailbox] = []
        self._row_number = 0

    def before_import(self, dataset, **kwargs):
        if self.workspace is None:
            raise ImportRejected("Choose the workspace to import into")
        if len(dataset) > MAX_ROWS * 4 or list(dataset.headers or []) != list(COLUMNS):
            raise ImportRejected(COLUMNS_REQUIRED)
        rows = [dict(zip(COLUMNS, values, strict=True)) for values in dataset]
        addresses = {r["email"].lower() for r in rows if r["email"]}
        known = set(
            Mailbox.objects.filter(workspace=self.workspace)
            .annotate(address=Lower("email"))
            .filter(address__in=addresses)
            .values_list("address", flat=True)
        )
        for number, row in enumerate(rows, start=1):
            file_row = number + 1  # the header is row 1
            email = row["email"] or "unknown"
            if is_blank(row):
                self.verdicts[number] = "blank"
            elif problem := row_error(row):
                self.verdicts[number] = "fail"
                self.result.failed += 1
                self.result.errors.append({"row": file_row, "email": email, "error": problem})
            elif row["email"].lower() in known:
                self.verdicts[number] = "skip"
                self.result.skipped += 1
                self.result.duplicates.append({"row": file_row, "email": email})
            else:
                known.add(row["email"].lower())
                self.verdicts[number] = "new"
                self.result.imported += 1

    def before_import_row(self, row, row_number=None, **kwargs):
        self._row_number = row_number

    def skip_row(self, instance, original, row, import_validation_errors=None):
        return self.verdicts.get(self._row_number) != "new"

    def import_row(self, row, instance_loader, **kwargs):
        """The confirm imports each row through import-export; the preview only reports what
        each row becomes. That was decided in `before_import` (the in-file and workspace
        duplicates, every field's rule) and nothing in import-export's per-row path checks
        more (no model validation), so a dry run builds the row's result and its cells from
        the row itself: no instance, no insert, no rollback."""
        if not kwargs.get("dry_run"):
            return super().import_row(row, instance_loader, **kwargs)
        row_result = self.get_row_result_class()()
        new = self.verdicts.get(kwargs.get("row_number")) == "new"
        row_result.import_type = RowResult.IMPORT_TYPE_NEW if new else RowResult.IMPORT_TYPE_SKIP
        # The cells of import-export's diff for a new row: email, name, password, totpsecret.
        row_result.diff = [
            inserted(row["email"] or ""),
            inserted(row["name"] or ""),
            inserted(SECRET_SHOWN if row["password"] else ""),
            inserted(SECRET_SHOWN if row["totpsecret"] else ""),
        ]
        return row_result

    def before_save_instance(self, instance, row, **kwargs):
        instance.workspace = self.workspace
        instance.auth_method = Mailbox.AuthMethod.APP_PASSWORD
        instance.status = Mailbox.Status.PENDING
        instance.totp_secret = normalise_totp(instance.totp_secret or "") or ""
        for name, value in providers.server_settings(instance.email).items():
            setattr(instance, name, value)

    def bulk_create(self, using_transactions, dry_run, raise_errors, batch_size=None, result=None):
        """import-export's `bulk_create`, by COPY on PostgreSQL (fleet/inserts.py); the
        preview writes nothing (`import_row`), so only the confirm comes here."""
        if not self.create_instances or dry_run:
            return
        # Their connection tests are part of the import: due from the start (no UPDATE after).
        health.make_due(self.create_instances, self.user)
        try:
            self.created.extend(insert_many(self.create_instances))
        except Exception as e:  # as import-export's: the row errors roll the import back
            self.handle_import_error(result, e, raise_errors)
        finally:
            self.create_instances.clear()

    def after_import(self, dataset, result, **kwargs):
        # (ModelResource's sequence reset is for imported ids; ours come from the database.)
        result.fleet = self.result
        if kwargs.get("dry_run") or result.has_errors():
            return
        tag = None
        if self.tag_name:
            (tag,) = mailboxes.tags_named(self.workspace.pk, [self.tag_name])
            insert_many(Mailbox.tags.through(mailbox_id=m.pk, tag_id=tag.pk) for m in self.created)
        batch = ImportBatch.objects.create(
            workspace=self.workspace,
            created_by=self.user if getattr(self.user, "pk", None) else None,
            tag=tag,
            file_name=(kwargs.get("file_name") or "")[:255],
            total_rows=sum(1 for v in self.verdicts.values() if v != "blank"),
            imported=self.result.imported,
            skipped=self.result.skipped,
            failed=self.result.failed,
            errors=self.result.errors[: ImportBatch.MAX_ERRORS],
        )
        insert_many(
            ImportBatch.mailboxes.through(importbatch_id=batch.pk, mailbox_id=m.pk)
            for m in self.created
        )
        self.result.batch = batch
        actor = batch.created_by
        audit.record(
            "importbatch.created", batch, actor=actor, via=self.via,
            changes=audit.set_fields(batch, ["file_name", "imported", "skipped", "failed"]),
        )
        audit.record_many(
            "mailbox.created", self.created, actor=actor, via=self.via,
            changes=lambda m: audit.set_fields(m, mailboxes.CREATED_FIELDS),
        )
        # Their tests are part of the import (due since `bulk_create`): its entries above say
        # so, no test_queued ones.
        health.queue_created_tests(self.created)


def import_mailboxes(
    workspace: Workspace,
    file,
    tag: str = "",
    user=None,
    file_name: str = "",
    via: str = mailboxes.API,
) -> ImportResult:
    """Import a CSV/XLSX file of app-password mailboxes into `workspace` (the user must be an
    operator there). Raises ImportRejected (nothing written) or returns what was written."""
    if user is not None and not access.has_role(user, Role.OPERATOR, workspace.pk):
        raise errors.FleetError(errors.PERMISSION_DENIED)
    tag = check_tag(tag)
    data, name = read_upload(file)
    dataset = read_table(data, file_name or name)
    resource = MailboxImportResource(workspace=workspace, tag=tag, user=user, via=via)
    result = resource.import_data(
        dataset, dry_run=False, raise_errors=False, file_name=file_name or name
    )
    if result.has_errors():
        # Rolled back already; the usual cause is a concurrent import of the same addresses.
        raise ImportRejected(
            "The import was cancelled because the mailboxes changed while it ran; "
            "nothing was imported, please try again"
        )
    return resource.result


# --- Admin plumbing: the file format and the temporary storage between preview and confirm ----
class MailboxFileFormat(base_formats.TablibFormat):
    """CSV or XLSX, told apart by content; read as bytes so that `read_table` picks the
    encoding and the delimiter."""

    TABLIB_MODULE = "tablib.formats._csv"
    CONTENT_TYPE = "text/csv"

    def get_title(self):
        return "csv / xlsx"

    def get_extension(self):
        return "csv"

    def is_binary(self):
        return True

    def get_read_mode(self):
        return "rb"

    def can_export(self):
        return False

    def create_dataset(self, in_stream):
        return read_table(in_stream)


class EncryptedTempStorage(TempFolderStorage):
    """import-export keeps the uploaded file between preview and confirm; it holds app
    passwords, so it is kept encrypted with the secrets' keys and expires after an hour."""

    MAX_AGE = 3600

    def save(self, data):
        if isinstance(data, str):
            data = data.encode(self.encoding or "utf-8")
        with tempfile.NamedTemporaryFile(delete=False, prefix="fleet-import-") as handle:
            handle.write(fernet().encrypt(data))
        self.name = os.path.basename(handle.name)

    def read(self):
        with open(self.get_full_path(), "rb") as handle:
            data = fernet().decrypt(handle.read(), ttl=self.MAX_AGE)
        return data if "b" in self.read_mode else data.decode(self.encoding or "utf-8")

    def remove(self):
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.get_full_path())
