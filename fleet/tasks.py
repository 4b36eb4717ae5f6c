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
