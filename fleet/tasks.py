"""Background work through the Django Tasks API (django_tasks backport, django-tasks-db backend).

Tasks take ids, load their rows and call a service; they are enqueued only once the transaction
that created the rows has committed, so a worker never looks for a row that is not there yet.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import transaction
from django_tasks import task


def enqueue_on_commit(job: Any, *args: Any, **kwargs: Any) -> None:
    """Enqueue the task `job` after the current transaction commits (at once outside one)."""
    transaction.on_commit(partial(job.enqueue, *args, **kwargs))


@task()
def deliver_webhook(delivery_id: int) -> None:
    from fleet import webhooks

    webhooks.deliver(delivery_id)


# --- Mailbox connection tests (SMTP/IMAP) ----------------------------------------------------
@task()
def check_mailboxes(mailbox_ids: list[int], actor_id: int | None = None) -> dict[str, int]:
    """Connection tests of these mailboxes (MAIL_CHECK_CONCURRENCY at a time)."""
    from django.contrib.auth import get_user_model

    from fleet import mailbox_checks

    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    return dict(mailbox_checks.check_mailboxes(mailbox_ids, actor=actor))


# --- Microsoft OAuth upkeep -----------------------------------------------------------------
@task()
def refresh_expiring_tokens() -> dict[str, int]:
    """Periodic (see `manage.py run_periodic`): refresh access tokens ahead of expiry."""
    from fleet.microsoft.identity import refresh_expiring

    return refresh_expiring()


@task()
def expire_consent_requests() -> int:
    """Periodic: move consent requests past their expiry to `expired`."""
    from fleet.consent import expire_stale

    return expire_stale()


@task()
def verify_credential(credential_id: int) -> str:
    """Check an app-only credential by getting a Graph token with it (client credentials)."""
    from fleet.credentials import verify
    from fleet.models import Credential

    credential = Credential.objects.filter(pk=credential_id).first()
    return verify(credential).status if credential else "gone"


@task()
def run_bulk_add(run_id: int) -> str:
    """A Graph app-only bulk add (seed 004), from its queued BulkAddRun to its outcome."""
    from fleet.bulk_add import execute
    from fleet.models import BulkAddRun

    run = BulkAddRun.objects.select_related("workspace", "credential").filter(pk=run_id).first()
    return execute(run).status if run else "gone"


# Periodic tasks and their interval in seconds, for `manage.py run_periodic`.
@task()
def fail_abandoned_bulk_adds() -> int:
    """Periodic: report bulk adds whose worker died mid-run."""
    from fleet.bulk_add import fail_abandoned_runs

    return fail_abandoned_runs()


PERIODIC = {
    refresh_expiring_tokens: 5 * 60,
    expire_consent_requests: 15 * 60,
    fail_abandoned_bulk_adds: 10 * 60,
}
