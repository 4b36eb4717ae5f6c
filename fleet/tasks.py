"""Background work through the Django Tasks API (django_tasks backport, django-tasks-db backend).

Tasks take ids, load their rows and call a service; they are enqueued only once the transaction
that created the rows has committed, so a worker never looks for a row that is not there yet.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import transaction


def enqueue_on_commit(task: Any, *args: Any, **kwargs: Any) -> None:
    """Enqueue `task` after the current transaction commits (at once outside a transaction)."""
    transaction.on_commit(partial(task.enqueue, *args, **kwargs))
