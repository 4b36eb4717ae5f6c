"""Connection tests of mailboxes: sign in over SMTP and IMAP (fleet/mailproto.py) and record the
outcome on each mailbox (status, error code, last_checked_at) with a MailboxEvent per test.

The network part runs in a bounded thread pool (MAIL_CHECK_CONCURRENCY at a time); database
writes stay in the calling thread, one short transaction per mailbox as its result arrives, so
that an import's progress bar moves while the batch runs.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, nullcontext
from itertools import zip_longest

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from fleet import app_only as app_only_mail
from fleet import errors, mailproto
from fleet.errors import FleetError
from fleet.microsoft import graph, identity
from fleet.models import Mailbox, MailboxEvent
from fleet.secrets import is_unreadable

log = logging.getLogger(__name__)


def login_for(mailbox: Mailbox, access_token: str = "") -> mailproto.Login:
    """The sign-in a mailbox uses: its access token (XOAUTH2) for OAuth mailboxes, its app
    password otherwise."""
    token = access_token or (
        mailbox.access_token if mailbox.auth_method == Mailbox.AuthMethod.OAUTH else ""
    )
    if is_unreadable(mailbox.password) or is_unreadable(mailbox.access_token):
        raise mailproto.MailCheckError(errors.SECRET_UNREADABLE, "The stored secret is unreadable")
    if not token and not mailbox.password:
        raise mailproto.MailCheckError(errors.NO_MAIL_CREDENTIAL, "No app password or token")
    return mailproto.Login(mailbox.email, password=str(mailbox.password), access_token=str(token))


def probe(mailbox: Mailbox, access_token: str = "") -> tuple[errors.ErrorCode | None, str]:
    """Sign in over SMTP and IMAP; (None, summary) or (error code, what failed). No database."""
    try:
        return None, mailproto.check_mailbox_servers(
            mailproto.Server(mailbox.smtp_host, mailbox.smtp_port, mailbox.smtp_security),
            mailproto.Server(mailbox.imap_host, mailbox.imap_port, mailbox.imap_security),
            login_for(mailbox, access_token),
        )
    except mailproto.MailCheckError as exc:
        return exc.error, exc.detail
    except Exception as exc:  # a bug must not lose the other mailboxes' results
        log.exception("connection test of mailbox %s crashed", mailbox.pk)
        return errors.CONNECTION_FAILED, f"Unexpected {type(exc).__name__} during the test"


# What record() returns for a mailbox deleted while its batch was being tested.
DELETED = "deleted"


def connection_test_event(
    mailbox: Mailbox, outcome: str, error: errors.ErrorCode | None, message: str, actor_id
) -> MailboxEvent:
    """One connection test as the mailbox's history shows it (unsaved): the uptime figures and
    the dashboard's rollups count these (fleet/uptime.py)."""
    return MailboxEvent(
        workspace_id=mailbox.workspace_id,
        mailbox=mailbox,
        email=mailbox.email,
        kind=MailboxEvent.Kind.CONNECTION_TEST,
        from_status=mailbox.status,
        to_status=outcome,
        error_code=error.code if error else "",
        message=message,
        actor_id=actor_id,
        via="task",
    )


@transaction.atomic
def record(mailbox: Mailbox, error: errors.ErrorCode | None, detail: str, actor=None) -> str:
    """Write one test's outcome: an event always, a status change when the outcome differs.
    A mailbox deleted meanwhile has nothing to record (DELETED): the rest of the batch goes on."""
    current = Mailbox.objects.select_for_update().filter(pk=mailbox.pk).first()
    if current is None:
        return DELETED
    outcome = outcome_for(current, error)  # a passing test is recorded all the same
    connection_test_event(current, outcome, error, detail, getattr(actor, "pk", None)).save()
    # A mailbox disabled while it was being tested stays disabled.
    if current.status != Mailbox.Status.DISABLED and (
        current.status != outcome or current.error_code != (error.code if error else "")
    ):
        current.set_status(
            outcome, error=error, message=detail if error else "", actor=actor, via="task"
        )
    current.last_checked_at = timezone.now()
    current.save(update_fields=["last_checked_at", "updated_at"])
    return current.status


