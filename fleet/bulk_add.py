"""Graph app-only bulk add (seed 004): check every account before anything runs, then look each
mailbox up in Microsoft Graph, check its domain's SPF/DKIM once per domain, and record one result
per account with an error code from the catalogue."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from fleet import errors
from fleet.errors import FleetError
from fleet.models import Credential, Workspace

MAX_ACCOUNTS = 500


@dataclass(frozen=True)
class Account:
    email: str
    name: str = ""


class AccountsInvalid(FleetError):
    """The submitted list has bad lines; `problems` names each one. Nothing was run."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(errors.VALIDATION_ERROR, "; ".join(problems[:50]))


def validate_accounts(rows: list[tuple[str, str, str]]) -> list[Account]:
    """`rows` are (where, email, name), `where` saying e.g. "line 3". Every problem is collected,
    so that a person fixes the whole list at once."""
    problems: list[str] = []
    if not rows:
        raise AccountsInvalid(["No accounts given: add at least one mailbox address."])
    if len(rows) > MAX_ACCOUNTS:
        raise AccountsInvalid(
            [f"Maximum {MAX_ACCOUNTS} mailboxes per bulk add ({len(rows)} given)."]
        )
    seen: dict[str, str] = {}
    accounts = []
    for where, email, name in rows:
        email = email.strip()
        if not email:
            problems.append(f"{where}: missing mailbox_email")
            continue
        try:
            validate_email(email)
        except ValidationError:
            problems.append(f"{where}: {email!r} is not a valid email address")
            continue
        key = email.lower()
        if key in seen:
            problems.append(f"{where}: {email} is a duplicate of {seen[key]}")
            continue
        if len(name) > 255:
            problems.append(f"{where}: the display name of {email} is longer than 255 characters")
            continue
        seen[key] = where
        accounts.append(Account(key, name.strip()))
    if problems:
        raise AccountsInvalid(problems)
    return accounts


def parse_lines(text: str) -> list[Account]:
    """Pasted lines of `email[,display name]` (a display name may contain commas if quoted)."""
    rows = []
    for number, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not fields or not "".join(fields).strip():
            continue
        email, name = fields[0], ",".join(fields[1:])
        rows.append((f"line {number}", email, name))
    return validate_accounts(rows)


def parse_records(records: list[dict]) -> list[Account]:
    """Accounts given as records with `mailbox_email` and optional `display_name` (the API's
    body, or the rows of an uploaded CSV)."""
    rows = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            rows.append((f"account {number}", "", ""))
            continue
        email = record.get("mailbox_email")
        name = record.get("display_name") or ""
        rows.append(
            (
                f"account {number}",
                email if isinstance(email, str) else "",
                name if isinstance(name, str) else "",
            )
        )
    return validate_accounts(rows)


def resolve_credential(workspace: Workspace, credential_id: int | None) -> Credential:
    """The Graph credential to use: the one named (of this workspace, of kind graph_app_only, not
    known to be invalid) or, when none is named, the workspace's only valid one."""
    graph = Credential.objects.filter(workspace=workspace, kind=Credential.Kind.GRAPH_APP_ONLY)
    if credential_id is not None:
        credential = (
            graph.exclude(status=Credential.Status.INVALID).filter(pk=credential_id).first()
        )
        if credential is None:
            raise FleetError(
                errors.INVALID_CREDENTIAL_ID,
                f"Credential {credential_id} is not a usable Microsoft Graph credential of this workspace.",
            )
        return credential
    valid = list(graph.filter(status=Credential.Status.VALID)[:2])
    if len(valid) != 1:
        raise FleetError(
            errors.INVALID_CREDENTIAL_ID,
            "Name a credential: this workspace has "
            + (
                "no valid Microsoft Graph credential."
                if not valid
                else "several valid Graph credentials."
            ),
        )
    return valid[0]
