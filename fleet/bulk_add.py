"""Graph app-only bulk add (Woodpecker's bulk-add API): check every account before anything runs, then look each
mailbox up in Microsoft Graph, check its domain's SPF/DKIM once per domain, and record one result
per account with an error code from the catalogue.

- `start_run` records the run and one pending result per account and enqueues `run_bulk_add`.
- `execute` (the task) gets a token, then takes every account through Graph with four `$batch`
  requests of 20 in flight whenever there is work (`GraphClient.flow`): `GET /users/{address}`;
  on 404 the proxyAddresses search (`smtp:{address}`: an alias → WRONG_ALIAS naming the primary
  address); then `GET /users/{id}/mailboxSettings` (is there an Exchange Online mailbox the app
  may reach?). An account's next request joins the queue as soon as its answer is in, whatever
  its neighbours are waiting for. The accounts that finished are written together (results,
  mailboxes and counts) on the task's own thread while the requests go on, so progress shows
  while the run goes on and writing never holds Graph back.
- A running run is leased by its task (fleet/leases.py), renewed by a heartbeat; every chunk's
  write checks the lease. If the worker dies, the reaper (`reclaim_expired`) puts the run back
  in the queue and a new task goes on with the results not yet done: a group of finished
  accounts is written whole or not at all, and mailboxes are matched by address, so nothing
  shows twice.
- Graph finds `/users/{key}` by sign-in name (UPN), which need not be the mail address: a mailbox
  is stored under the user's `mail` (primary) address and deduplicated by Graph user id, so the
  UPN and the mail address of one user make one mailbox (`take_user`, `save_mailboxes`).
- A mailbox already connected by OAuth consent is kept as it is (ALREADY_CONNECTED) unless the
  run was started with `convert`.
- Accounts that ended THROTTLED get one last pass after the longest Retry-After Graph asked for
  (`retry_throttled`); a run whose every account Graph refused for a missing application
  permission is the credential's problem, not N mailboxes' (`fail_for_permissions`).
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce, Lower, Now
from django.utils import timezone

from fleet import access, audit, errors, leases, mailboxes
from fleet.credentials import record_outcome
from fleet.deliverability import DomainCheck, check_domains
from fleet.errors import ErrorCode, FleetError
from fleet.inserts import insert_many, insert_rows
from fleet.microsoft.graph import (
    GraphClient,
    GraphRequest,
    GraphResponse,
    catalogue_error,
    odata_string,
    user_path,
)
from fleet.models import (
    BulkAddResult,
    BulkAddRun,
    Credential,
    Mailbox,
    MailboxEvent,
    Role,
    Workspace,
)
from fleet.tasks import enqueue_on_commit, run_bulk_add
from fleet.uploads import read_rows, read_upload

MAX_ACCOUNTS = 500
# Finished accounts are written in groups of at least this many (a batch's worth), and whatever
# else finished while a group was written joins the next one: groups grow when writing is slow,
# and stay small when it keeps up. Groups of 100 (issue 15, timestamps of every batch and write)
# cost fewer statements but left up to 180 accounts to write after the last answer (60 ms);
# with 20 it is the last batch or two (25 ms).
RECORD_AT_LEAST = 20


@dataclass(frozen=True)
class Account:
    email: str
    name: str = ""


class AccountsInvalid(FleetError):
    """The submitted list has bad lines; `problems` names each one. Nothing was run."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(errors.VALIDATION_ERROR, "; ".join(problems[:50]))


def validate_accounts(rows: list[tuple[str, object, object]]) -> list[Account]:
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
        if not isinstance(email, str) or not isinstance(name, str):
            # JSON records (the API): a number or an object where text belongs.
            field = "mailbox_email" if not isinstance(email, str) else "display_name"
            problems.append(f"{where}: {field} must be a string")
            continue
        email = email.strip()
        if not email:
            problems.append(f"{where}: missing mailbox_email")
            continue
        try:
            if len(email) > 254:  # the longest address SMTP carries (RFC 5321 path limit)
                raise ValidationError("too long")
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
    for number, fields in enumerate(csv.reader(io.StringIO(text), skipinitialspace=True), start=1):
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
        name = record.get("display_name")
        rows.append(
            (
                f"account {number}",
                "" if email is None else email,
                "" if name is None else name,
            )
        )
    return validate_accounts(rows)