def graph_checks(mailboxes: list[Mailbox]) -> dict[int, tuple[errors.ErrorCode | None, str]]:
    """Graph app-only mailboxes, checked through Graph: their mailbox settings answer only for a
    licensed mailbox the app may read (`MailboxSettings.Read`). 20 mailboxes per `$batch`, four
    batches in flight, per credential. No database here."""
    results: dict[int, tuple[errors.ErrorCode | None, str]] = {}
    by_credential: dict[int | None, list[Mailbox]] = {}
    for mailbox in mailboxes:
        by_credential.setdefault(mailbox.credential_id, []).append(mailbox)
    for credential_id, group in by_credential.items():
        if credential_id is None:
            for mailbox in group:
                results[mailbox.pk] = (
                    errors.NO_MAIL_CREDENTIAL,
                    "No Graph app-only credential is set on this mailbox",
                )
            continue
        client = graph.GraphClient(group[0].credential)

        def check(client, chunk):
            return client.send(
                [
                    graph.GraphRequest(
                        str(m.pk), graph.user_path(m.graph_user_id or m.email) + "/mailboxSettings"
                    )
                    for m in chunk
                ]
            )

        try:
            for answers in client.pipeline(group, check):
                for key, answer in answers.items():
                    results[int(key)] = (
                        (None, GRAPH_CHECKED)
                        if answer.ok
                        else (graph.catalogue_error(answer.error), answer.error.message[:500])
                    )
        except FleetError as failure:  # no app token: the credential's problem, on each
            for mailbox in group:
                results.setdefault(mailbox.pk, (failure.error, failure.message))
    return results


GRAPH_CHECKED = "Checked via Microsoft Graph only (mailbox settings): the app holds no Exchange roles"


# What `test_each` yields for a mailbox whose outcome is already written (a revoked grant:
# identity.access_token_for moved it to reauth_required) and for one deleted meanwhile.
ALREADY_RECORDED = "already_recorded"


def outcome_for(current: Mailbox, error: errors.ErrorCode | None) -> str:
    """The status a test's result means for this mailbox."""
    outcome = Mailbox.Status.ERROR if error else Mailbox.Status.ACTIVE
    if outcome == Mailbox.Status.ACTIVE and current.needs_approval:
        # Mailivery's Microsoft connect API: a mailbox nobody announced stays pending until a
        # manager approves it (or the API's warmup/start does).
        outcome = Mailbox.Status.PENDING
    return outcome


def tenant_key(mailbox: Mailbox) -> str:
    """Whose servers a test signs in to, for the per-tenant cap: the credential's tenant when
    it names one, else the mail domain (one domain is one Microsoft tenant)."""
    tenant = mailbox.credential.tenant_id if mailbox.credential_id and mailbox.credential else ""
    if tenant and tenant not in ("common", "organizations", "consumers"):
        return tenant.lower()
    return mailbox.email.rsplit("@", 1)[-1].lower()


class Caps:
    """At most `per_host` tests at once against one mail-server host and `per_tenant` against
    one tenant, so a sweep of many mailboxes never looks like an attack to Exchange Online
    (its limits are per mailbox and per tenant: https://learn.microsoft.com/en-us/office365/
    servicedescriptions/exchange-online-service-description/exchange-online-limits)."""

    def __init__(self, per_host: int, per_tenant: int):
        self.per_host, self.per_tenant = per_host, per_tenant
        self._lock = threading.Lock()
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._tenants: dict[str, threading.BoundedSemaphore] = {}

    def _get(self, table: dict, key: str, size: int) -> threading.BoundedSemaphore:
        with self._lock:
            if key not in table:
                table[key] = threading.BoundedSemaphore(size)
            return table[key]

    @contextmanager
    def hold(self, mailbox: Mailbox):
        host = self._get(self._hosts, (mailbox.smtp_host or "").lower(), self.per_host)
        tenant = self._get(self._tenants, tenant_key(mailbox), self.per_tenant)
        with tenant, host:
            yield


def interleaved(mailboxes: list[Mailbox]) -> list[Mailbox]:
    """Round-robin over tenants, so that pool threads rarely wait on one tenant's cap."""
    groups: dict[str, list[Mailbox]] = {}
    for mailbox in mailboxes:
        groups.setdefault(tenant_key(mailbox), []).append(mailbox)
    return [m for batch in zip_longest(*groups.values()) for m in batch if m is not None]


