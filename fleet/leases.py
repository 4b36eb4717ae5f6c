"""Leases: how work survives a worker that dies (kill -9, a lost machine).

django-tasks-db marks a task RUNNING when a worker claims it and never looks at it again: if the
worker dies, the task row stays RUNNING for ever (its open issue "Unclean exits of the worker
leave tasks in limbo"). So Fleet keeps the truth on its own rows (models.Leased):

- A task that does a job first *claims* the job's row with a conditional UPDATE, writing its own
  task id into `lease_owner` and `now + JOB_LEASE_SECONDS` into `lease_expires_at`; a row
  another task holds is left alone.
- While it works, a `Heartbeat` thread renews the lease every third of its length in its own
  short UPDATE (never a transaction held across a network call). The job's writes are fenced:
  they only apply while `lease_owner` is still this task (`LeaseLost` otherwise).
- The reaper (`reap`, the periodic task `fleet.tasks.reap`, every JOB_REAPER_SECONDS) calls each
  job kind's `reclaim_expired(now) -> int`. Each takes back rows whose lease ran out with a
  conditional UPDATE (so reapers on many hosts at once take each row once), marks the dead
  task's row FAILED with a note (`fail_task_rows`, shown in the admin's task list) and enqueues
  a new task, which goes on from the progress on the rows.

A job kind plugs in with one function in its service module::

    def reclaim_expired(now: datetime) -> int:
        \"\"\"Take back this kind's work whose lease expired; return how many rows.\"\"\"

listed in `fleet.tasks.RECLAIMERS`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, models, transaction
from django.db.utils import DatabaseError
from django.utils import timezone
from django.utils.module_loading import import_string
from django_tasks_db.models import DBTaskResult

log = logging.getLogger(__name__)

# What the admin's task list shows for a task whose worker died.
WORKER_LOST = "fleet.leases.WorkerLost"


class LeaseLost(Exception):
    """This task no longer holds the job's lease (the reaper gave it to another task)."""


def lease_seconds() -> float:
    return float(settings.JOB_LEASE_SECONDS)


def lease_until(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=lease_seconds())


def owner_of(context: Any) -> str:
    """The lease owner for a task run: its task id (a task started with `takes_context`)."""
    return str(context.task_result.id)


def claim(queryset: models.QuerySet, owner: str, **changes: Any) -> bool:
    """Take the lease on the one row of `queryset` (which says when it is free to take), with
    `changes` written in the same UPDATE. False when the row is held or gone."""
    now = timezone.now()
    return bool(queryset.update(lease_owner=owner, lease_expires_at=lease_until(now), **changes))


def release(model: type[models.Model], pk: Any, owner: str, **changes: Any) -> bool:
    """Give the lease back (with `changes`), if this task still holds it."""
    return bool(
        model.objects.filter(pk=pk, lease_owner=owner).update(
            lease_owner="", lease_expires_at=None, **changes
        )
    )


class Heartbeat:
    """Renew a lease from a background thread while the job works::

        with Heartbeat(BulkAddRun, run.pk, owner):
            ...  # the job's own writes check lease_owner (LeaseLost)

    Each renewal is one UPDATE on the thread's own connection, closed when the block ends.
    Inside an uncommitted transaction (a test calling a job in-process) there is nothing to
    renew from outside: no other connection sees the row yet, so no thread is started."""

    def __init__(self, model: type[models.Model], pk: Any, owner: str):
        self.model, self.pk, self.owner = model, pk, owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"lease-{pk}")
        self._started = False

    def __enter__(self) -> Heartbeat:
        if not connection.in_atomic_block:
            self._thread.start()
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._started:
            self._thread.join()

    def renew(self) -> int:
        """One renewal: how many rows are still held (0: the lease was taken back)."""
        return self.model.objects.filter(pk=self.pk, lease_owner=self.owner).update(
            lease_expires_at=lease_until()
        )

    def _run(self) -> None:
        interval = max(lease_seconds() / 3, 0.2)
        try:
            while not self._stop.wait(interval):
                try:
                    renewed = self.renew()
                except DatabaseError:  # a busy or restarting database: try again next beat
                    log.warning("lease renewal of %s %s failed", self.model.__name__, self.pk)
                    close_old_connections()
                    continue
                if not renewed:
                    log.warning("lease of %s %s was taken back", self.model.__name__, self.pk)
                    return
        finally:
            connection.close()


