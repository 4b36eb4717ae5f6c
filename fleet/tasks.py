"""Background work through the Django Tasks API (django_tasks backport, django-tasks-db backend).

Tasks take ids, load their rows and call a service; they are enqueued only once the transaction
that created the rows has committed, so a worker never looks for a row that is not there yet.

This module is the task registry: services import it to enqueue, so it imports nothing of Fleet's
at module level, and each task imports its service inside the function (the one upward
reference the layer contract in pyproject.toml allows).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django_tasks import TaskContext, task


def enqueue_on_commit(job: Any, *args: Any, **kwargs: Any) -> None:
    """Enqueue the task `job` after the current transaction commits (at once outside one)."""
    transaction.on_commit(partial(job.enqueue, *args, **kwargs))


# --- Webhooks ------------------------------------------------------------------------------
@task(takes_context=True)
def send_webhooks(context: TaskContext, workspace_id: int) -> int:
    """Send a workspace's due webhook deliveries, in sequence order."""
    from fleet import leases, webhooks

    return webhooks.send_due(workspace_id, owner=leases.owner_of(context))


@task()
def deliver_webhook(delivery_id: int) -> None:
    """Tasks queued before the sender went per workspace: send that delivery's workspace."""
    from fleet.models import WebhookDelivery

    workspace_id = (
        WebhookDelivery.objects.filter(pk=delivery_id)
        .values_list("workspace_id", flat=True)
        .first()
    )
    if workspace_id is not None:
        send_webhooks.enqueue(workspace_id)


# Upkeep goes ahead of a backlog (a queue of bulk adds must not hold up the reaper).
UPKEEP_PRIORITY = 50


@task(priority=UPKEEP_PRIORITY)
def sweep_webhooks() -> int:
    """Periodic: hand every workspace with a due webhook delivery to a send task."""
    from fleet import webhooks

    return webhooks.sweep()


# --- Mailbox connection tests (SMTP/IMAP) ----------------------------------------------------
@task()
def check_mailboxes(mailbox_ids: list[int], actor_id: int | None = None) -> dict[str, int]:
    """Connection tests of these mailboxes (MAIL_CHECK_CONCURRENCY at a time)."""
    from django.contrib.auth import get_user_model

    from fleet import mailbox_checks

    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    return dict(mailbox_checks.check_mailboxes(mailbox_ids, actor=actor))


@task(takes_context=True)
def test_due_mailboxes(context: TaskContext) -> dict[str, int]:
    """Claim a chunk of mailboxes whose test is due (leased, fleet/health.py) and test them."""
    from fleet import health, leases

    outcome = dict(health.run_due(leases.owner_of(context)))
    health.continue_if_due()
    return outcome


@task(priority=UPKEEP_PRIORITY)
def dispatch_health_checks() -> dict[str, int]:
    """Periodic: schedule new mailboxes' health checks and queue tasks for the due ones."""
    from fleet import health

    return health.dispatch()


# --- Microsoft OAuth upkeep (fleet/tokens.py) ------------------------------------------------
@task(priority=UPKEEP_PRIORITY)
def dispatch_token_keepalive() -> int:
    """Periodic: hand the refresh tokens due for their keep-alive to `keep_tokens_alive` tasks."""
    from fleet import tokens

    return tokens.dispatch()


@task(takes_context=True)
def keep_tokens_alive(context: TaskContext, queued_owner: str) -> dict[str, int]:
    """Redeem one chunk of due refresh tokens, TOKEN_REFRESH_CONCURRENCY at a time."""
    from fleet import leases, tokens

    return tokens.run(queued_owner, owner=leases.owner_of(context))


@task()
def refresh_expiring_tokens() -> int:
    """Tasks queued before access tokens were fetched when needed: the keep-alive dispatch."""
    from fleet import tokens

    return tokens.dispatch()


@task()
def expire_consent_requests() -> int:
    """Periodic: move consent requests past their expiry to `expired`."""
    from fleet.consent import expire_stale

    return expire_stale()


@task(takes_context=True)
def verify_credential(context: TaskContext, credential_id: int) -> str:
    """Check an app-only credential by getting a Graph token with it (client credentials)."""
    from fleet import leases
    from fleet.credentials import verify_requested

    return verify_requested(credential_id, owner=leases.owner_of(context))


@task(takes_context=True)
def run_bulk_add(context: TaskContext, run_id: int) -> str:
    """A Graph app-only bulk add (Woodpecker's bulk-add API), from its queued BulkAddRun to its outcome."""
    from fleet import leases
    from fleet.bulk_add import execute
    from fleet.models import BulkAddRun

    run = BulkAddRun.objects.select_related("workspace", "credential").filter(pk=run_id).first()
    return execute(run, owner=leases.owner_of(context)).status if run else "gone"


# --- Disconnect alerts (fleet/alerts.py) ------------------------------------------------------
@task(takes_context=True, priority=UPKEEP_PRIORITY)
def send_alert_digests(context: TaskContext) -> dict[str, int]:
    """Periodic: open the workspaces' due alert digests and send them (leased)."""
    from fleet import alerts, leases

    return alerts.send_due(owner=leases.owner_of(context))


# --- Work of dead workers (fleet/leases.py) ---------------------------------------------------
# Each job kind's `reclaim_expired(now) -> int`, in the service module of that job: it takes
# back the kind's rows whose lease expired (a conditional UPDATE, safe on many hosts at once),
# marks the dead task rows FAILED with a note and enqueues new tasks. Add a kind here.
RECLAIMERS = [
    "fleet.bulk_add.reclaim_expired",
    "fleet.webhooks.reclaim_expired",
    "fleet.credentials.reclaim_expired",
    "fleet.move.reclaim_expired",
    "fleet.tokens.reclaim_expired",
    "fleet.alerts.reclaim_expired",
    "fleet.health.reclaim_expired",
]


@task(priority=UPKEEP_PRIORITY)
def reap() -> dict[str, int]:
    """Periodic: give the work of workers that died to new tasks."""
    from fleet import leases

    return leases.reap(RECLAIMERS)


# --- Moving off Basic auth (fleet/move.py) ---------------------------------------------------
@task()
def run_move(run_id: int) -> str:
    """A move of app-password mailboxes off Basic auth, from its queued MoveRun to its end."""
    from fleet.models import MoveRun
    from fleet.move import execute_move

    run = MoveRun.objects.select_related("workspace", "created_by").filter(pk=run_id).first()
    return execute_move(run).status if run else "gone"


@task()
def finish_consent_move(item_id: int) -> str:
    """After the owner's consent: the XOAUTH2 test, then (only if it passed) the password wiped."""
    from fleet.move import finish_consent_move as finish

    return finish(item_id)


# --- The audit log (fleet/audit.py) ---------------------------------------------------------
@task(priority=UPKEEP_PRIORITY)
def prune_audit_log() -> int:
    """Periodic: delete audit entries older than AUDIT_RETENTION_DAYS, in batches."""
    from fleet import audit

    return audit.prune()


# Periodic tasks and their interval in seconds, for `manage.py run_periodic`.
PERIODIC = {
    dispatch_token_keepalive: settings.JOB_REAPER_SECONDS,
    expire_consent_requests: 15 * 60,
    reap: settings.JOB_REAPER_SECONDS,
    sweep_webhooks: settings.JOB_REAPER_SECONDS,
    # Every minute whatever ALERT_DIGEST_MINUTES is: the window is kept per workspace.
    send_alert_digests: 60,
    prune_audit_log: 60 * 60,
    dispatch_health_checks: settings.JOB_REAPER_SECONDS,
}
