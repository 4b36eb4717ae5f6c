"""Reading an uploaded table: the bytes of a CSV (UTF-8 with or without BOM, UTF-16, Windows-1252;
comma, semicolon or tab) or XLSX file into rows of cells. Shared by the CSV import
(fleet/imports.py) and the Graph bulk add's upload (fleet/bulk_add.py); the size limit
(IMPORT_MAX_FILE_SIZE) is enforced before a file is read whole."""

from __future__ import annotations

import csv
import io
import os
import re

import tablib
from django.conf import settings

from fleet import errors

# The CSV import's texts (a vendor's API answers these words; clients match them).
FILE_REQUIRED = "CSV file is required"
FILE_EMPTY = "CSV file is empty"
NOT_A_TABLE = "The file is not a CSV or XLSX file"


class FileRejected(errors.FleetError):
    """The whole file is refused: nothing is written. `message` is shown as it is."""

    def __init__(self, message: str):
        super().__init__(errors.VALIDATION_ERROR, message)


def read_upload(file) -> tuple[bytes, str]:
    """The bytes and name of an upload (Django UploadedFile, file object or bytes), refusing a
    file above IMPORT_MAX_FILE_SIZE before reading it whole."""
    if file is None or file == b"":
        raise FileRejected(FILE_REQUIRED)
    limit = settings.IMPORT_MAX_FILE_SIZE
    too_big = FileRejected(f"The file is larger than {limit // 1024} KiB")
    if isinstance(file, bytes):
        if len(file) > limit:
            raise too_big
        return file, ""
    if getattr(file, "size", None) is not None and file.size > limit:
        raise too_big
    if hasattr(file, "seek"):
        file.seek(0)
    data = file.read(limit + 1)
    if len(data) > limit:
        raise too_big
    return data, os.path.basename(getattr(file, "name", "") or "")


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        encodings = ["utf-8-sig"]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encodings = ["utf-16"]
    else:
        # Excel on Windows saves "CSV" as Windows-1252; UTF-8 is tried first since a UTF-8
        # file almost never decodes by accident as anything else.
        encodings = ["utf-8", "cp1252"]
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        # NUL and other control characters mean a binary file (PostgreSQL refuses NUL too).
        if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text):
            raise FileRejected(NOT_A_TABLE)
        return text
    raise FileRejected(NOT_A_TABLE)


DELIMITERS = (",", ";", "\t")


def _delimiter(text: str) -> str:
    """The header's most frequent of comma, semicolon and tab (Excel's "Unicode text" and "Text
    (tab delimited)" exports use tabs), comma on a tie."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    return max(DELIMITERS, key=lambda d: (header.count(d), d == ","))


def _rows_from_xlsx(data: bytes) -> list[list[str]]:
    try:
        sheet = tablib.Dataset().load(data, format="xlsx", headers=False)
    except Exception as exc:  # openpyxl raises many types for a damaged workbook
        raise FileRejected(NOT_A_TABLE) from exc
    return [["" if cell is None else str(cell) for cell in row] for row in sheet]


def read_rows(data: bytes) -> list[list[str]]:
    """Bytes of a CSV (UTF-8 with or without BOM, UTF-16, Windows-1252; comma, semicolon or tab)
    or XLSX file → its rows of cells, from the first non-blank one (the header). Rejects files it
    cannot read. Also the bulk add's upload reader (fleet/bulk_add.py)."""
    if not data:
        raise FileRejected(FILE_EMPTY)
    if data.startswith(b"PK\x03\x04"):
        rows = _rows_from_xlsx(data)
    else:
        text = _decode(data)
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text)))
        except csv.Error as exc:
            raise FileRejected(NOT_A_TABLE) from exc
    while rows and not any(cell.strip() for cell in rows[0]):
        rows.pop(0)
    if not rows:
        raise FileRejected(FILE_EMPTY)
    return rows