def parse_upload(file) -> list[Account]:
    """An uploaded CSV or XLSX with a `mailbox_email` column and optionally `display_name`, read
    by the CSV import's reader (size limit, encodings, delimiters: fleet/imports.py). Raises
    uploads.FileRejected for a file it cannot read, AccountsInvalid for bad lines."""
    data, _ = read_upload(file)
    rows = read_rows(data)
    header = [cell.strip().lower() for cell in rows[0]]
    if "mailbox_email" not in header:
        raise AccountsInvalid(
            ["CSV must have a mailbox_email column (and optionally display_name)"]
        )
    email_at = header.index("mailbox_email")
    name_at = header.index("display_name") if "display_name" in header else None
    records = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        email = row[email_at] if email_at < len(row) else ""
        name = row[name_at] if name_at is not None and name_at < len(row) else ""
        records.append((f"line {number}", email, name))
    return validate_accounts(records)


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


# --- starting a run ---------------------------------------------------------------------------
def start_run(
    workspace: Workspace,
    credential: Credential,
    accounts: list[Account],
    user=None,
    *,
    convert: bool = False,
    via: str = "task",
) -> BulkAddRun:
    """Record the run and one pending result per account; the task starts once this commits.
    `user` (None for the platform itself) must be an operator of the workspace, and the
    credential a Graph app-only one of that same workspace. `convert` switches mailboxes already
    connected by OAuth consent to Graph app-only too (else they are kept: ALREADY_CONNECTED)."""
    if user is not None and not access.has_role(user, Role.OPERATOR, workspace.pk):
        raise FleetError(errors.PERMISSION_DENIED, f"You are not an operator of {workspace}.")
    if credential.workspace_id != workspace.pk or credential.kind != Credential.Kind.GRAPH_APP_ONLY:
        raise FleetError(
            errors.INVALID_CREDENTIAL_ID,
            f"Credential {credential.pk} is not a Microsoft Graph credential of this workspace.",
        )
    if not accounts:
        raise AccountsInvalid(["No accounts given: add at least one mailbox address."])
    with transaction.atomic():
        run = BulkAddRun.objects.create(
            workspace=workspace,
            credential=credential,
            created_by=user,
            total=len(accounts),
            convert=convert,
        )
        insert_rows(
            BulkAddResult,
            ["run_id", "position", "email", "name"],
            ((run.pk, n, a.email, a.name) for n, a in enumerate(accounts)),
        )
        audit.record(
            "bulkaddrun.started", run, actor=user, via=via,
            changes=audit.set_fields(run, ["credential_id", "total", "convert"]),
        )
        enqueue_on_commit(run_bulk_add, run.pk)
    return run


# --- running it -------------------------------------------------------------------------------
@dataclass
class AccountCheck:
    """What Graph said about one account so far, and which request it waits for (`stage`):
    built and advanced on the Graph client's own thread, recorded by the caller."""

    position: int
    email: str
    name: str
    graph_user_id: str = ""
    graph_name: str = ""
    error: ErrorCode | None = None
    detail: str = ""
    mail: str = ""  # the user's mail address, when `email` was their sign-in name (UPN)
    mailbox: Mailbox | None = None  # set when recorded
    stage: str = "lookup"  # lookup → (alias search) → settings

    @property
    def success(self) -> bool:
        return self.error is None and bool(self.graph_user_id)

    @property
    def address(self) -> str:
        """The address the mailbox is stored under."""
        return self.mail or self.email


USER_FIELDS = "id,displayName,mail,userPrincipalName"


def lookup_request(position: int, email: str) -> GraphRequest:
    return GraphRequest(str(position), f"{user_path(email)}?$select={USER_FIELDS}")


def alias_search_request(position: int, email: str) -> GraphRequest:
    # An advanced query: ConsistencyLevel + $count (https://learn.microsoft.com/graph/aad-advanced-queries)
    expression = f"proxyAddresses/any(x:x eq {odata_string('smtp:' + email)})"
    return GraphRequest(
        str(position),
        f"/users?$filter={quote(expression, safe='/:@')}&$count=true&$select={USER_FIELDS}",
        headers={"ConsistencyLevel": "eventual"},
    )