def _test_one(mailbox: Mailbox, token: str, fetch_token: bool, caps: Caps | None):
    """One mailbox's test on a pool thread: its token first when it needs one (so many token
    requests run at once), then the sign-in. Database work only through access_token_for."""
    if fetch_token:
        try:
            token = identity.access_token_for(mailbox)
        except Mailbox.DoesNotExist:
            return DELETED
        except FleetError as failure:
            if failure.error is errors.REAUTH_REQUIRED:
                return ALREADY_RECORDED
            return failure.error, failure.message
        finally:
            connection.close()  # this thread's own connection, opened by the token's save
    with caps.hold(mailbox) if caps else nullcontext():
        if mailbox.auth_method == Mailbox.AuthMethod.GRAPH_APP_ONLY:
            return app_only_mail.app_only_probe(mailbox)
        return probe(mailbox, token)


def test_each(
    mailboxes: list[Mailbox],
    concurrency: int | None = None,
    caps: Caps | None = None,
) -> Iterator[tuple[Mailbox, object]]:
    """Test these mailboxes (not disabled ones: the caller leaves those out), by auth method: an
    app password signs in over SMTP and IMAP, an OAuth mailbox with XOAUTH2 and its access
    token, a Graph app-only mailbox with XOAUTH2 and the app's token when its credential holds
    the Exchange roles (IMAP.AccessAsApp, SMTP.SendAsApp), else through Graph only. Yields
    (mailbox, result) in the calling thread as results arrive: (error or None, detail),
    DELETED or ALREADY_RECORDED. The network work runs on `concurrency` threads."""
    # Inside an uncommitted transaction (a test calling this in-process) other connections see
    # nothing: tokens are then fetched here, on this thread's connection.
    tokens_on_threads = not connection.in_atomic_block
    tokens, testable, app_only = {}, [], []
    for mailbox in mailboxes:
        if mailbox.auth_method == Mailbox.AuthMethod.GRAPH_APP_ONLY:
            if app_only_mail.uses_app_only_mail(mailbox):
                testable.append(mailbox)  # SMTP/IMAP with the app's token (XOAUTH2)
            else:
                app_only.append(mailbox)  # the app holds no Exchange roles: Graph only
            continue
        if mailbox.auth_method == Mailbox.AuthMethod.OAUTH and mailbox.credential_id:
            if is_unreadable(mailbox.refresh_token) or is_unreadable(mailbox.access_token):
                # A missing encryption key: say so on the mailbox rather than call it revoked.
                yield mailbox, (errors.SECRET_UNREADABLE, "The stored token is unreadable")
                continue
            if not tokens_on_threads:
                try:
                    tokens[mailbox.pk] = identity.access_token_for(mailbox)
                except Mailbox.DoesNotExist:
                    yield mailbox, DELETED
                    continue
                except FleetError as failure:
                    yield mailbox, (
                        ALREADY_RECORDED
                        if failure.error is errors.REAUTH_REQUIRED
                        else (failure.error, failure.message)
                    )
                    continue
        testable.append(mailbox)
    if app_only:
        found = graph_checks(app_only)
        for mailbox in app_only:
            yield mailbox, found[mailbox.pk]
    if not testable:
        return
    workers = min(concurrency or settings.MAIL_CHECK_CONCURRENCY, len(testable))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailcheck") as pool:
        futures = {
            pool.submit(
                _test_one,
                m,
                tokens.get(m.pk, ""),
                tokens_on_threads
                and m.auth_method == Mailbox.AuthMethod.OAUTH
                and bool(m.credential_id),
                caps,
            ): m
            for m in (interleaved(testable) if caps else testable)
        }
        for future in as_completed(futures):
            yield futures[future], future.result()


def check_mailboxes(
    mailbox_ids: Iterable[int], actor=None, concurrency: int | None = None
) -> Counter:
    """Test every mailbox (disabled ones excepted) at once and record each outcome (the
    connection test of a click or an import before health sweeps, fleet/health.py; kept for
    callers that want the outcome in hand). Returns the number of mailboxes per status."""
    mailboxes = list(
        Mailbox.objects.filter(pk__in=list(mailbox_ids))
        .exclude(status=Mailbox.Status.DISABLED)
        .select_related("credential")
    )
    outcome: Counter = Counter()
    for mailbox, result in test_each(mailboxes, concurrency):
        if result == DELETED:
            outcome[DELETED] += 1
        elif result == ALREADY_RECORDED:
            outcome[Mailbox.Status.REAUTH_REQUIRED] += 1
        else:
            error, detail = result
            outcome[record(mailbox, error, detail, actor)] += 1
    return outcome