def take_back(
    model: type[models.Model], pk: Any, owner: str, now: datetime, *, error: str, note: str
) -> bool:
    """The reaper's step for one row of a `Leased` job whose lease ran out: free it (a
    conditional UPDATE, so reapers on many hosts take it once), count the reclaim, say why on
    the row (`last_error`), make it due at once and mark the dead task's row FAILED with `note`.
    False when another reaper (or a late heartbeat) got there first."""
    taken = model.objects.filter(pk=pk, lease_owner=owner, lease_expires_at__lt=now).update(
        lease_owner="",
        lease_expires_at=None,
        next_attempt_at=None,
        lease_reclaims=models.F("lease_reclaims") + 1,
        last_error=error,
    )
    if taken:
        fail_task_rows([owner], note)
    return bool(taken)


def task_ids(owners: Iterable[str]) -> list[uuid.UUID]:
    """The owners that are task ids (a job run in-process holds its lease as `local-…`)."""
    ids = []
    for owner in owners:
        try:
            ids.append(uuid.UUID(owner))
        except (TypeError, ValueError):
            continue
    return ids


def fail_task_rows(owners: Iterable[str], note: str) -> int:
    """Mark the RUNNING task rows of dead workers FAILED, with `note` as their traceback, so the
    admin's task list says what happened to them."""
    ids = task_ids(owners)
    if not ids:
        return 0
    return DBTaskResult.objects.filter(id__in=ids, status="RUNNING").update(
        status="FAILED",
        finished_at=timezone.now(),
        exception_class_path=WORKER_LOST,
        traceback=note,
        return_value=None,
    )


def task_rows(task: Any, *args: Any) -> models.QuerySet[DBTaskResult]:
    """The task rows of `task` called with `args`."""
    return DBTaskResult.objects.filter(task_path=task.module_path, args_kwargs__args=list(args))


def requeue_if_lost(locked: models.QuerySet, task: Any, *args: Any, now: datetime) -> bool:
    """For work that waits for a task but holds no lease (queued, or asked for): enqueue `task`
    again when no task is waiting for it and the one that took it died before its claim (its
    row RUNNING for longer than a lease). `locked` is the work's row, locked with SKIP LOCKED so
    that reapers on several hosts do this once."""
    from fleet.tasks import enqueue_on_commit

    with transaction.atomic():
        if locked.select_for_update(skip_locked=True).values_list("pk").first() is None:
            return False  # another reaper has it (or the work is gone)
        rows = task_rows(task, *args)
        if rows.filter(status="READY").exists():
            return False  # still queued: the workers are busy
        started = rows.filter(status="RUNNING")
        if started.filter(started_at__gt=now - timedelta(seconds=lease_seconds())).exists():
            return False  # just started, about to take its lease
        fail_task_rows(
            (str(pk) for pk in started.values_list("id", flat=True)),
            "Its worker stopped before the work began (Fleet's reaper queued it again).",
        )
        enqueue_on_commit(task, *args)
    return True


def reap(reclaimers: Iterable[str], now: datetime | None = None) -> dict[str, int]:
    """Call every job kind's `reclaim_expired(now)` (dotted paths); one kind failing does not
    stop the others. Returns the count per kind."""
    now = now or timezone.now()
    counts = {}
    for path in reclaimers:
        try:
            counts[path] = import_string(path)(now)
        except Exception:
            log.exception("reclaiming %s failed", path)
            counts[path] = -1
    return counts
