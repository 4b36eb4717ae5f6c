"""Background work through the Django Tasks API (django_tasks backport, django-tasks-db backend).

Tasks take ids, load their rows and call a service; they are enqueued only once the transaction
that created the rows has committed, so a worker never looks for a row that is not there yet.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django_tasks import task

from fleet import mailbox_checks


def enqueue_on_commit(task: Any, *args: Any, **kwargs: Any) -> None:
    """Enqueue `task` after the current transaction commits (at once outside a transaction)."""
    transaction.on_commit(partial(task.enqueue, *args, **kwargs))


@task()
def check_mailboxes(mailbox_ids: list[int], actor_id: int | None = None) -> dict[str, int]:
    """Connection tests of these mailboxes (MAIL_CHECK_CONCURRENCY at a time)."""
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    return dict(mailbox_checks.check_mailboxes(mailbox_ids, actor=actor))


@task()
def check_mailbox(mailbox_id: int) -> dict[str, int]:
    """Connection test of one mailbox."""
    return dict(mailbox_checks.check_mailboxes([mailbox_id]))