def settings_request(position: int, user_id: str) -> GraphRequest:
    return GraphRequest(str(position), f"{user_path(user_id)}/mailboxSettings")


def first_request(check: AccountCheck) -> GraphRequest:
    check.stage = "lookup"
    return lookup_request(check.position, check.email)


def next_request(check: AccountCheck, answer: GraphResponse) -> GraphRequest | None:
    """One account through lookup → (alias search on a 404) → mailbox settings: the request
    that follows `answer`, or None when the account is done. No database here (it runs on the
    Graph client's thread)."""
    n = check.position
    if check.stage == "lookup":
        if answer.ok:
            take_user(check, answer.body)
            check.stage = "settings"
            return settings_request(n, check.graph_user_id)
        if answer.status == 404:
            check.stage = "search"
            return alias_search_request(n, check.email)
        fail(check, answer)
        return None
    if check.stage == "search":
        if not answer.ok:
            fail(check, answer)
            return None
        found = (answer.body or {}).get("value") or []
        if not found:
            check.error = errors.MAILBOX_NOT_FOUND
            return None
        user = found[0]
        primary = (user.get("mail") or user.get("userPrincipalName") or "").lower()
        if primary != check.email:
            check.error = errors.WRONG_ALIAS
            check.detail = f"primary address: {primary}"
            return None
        # The primary address, with a different sign-in name (UPN).
        take_user(check, user)
        check.stage = "settings"
        return settings_request(n, check.graph_user_id)
    if not answer.ok:  # mailbox settings
        fail(check, answer)
    return None


def no_token(check: AccountCheck, failure: FleetError) -> None:
    """No token any more (the secret was revoked mid-run …): the account gets the run's code."""
    check.error, check.detail = failure.error, failure.message[:500]
    check.graph_user_id = check.mail = ""


def check_accounts(client: GraphClient, accounts: list[tuple[int, Account]]):
    """Every account through Graph, four `$batch` requests in flight whenever there is work;
    yields lists of finished AccountChecks as they come (fleet.microsoft.graph.flow)."""
    checks = [AccountCheck(n, a.email, a.name) for n, a in accounts]
    return client.flow(checks, first_request, next_request, no_token, at_least=RECORD_AT_LEAST)


def take_user(outcome: AccountCheck, user: dict) -> None:
    """The Graph user found for the account. `/users/{key}` matches the sign-in name (UPN),
    which need not be the user's mail address (`vng@contoso.onmicrosoft.com` for
    `victor.ng@contoso.com`): such a mailbox is stored under its mail address, which is what
    sends and receives, and the result says so."""
    outcome.graph_user_id = user.get("id", "")
    outcome.graph_name = user.get("displayName") or ""
    mail = (user.get("mail") or "").strip().lower()
    if mail and mail != outcome.email:
        outcome.mail = mail
        outcome.detail = (
            f"{outcome.email} is the sign-in name (UPN) of {mail}: the mailbox is stored under "
            "its mail address"
        )[:500]


def fail(outcome: AccountCheck, answer) -> None:
    outcome.error = catalogue_error(answer.error)
    # Microsoft's message without its Trace ID tail; the IDs, on one line, for a support ticket.
    trace = getattr(answer.error, "trace", "")
    message = answer.error.message + (f" [{trace}]" if trace else "")
    # Graph's 403 on a `/users` read (no user found yet) or its Authorization_RequestDenied on
    # mailboxSettings is the app lacking an application permission, not this mailbox's access
    # policy (that one answers ErrorAccessDenied): https://learn.microsoft.com/graph/errors
    missing = ""
    if answer.status == 403 and not outcome.graph_user_id:
        missing = "User.Read.All"
    elif answer.error.code == "Authorization_RequestDenied":
        missing = "MailboxSettings.Read"
    if missing:
        outcome.error = errors.APP_PERMISSION_MISSING
        message = f"The app lacks the application permission {missing}: {message}"
    outcome.detail = message[:500]
    outcome.graph_user_id = ""
    outcome.mail = ""


