"""Connection tests of mailboxes: sign in over SMTP and IMAP (fleet/mailproto.py) and record the
outcome on each mailbox (status, error code, last_checked_at) with a MailboxEvent per test.

The network part runs in a bounded thread pool (MAIL_CHECK_CONCURRENCY at a time); database
writes stay in the calling thread, one short transaction per mailbox as its result arrives, so
that an import's progress bar moves while the batch runs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed

from django.conf import settings
from django.db import transaction
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


@transaction.atomic
def record(mailbox: Mailbox, error: errors.ErrorCode | None, detail: str, actor=None) -> str:
    """Write one test's outcome: an event always, a status change when the outcome differs.
    A mailbox deleted meanwhile has nothing to record (DELETED): the rest of the batch goes on."""
    current = Mailbox.objects.select_for_update().filter(pk=mailbox.pk).first()
    if current is None:
        return DELETED
    outcome = Mailbox.Status.ERROR if error else Mailbox.Status.ACTIVE
    if outcome == Mailbox.Status.ACTIVE and current.needs_approval:
        # Mailivery's Microsoft connect API: a mailbox nobody announced stays pending until a manager approves it (or the
        # API's warmup/start does); the passing test is recorded all the same.
        outcome = Mailbox.Status.PENDING
    MailboxEvent.objects.create(
        workspace_id=current.workspace_id,
        mailbox=current,
        email=current.email,
        kind=MailboxEvent.Kind.CONNECTION_TEST,
        from_status=current.status,
        to_status=outcome,
        error_code=error.code if error else "",
        message=detail,
        actor=actor,
        via="task",
    )
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


def check_mailboxes(
    mailbox_ids: Iterable[int], actor=None, concurrency: int | None = None
) -> Counter:
    """Test every mailbox (disabled ones excepted), by its auth method: an app password signs
    in over SMTP and IMAP, an OAuth mailbox with XOAUTH2 and its access token, a Graph
    app-only mailbox with XOAUTH2 and the app's token when its credential holds the Exchange
    roles (IMAP.AccessAsApp, SMTP.SendAsApp), else through Graph only. Returns the number of
    mailboxes per resulting status."""
    mailboxes = list(
        Mailbox.objects.filter(pk__in=list(mailbox_ids))
        .exclude(status=Mailbox.Status.DISABLED)
        .select_related("credential")
    )
    outcome: Counter = Counter()
    if not mailboxes:
        return outcome
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
                unreadable = "The stored token is unreadable"
                outcome[record(mailbox, errors.SECRET_UNREADABLE, unreadable, actor)] += 1
                continue
            try:
                # Refreshed (and the rotated refresh token saved) only when it is about to expire;
                # the upkeep task keeps most tokens fresh, so this is rarely a round trip.
                tokens[mailbox.pk] = identity.access_token_for(mailbox)
            except Mailbox.DoesNotExist:
                outcome[DELETED] += 1  # deleted since the batch was read
                continue
            except FleetError as failure:
                if failure.error is errors.REAUTH_REQUIRED:
                    outcome[Mailbox.Status.REAUTH_REQUIRED] += 1  # already recorded there
                    continue
                outcome[record(mailbox, failure.error, failure.message, actor)] += 1
                continue
        testable.append(mailbox)
    if app_only:
        found = graph_checks(app_only)
        for mailbox in app_only:
            error, detail = found[mailbox.pk]
            outcome[record(mailbox, error, detail, actor)] += 1
    if not testable:
        return outcome
    workers = min(concurrency or settings.MAIL_CHECK_CONCURRENCY, len(testable))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailcheck") as pool:
        futures = {
            (
                pool.submit(app_only_mail.app_only_probe, m)
                if m.auth_method == Mailbox.AuthMethod.GRAPH_APP_ONLY
                else pool.submit(probe, m, tokens.get(m.pk, ""))
            ): m
            for m in testable
        }
        for future in as_completed(futures):
            error, detail = future.result()
            outcome[record(futures[future], error, detail, actor)] += 1
    return outcome
