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

from fleet import errors, mailproto
from fleet.errors import FleetError
from fleet.microsoft import identity
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
    )
    # A mailbox disabled while it was being tested stays disabled.
    if current.status != Mailbox.Status.DISABLED and (
        current.status != outcome or current.error_code != (error.code if error else "")
    ):
        current.set_status(outcome, error=error, message=detail if error else "", actor=actor)
    current.last_checked_at = timezone.now()
    current.save(update_fields=["last_checked_at", "updated_at"])
    return current.status


def check_mailboxes(
    mailbox_ids: Iterable[int], actor=None, concurrency: int | None = None
) -> Counter:
    """Test every mailbox (disabled ones excepted), at most `concurrency` at a time; returns the
    number of mailboxes per resulting status."""
    mailboxes = list(
        Mailbox.objects.filter(pk__in=list(mailbox_ids)).exclude(status=Mailbox.Status.DISABLED)
    )
    outcome: Counter = Counter()
    if not mailboxes:
        return outcome
    tokens, testable = {}, []
    for mailbox in mailboxes:
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
    if not testable:
        return outcome
    workers = min(concurrency or settings.MAIL_CHECK_CONCURRENCY, len(testable))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailcheck") as pool:
        futures = {pool.submit(probe, m, tokens.get(m.pk, "")): m for m in testable}
        for future in as_completed(futures):
            error, detail = future.result()
            outcome[record(futures[future], error, detail, actor)] += 1
    return outcome