def execute(run: BulkAddRun, owner: str | None = None) -> BulkAddRun:
    """Run a queued bulk add to its end, holding its lease as `owner` (the task's id). A run whose
    token cannot be had ends `failed` with the code on every account; an unexpected crash marks
    what was left BULK_ADD_INTERRUPTED and is raised, so the task shows as failed too."""
    owner = owner or f"local-{uuid.uuid4()}"
    claimed = leases.claim(
        BulkAddRun.objects.filter(pk=run.pk, status=BulkAddRun.Status.QUEUED),
        owner,
        status=BulkAddRun.Status.RUNNING,
        started_at=Coalesce("started_at", Now()),
    )
    if not claimed:
        run.refresh_from_db()
        return run  # already started elsewhere, or done
    run.refresh_from_db()
    try:
        with leases.Heartbeat(BulkAddRun, run.pk, owner):
            return _execute(run, owner)
    except leases.LeaseLost:
        run.refresh_from_db()
        return run  # the reaper gave the run to another task, which goes on with it
    except Exception as exc:
        failure = FleetError(errors.BULK_ADD_INTERRUPTED, f"{type(exc).__name__}: {exc}"[:500])
        fail_run(run, failure, owner)
        raise


def _execute(run: BulkAddRun, owner: str) -> BulkAddRun:
    credential = run.credential
    if credential is None:
        return fail_run(
            run, FleetError(errors.INVALID_CREDENTIAL_ID, "The credential was deleted."), owner
        )
    client = GraphClient(credential)
    try:
        client.token()
    except FleetError as failure:
        if failure.error.permanent:
            record_outcome(credential, failure)
        return fail_run(run, failure, owner)
    pending = list(
        run.results.filter(done=False).order_by("position").values_list("position", "email", "name")
    )
    accounts = [(n, Account(email, name)) for n, email, name in pending]
    with ThreadPoolExecutor(max_workers=1) as dns:
        # SPF/DKIM once per domain, while Graph is asked.
        domains = dns.submit(check_domains, {a.email.rsplit("@", 1)[1] for _, a in accounts})
        for outcomes in check_accounts(client, accounts):
            record(run, outcomes, domains.result(), owner)
        retry_throttled(run, client, domains.result(), owner)
    if fail_for_permissions(run, owner):
        run.refresh_from_db()
        return run
    run.refresh_from_db()
    run.status = BulkAddRun.Status.FINISHED
    run.outcome = outcome_of(run)
    run.finished_at = timezone.now()
    if not leases.release(
        BulkAddRun,
        run.pk,
        owner,
        status=run.status,
        outcome=run.outcome,
        finished_at=run.finished_at,
    ):
        raise leases.LeaseLost(str(run.uid))
    return run


def outcome_of(run: BulkAddRun) -> str:
    if run.total and run.connected == run.total:
        return BulkAddRun.Outcome.ALL_CONNECTED
    if run.connected:
        return BulkAddRun.Outcome.PARTLY_CONNECTED
    return BulkAddRun.Outcome.REJECTED


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[1]


def record(
    run: BulkAddRun,
    outcomes: list[AccountCheck],
    domains: dict[str, DomainCheck],
    owner: str,
    *,
    again: bool = False,
) -> None:
    """One group of finished accounts: their mailboxes created or updated, their results and the
    run's counts, in a few queries for the whole group, whatever its size. Only while `owner` holds the run's lease
    (LeaseLost otherwise, and nothing of the chunk is written). `again`: the chunk is the retry
    pass's, and replaces THROTTLED results instead of pending ones."""
    # A sign-in name's mail address may be in a domain the run did not check yet.
    unchecked = {domain_of(o.address) for o in outcomes if o.success} - domains.keys()
    if unchecked:
        domains.update(check_domains(unchecked))
    with transaction.atomic():
        # First, so that the run's row is locked for the chunk: the lease cannot move meanwhile.
        held = BulkAddRun.objects.select_for_update().filter(pk=run.pk, lease_owner=owner)
        if not held.exists():
            raise leases.LeaseLost(str(run.uid))
        _record(run, outcomes, domains, again)


# A finished result's row, in this order (`_record` builds it as a tuple: no model instance each).
RESULT_COLUMNS = [
    "run_id", "position", "email", "name", "done", "success", "error_code", "error_detail",
    "mailbox_id", "spf_correct", "dkim_correct", "dmarc_correct", "mx_correct",
]


def _record(
    run: BulkAddRun, outcomes: list[AccountCheck], domains: dict[str, DomainCheck], again: bool
) -> None:
    now = timezone.now()
    save_mailboxes(run, [o for o in outcomes if o.success], domains, now)
    successes = [o for o in outcomes if o.success]  # those kept as they were are not
    results = []
    for o in outcomes:
        check = domains.get(domain_of(o.address)) if o.success else None
        detail = o.detail
        if check and check.error:  # reported, and the mailbox is connected all the same
            detail = "; ".join(
                filter(None, [o.detail, f"SPF/DKIM/DMARC/MX unknown: {check.error}"])
            )[:500]
        results.append(
            (
                run.pk,
                o.position,
                o.email,
                o.name or o.graph_name,
                True,
                o.success,
                o.error.code if o.error else "",
                detail,
                o.mailbox.pk if o.mailbox else None,
                *(
                    (check.spf_correct, check.dkim_correct, check.dmarc_correct, check.mx_correct)
                    if check
                    else (None, None, None, None)
                ),
            )
        )
    # The pending rows are replaced by the finished ones: two statements for the chunk, where a
    # bulk_update would build a CASE per field and row.
    replaced = Q(error_code=errors.THROTTLED.code, done=True) if again else Q(done=False)
    run.results.filter(replaced, position__in=[o.position for o in outcomes]).delete()
    insert_rows(BulkAddResult, RESULT_COLUMNS, results)
    if again:  # already counted: failures that now connected move over
        counts = {
            "connected": F("connected") + len(successes),
            "failed": F("failed") - len(successes),
        }
    else:
        counts = {
            "processed": F("processed") + len(outcomes),
            "connected": F("connected") + len(successes),
            "failed": F("failed") + len(outcomes) - len(successes),
        }
    BulkAddRun.objects.filter(pk=run.pk).update(**counts)


def retry_throttled(
    run: BulkAddRun, client: GraphClient, domains: dict[str, DomainCheck], owner: str
) -> int:
    """One last, bounded pass over the accounts whose retries ran out under 429s: after the
    longest Retry-After Graph asked for in this run (at most GRAPH_MAX_RETRY_AFTER), the way
    Graph asks to be approached (https://learn.microsoft.com/graph/throttling). Steady throttling
    at 30 % leaves about 1 in 100 accounts THROTTLED after their own retries; this pass clears
    them. Returns how many accounts were tried again."""
    left = list(
        run.results.filter(error_code=errors.THROTTLED.code, done=True)
        .order_by("position")
        .values_list("position", "email", "name")
    )
    if not left:
        return 0
    wait = client.longest_retry_after or settings.GRAPH_RETRY_BACKOFF
    time.sleep(max(0.0, min(wait, settings.GRAPH_MAX_RETRY_AFTER)))
    accounts = [(n, Account(email, name)) for n, email, name in left]
    for outcomes in check_accounts(client, accounts):
        record(run, outcomes, domains, owner, again=True)
    return len(left)


def fail_for_permissions(run: BulkAddRun, owner: str) -> bool:
    """When Graph refused every account for a missing application permission (403
    Authorization_RequestDenied on `/users`, or on mailboxSettings), the run fails with
    APP_PERMISSION_MISSING naming it and the credential is marked so: one credential problem
    for the manager to fix, not N mailbox problems. True when the run was failed."""
    results = run.results.all()
    if (
        not results.exists()
        or results.exclude(error_code=errors.APP_PERMISSION_MISSING.code).exists()
    ):
        return False
    missing = [
        p
        for p in Credential.GRAPH_PERMISSIONS
        if results.filter(error_detail__contains=f"application permission {p}:").exists()
    ] or ["User.Read.All"]
    failure = FleetError(
        errors.APP_PERMISSION_MISSING,
        f"The app lacks the Microsoft Graph application permission {', '.join(missing)}: Graph "
        f"refused every account of this bulk add (403 Authorization_RequestDenied). Add it with "
        "admin consent, Verify the credential, then run the bulk add again.",
    )
    credential = run.credential
    if credential is not None:
        credential.permissions = {**credential.permissions, **dict.fromkeys(missing, False)}
        credential.save(update_fields=["permissions"])
        record_outcome(credential, failure)
    BulkAddRun.objects.filter(pk=run.pk, lease_owner=owner).update(
        status=BulkAddRun.Status.FAILED,
        outcome=BulkAddRun.Outcome.REJECTED,
        error_code=failure.code,
        error_message=failure.message,
        finished_at=timezone.now(),
        lease_owner="",
        lease_expires_at=None,
    )
    return True


def save_mailboxes(
    run: BulkAddRun, successes: list[AccountCheck], domains: dict[str, DomainCheck], now
) -> None:
    """Create the chunk's new mailboxes and update the existing ones, setting each outcome's
    `mailbox`. A mailbox is matched by its address (case-insensitively) or by its Graph user id:
    running the same list again, or listing a user's sign-in name beside their mail address,
    creates no duplicate. A mailbox connected by OAuth consent is left as it is (its outcome
    becomes ALREADY_CONNECTED) unless the run converts."""
    if not successes:
        return
    workspace = run.workspace
    found = list(
        Mailbox.objects.annotate(address=Lower("email")).filter(
            Q(address__in={o.address for o in successes})
            | Q(graph_user_id__in={o.graph_user_id for o in successes}),
            workspace=workspace,
        )
    )
    by_address = {m.address: m for m in found}
    by_user = {m.graph_user_id: m for m in found if m.graph_user_id}
    fields = [
        "display_name",
        "auth_method",
        "graph_user_id",
        "credential",
        "spf_correct",
        "dkim_correct",
        "dmarc_correct",
        "dmarc_policy",
        "mx_correct",
        "last_checked_at",
    ]
    chunk: dict[str, Mailbox] = {}  # Graph user id → its mailbox in this chunk
    new: list[Mailbox] = []
    changed: dict[int, Mailbox] = {}
    converted: list[Mailbox] = []
    before: dict[int, dict] = {}  # existing mailboxes' fields, for their audit entries
    for o in successes:
        seen = chunk.get(o.graph_user_id)
        mailbox = seen or by_address.get(o.address) or by_user.get(o.graph_user_id)
        if mailbox is None:
            mailbox = mailboxes.new(workspace, o.address, Mailbox.AuthMethod.GRAPH_APP_ONLY)
            new.append(mailbox)
        chunk[o.graph_user_id] = o.mailbox = mailbox
        if seen is not None and not o.detail:
            o.detail = f"the same Microsoft 365 user as {seen.email}: one mailbox"
        if mailbox.auth_method == Mailbox.AuthMethod.OAUTH:
            if not run.convert:
                o.error = errors.ALREADY_CONNECTED
                o.detail = "; ".join(filter(None, [o.detail, "kept as it is (OAuth)"]))[:500]
                continue
            converted.append(mailbox)
            o.detail = "; ".join(
                filter(None, [o.detail, "switched from OAuth to Graph app-only (convert)"])
            )[:500]
        check = domains.get(domain_of(o.address))
        if mailbox.pk is not None and mailbox.pk not in before:
            before[mailbox.pk] = audit.snapshot(
                mailbox, [Mailbox._meta.get_field(f).attname for f in fields]
            )
        mailbox.display_name = o.name or o.graph_name or mailbox.display_name
        mailbox.auth_method = Mailbox.AuthMethod.GRAPH_APP_ONLY
        mailbox.graph_user_id = o.graph_user_id
        mailbox.credential_id = run.credential_id
        mailbox.spf_correct = check.spf_correct if check else None
        mailbox.dkim_correct = check.dkim_correct if check else None
        mailbox.dmarc_correct = check.dmarc_correct if check else None
        mailbox.dmarc_policy = check.dmarc_policy if check else ""
        mailbox.mx_correct = check.mx_correct if check else None
        mailbox.last_checked_at = mailbox.updated_at = now
        if mailbox.pk is not None:
            changed[mailbox.pk] = mailbox
    try:
        with transaction.atomic():
            insert_many(new)
    except IntegrityError:
        # Another run added one of these meanwhile: take theirs, one by one.
        for mailbox in new:
            mailbox.pk = None
            mailbox.pk = (
                Mailbox.objects.annotate(address=Lower("email"))
                .filter(workspace=workspace, address=mailbox.email.lower())
                .values_list("pk", flat=True)
                .first()
            )
            mailbox._state.adding = mailbox.pk is None
            mailbox.save()
    Mailbox.objects.bulk_update(list(changed.values()), [*fields, "updated_at"])
    saved = [*changed.values(), *new]
    audit.record_many(
        "mailbox.created", new, actor=run.created_by, via="task",
        changes=lambda m: audit.set_fields(m, mailboxes.CREATED_FIELDS),
    )
    audit.record_many(
        "mailbox.updated", changed.values(), actor=run.created_by, via="task",
        changes=lambda m: audit.diff(m, before[m.pk]),
    )
    for mailbox in saved:
        mailbox.workspace = workspace  # for webhooks, without a query each
    if converted:
        MailboxEvent.objects.bulk_create(
            MailboxEvent(
                workspace_id=workspace.pk,
                mailbox=m,
                email=m.email,
                kind=MailboxEvent.Kind.NOTE,
                message="Switched from OAuth to Graph app-only by a bulk add with 'convert'",
                actor=run.created_by,
                via="task",
            )
            for m in converted
        )
    # A disabled mailbox stays disabled: re-enabling it is a manager's decision.
    Mailbox.set_status_many(
        [m for m in saved if m.status not in (Mailbox.Status.ACTIVE, Mailbox.Status.DISABLED)],
        Mailbox.Status.ACTIVE,
        message="Found in Microsoft Graph (bulk add)",
        actor=run.created_by,
        via="task",
    )


def fail_run(run: BulkAddRun, failure: FleetError, owner: str) -> BulkAddRun:
    """The run cannot go on: every account not yet done gets the run's code."""
    with transaction.atomic():
        ended = BulkAddRun.objects.filter(pk=run.pk, lease_owner=owner).update(
            status=BulkAddRun.Status.FAILED,
            error_code=failure.code,
            error_message=failure.message,
            finished_at=timezone.now(),
            lease_owner="",
            lease_expires_at=None,
        )
        if not ended:
            run.refresh_from_db()
            return run  # another task holds the run now
        left = run.results.filter(done=False).update(
            done=True, success=False, error_code=failure.code, error_detail=failure.message[:500]
        )
        BulkAddRun.objects.filter(pk=run.pk).update(
            processed=F("processed") + left, failed=F("failed") + left
        )
        run.refresh_from_db()
        run.outcome = outcome_of(run)
        run.save(update_fields=["outcome"])
    return run


# --- runs whose worker died (the reaper, fleet/leases.py) --------------------------------------
def reclaim_expired(now: datetime) -> int:
    """A running run whose lease expired goes back to the queue, its task row marked failed, and a
    new task goes on from its undone results; a queued run whose task was lost is queued again."""
    from fleet.tasks import enqueue_on_commit, run_bulk_add

    requeued = set()
    expired = BulkAddRun.objects.filter(
        status=BulkAddRun.Status.RUNNING, lease_expires_at__lt=now
    ).values_list("pk", "lease_owner")
    for pk, owner in expired:
        with transaction.atomic():
            taken = BulkAddRun.objects.filter(
                pk=pk, status=BulkAddRun.Status.RUNNING, lease_owner=owner, lease_expires_at__lt=now
            ).update(
                status=BulkAddRun.Status.QUEUED,
                lease_owner="",
                lease_expires_at=None,
                lease_reclaims=F("lease_reclaims") + 1,
            )
            if taken:
                leases.fail_task_rows(
                    [owner],
                    f"Its worker stopped during bulk add {pk}; Fleet's reaper queued the run "
                    "again and a new task goes on with the accounts not yet done.",
                )
                enqueue_on_commit(run_bulk_add, pk)
                requeued.add(pk)
    waiting = BulkAddRun.objects.filter(
        status=BulkAddRun.Status.QUEUED,
        created_at__lt=now - timedelta(seconds=leases.lease_seconds()),
    ).exclude(pk__in=requeued)
    for pk in waiting.values_list("pk", flat=True):
        locked = BulkAddRun.objects.filter(pk=pk, status=BulkAddRun.Status.QUEUED)
        if leases.requeue_if_lost(locked, run_bulk_add, pk, now=now):
            requeued.add(pk)
    return len(requeued)
