"""Health sweeps: every mailbox that is not disabled is tested once per its workspace's
`health_check_interval`, spread evenly over the interval, on any number of workers.

The schedule and the work in flight live on the mailbox rows, so nothing is lost when a worker
dies (fleet/leases.py explains why django-tasks-db's task rows cannot be trusted for that):

- `Mailbox.check_due_at` says when the next test is due (null: not scheduled yet). A click, an
  import or "Sweep now" (`queue_tests`, `sweep_now`) makes it due now; after each test it moves to
  the mailbox's next *slot* (at least half an interval away): the times `t` with
  `t ≡ phase (mod interval)`, where the phase comes from the mailbox's random uid. Slots are spread evenly over the interval (no thundering
  herd at midnight) and never drift however late a test runs.
- `dispatch` (periodic, `fleet.tasks.dispatch_health_checks`) gives unscheduled mailboxes their
  slot and enqueues one `test_due_mailboxes` task per HEALTH_CHECK_CHUNK due mailboxes, reading
  only the `check_due_at` index with a LIMIT: it never walks the fleet.
- A `test_due_mailboxes` task *claims* a chunk of due mailboxes (SELECT … FOR UPDATE SKIP LOCKED,
  then a conditional UPDATE writing its task id and a lease expiry, so many workers on many
  hosts never take one mailbox twice), renews the lease with a heartbeat while it tests them,
  and records each result fenced by its lease: one MailboxEvent CONNECTION_TEST per test.
- `reclaim_expired` (in `fleet.tasks.RECLAIMERS`) frees the mailboxes of a worker that died, marks
  its task row failed with a note and enqueues tasks for them: they are tested again within the
  lease plus one reaper period.

A transient failure (timeout, refused, temporary 4xx: `ErrorCode.permanent` is False) of an
`active` mailbox is retried after TRANSIENT_RETRY_DELAYS before it counts as a disconnect: the
event is recorded, the status left alone and the count kept on the mailbox; the third failure in
a row changes the status.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from fleet import audit, errors, leases, mailbox_checks
from fleet.inserts import insert_many
from fleet.models import Mailbox, Workspace, validate_health_check_interval
from fleet.tasks import enqueue_on_commit, test_due_mailboxes

log = logging.getLogger(__name__)

# Three tries over about an hour: the first failure, then 15 and 45 minutes later.
TRANSIENT_RETRY_DELAYS = (timedelta(minutes=15), timedelta(minutes=45))
TRANSIENT_TRIES = len(TRANSIENT_RETRY_DELAYS) + 1
# At most this many test tasks waiting in the queue (a backlog is topped up on the next pass).
MAX_QUEUED_TASKS = 20
# Unscheduled mailboxes given their slot per dispatcher pass.
SCHEDULE_BATCH = 5000
# How many IDs go into one `pk IN (…)` (SQLite allows 32,766 variables, PostgreSQL more).
ID_BATCH = 1000
# What a test result is when the mailbox's lease was taken back meanwhile (not recorded).
LEASE_LOST = "lease_lost"


def chunk_size() -> int:
    return settings.HEALTH_CHECK_CHUNK


# --- the schedule --------------------------------------------------------------------------------
def phase_seconds(uid: uuid.UUID, interval: timedelta) -> float:
    """Where in each interval a mailbox's slot falls: stable (its uid never changes) and, as uids
    are random, evenly spread over the fleet."""
    period = max(int(interval.total_seconds()), 1)
    return float(int(uid.hex[:15], 16) % period)


def next_slot(uid: uuid.UUID, interval: timedelta, now: datetime) -> datetime:
    """The first slot of this mailbox strictly after `now`."""
    period = max(int(interval.total_seconds()), 1)
    phase = phase_seconds(uid, interval)
    cycles = math.floor((now.timestamp() - phase) / period) + 1
    return datetime.fromtimestamp(cycles * period + phase, tz=UTC)


def slot_after_test(uid: uuid.UUID, interval: timedelta, now: datetime) -> datetime:
    """When a mailbox tested now is due next: its first slot at least half an interval away, so a
    test off its slot (an import, a click, "Sweep now") is not followed by another one minutes
    later at the slot; a test at its slot (or up to half an interval late) keeps the next one."""
    return next_slot(uid, interval, now + interval / 2)


def _ids(mailboxes: Iterable[Mailbox] | models.QuerySet) -> list[int]:
    if isinstance(mailboxes, models.QuerySet):
        return list(mailboxes.values_list("pk", flat=True))
    return [m.pk for m in mailboxes if m.status != Mailbox.Status.DISABLED]


def _enqueue_tasks(count: int) -> int:
    tasks = min(math.ceil(count / chunk_size()), MAX_QUEUED_TASKS) if count else 0
    for _ in range(tasks):
        enqueue_on_commit(test_due_mailboxes)
    return tasks


def make_due(mailboxes: list[Mailbox], actor) -> None:
    """For mailboxes about to be created (an import's): their tests due now, as `queue_tests`
    makes existing ones', set on the new rows themselves instead of an UPDATE after them; the
    tasks are queued by `queue_created_tests` once the rows are in."""
    now, requester = timezone.now(), getattr(audit.unwrapped(actor), "pk", None)
    for mailbox in mailboxes:
        mailbox.check_due_at, mailbox.check_requested_by_id = now, requester


def queue_created_tests(mailboxes: list[Mailbox]) -> int:
    """Queue the tasks for new mailboxes `make_due` made due (after commit); how many."""
    count = len(_ids(mailboxes))  # disabled ones are not tested
    _enqueue_tasks(count)
    return count


def queue_tests(
    mailboxes: Iterable[Mailbox] | models.QuerySet, *, actor, via: str, audited: bool = True
) -> int:
    """Make the connection tests of these mailboxes (disabled ones excepted) due now, and queue
    tasks for them after commit; returns how many were queued. A queryset is updated in one
    statement (a filtered "Sweep now" of many mailboxes). A person's request is in the audit
    log (`mailbox.test_queued`) unless the operation that queues them has its own entries
    (`audited=False`: an import's tests are part of the import)."""
    now = timezone.now()
    changes = {"check_due_at": now, "check_requested_by": actor if actor else None}
    audited = audited and actor is not None
    if isinstance(mailboxes, models.QuerySet):
        if audited:
            # What a person asked for is in the audit log, one entry per mailbox (one INSERT).
            asked = mailboxes.exclude(status=Mailbox.Status.DISABLED).order_by()
            audit.record_many(
                "mailbox.test_queued",
                asked.only("pk", "uid", "email", "workspace_id", "status"),
                actor=actor,
                via=via,
            )
        queued = mailboxes.exclude(status=Mailbox.Status.DISABLED).order_by().update(**changes)
    else:
        mailboxes = list(mailboxes)
        if audited:
            # A person's or a program's request; the system's periodic tests of the whole
            # fleet are recorded in each mailbox's history, not here (a million entries a day).
            testable = [m for m in mailboxes if m.status != Mailbox.Status.DISABLED]
            audit.record_many("mailbox.test_queued", testable, actor=actor, via=via)
        ids = _ids(mailboxes)
        queued = 0
        for start in range(0, len(ids), ID_BATCH):
            queued += (
                Mailbox.objects.filter(pk__in=ids[start : start + ID_BATCH])
                .exclude(status=Mailbox.Status.DISABLED)
                .update(**changes)
            )
    _enqueue_tasks(queued)
    return queued


def sweep_now(mailboxes: models.QuerySet, *, actor, via: str) -> int:
    """"Sweep now" for a workspace's mailboxes or a filtered selection (the caller scopes it to
    what the user may operate): every one not disabled is tested as soon as a worker is free,
    then goes back to its slot. Returns how many were queued."""
    return queue_tests(mailboxes, actor=actor, via=via)


@transaction.atomic
def set_interval(workspace: Workspace, interval: timedelta) -> bool:
    """Change a workspace's cadence (validated: at least 1 hour). Its mailboxes' future slots
    are dropped so the dispatcher gives them slots on the new cadence; tests already due stay
    due. False when nothing changed."""
    validate_health_check_interval(interval)
    if workspace.health_check_interval == interval:
        return False
    workspace.health_check_interval = interval
    workspace.save(update_fields=["health_check_interval"])
    reschedule(workspace)
    return True


def reschedule(workspace: Workspace) -> int:
    """Drop the future slots of a workspace's mailboxes (its cadence changed): the dispatcher
    gives them new ones. Tests due now and tests running are left alone."""
    return Mailbox.objects.filter(
        workspace=workspace, check_lease_owner="", check_due_at__gt=timezone.now()
    ).update(check_due_at=None)


def schedule_unscheduled(now: datetime | None = None, limit: int = SCHEDULE_BATCH) -> int:
    """Give mailboxes without a next test (new ones, those of before sweeps) their next slot, a
    batch at a time (the partial index `mailbox_check_unscheduled` finds them)."""
    now = now or timezone.now()
    rows = list(
        Mailbox.objects.filter(check_due_at__isnull=True)
        .exclude(status=Mailbox.Status.DISABLED)
        .order_by("pk")
        .values_list("pk", "uid", "workspace__health_check_interval")[:limit]
    )
    by_slot: dict[datetime, list[int]] = {}
    for pk, uid, interval in rows:
        by_slot.setdefault(next_slot(uid, interval, now), []).append(pk)
    updates = [
        Mailbox(pk=pk, check_due_at=slot) for slot, pks in by_slot.items() for pk in pks
    ]
    Mailbox.objects.bulk_update(updates, ["check_due_at"], batch_size=ID_BATCH)
    return len(updates)


# A due test not taken this long after its slot is overdue (the dispatcher runs every minute).
OVERDUE_AFTER = timedelta(minutes=10)


def overdue_q(now: datetime) -> models.Q:
    """Mailboxes whose test is past due (the dashboard, the list's filter)."""
    return models.Q(check_due_at__lt=now - OVERDUE_AFTER) & ~models.Q(
        status=Mailbox.Status.DISABLED
    )


def due_soon_q(now: datetime) -> models.Q:
    return models.Q(
        check_due_at__gte=now - OVERDUE_AFTER, check_due_at__lt=now + timedelta(hours=1)
    ) & ~models.Q(status=Mailbox.Status.DISABLED)


def never_tested_q() -> models.Q:
    return models.Q(last_checked_at__isnull=True) & ~models.Q(status=Mailbox.Status.DISABLED)


def due(now: datetime | None = None) -> models.QuerySet:
    """Mailboxes whose test is due and that nobody is testing."""
    return Mailbox.objects.filter(check_due_at__lte=now or timezone.now(), check_lease_owner="")


def waiting_tasks() -> int:
    return leases.task_rows(test_due_mailboxes).filter(status="READY").count()


def continue_if_due() -> bool:
    """After a task's chunk: when more is due and no task waits for it (a large "Sweep now"),
    queue the next one at once rather than at the next dispatcher pass."""
    if due().exists() and not waiting_tasks():
        test_due_mailboxes.enqueue()
        return True
    return False


def dispatch(now: datetime | None = None) -> dict[str, int]:
    """Periodic: schedule new mailboxes, then queue enough tasks for what is due (at most
    MAX_QUEUED_TASKS waiting). Reads at most a LIMIT of the `check_due_at` index."""
    now = now or timezone.now()
    scheduled = schedule_unscheduled(now)
    limit = chunk_size() * MAX_QUEUED_TASKS
    due_now = due(now).order_by()[:limit].count()
    wanted = math.ceil(due_now / chunk_size())
    queued = max(wanted - waiting_tasks(), 0)
    for _ in range(queued):
        test_due_mailboxes.enqueue()
    return {"scheduled": scheduled, "due": due_now, "tasks": queued}


# --- the work ---------------------------------------------------------------------------------
def claim_due(owner: str, limit: int | None = None, now: datetime | None = None) -> list[int]:
    """Take the lease on up to `limit` due mailboxes, oldest due first; returns their ids.
    Rows other workers are claiming are skipped (SKIP LOCKED), and the UPDATE only takes rows
    that are still free, so two workers never hold one mailbox."""
    now = now or timezone.now()
    with transaction.atomic():
        ids = list(
            due(now)
            .order_by("check_due_at")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[: limit or chunk_size()]
        )
        if not ids:
            return []
        Mailbox.objects.filter(pk__in=ids, check_lease_owner="").update(
            check_lease_owner=owner, check_lease_expires_at=leases.lease_until(now)
        )
    return list(
        Mailbox.objects.filter(pk__in=ids, check_lease_owner=owner).values_list("pk", flat=True)
    )


class ChecksHeartbeat(leases.Heartbeat):
    """Renews the lease on the mailboxes of this chunk the task still holds, in one UPDATE (by
    primary key: the owner column is not indexed)."""

    def __init__(self, owner: str, ids: list[int]):
        super().__init__(Mailbox, None, owner)
        self.ids = ids

    def renew(self) -> int:
        return Mailbox.objects.filter(pk__in=self.ids, check_lease_owner=self.owner).update(
            check_lease_expires_at=leases.lease_until()
        )


def _release(pk: int, owner: str, **changes) -> bool:
    return bool(
        Mailbox.objects.filter(pk=pk, check_lease_owner=owner).update(
            check_lease_owner="", check_lease_expires_at=None, **changes
        )
    )


Result = tuple[Mailbox, "errors.ErrorCode | None", str]
# Results written per transaction: one SELECT … FOR UPDATE, one INSERT of events and one UPDATE
# for the lot instead of four statements per mailbox (a sweep writes ~100 results a second).
RECORD_BATCH = 50
# …or whatever has arrived after this long, so an import's progress bar keeps moving.
RECORD_SECONDS = 0.5


def record(mailbox: Mailbox, error: errors.ErrorCode | None, detail: str, owner: str) -> str:
    """Write one test's outcome (see `record_many`). Returns the status (DELETED, LEASE_LOST)."""
    return record_many([(mailbox, error, detail)], owner)[mailbox.pk]


@transaction.atomic
def record_many(results: list[Result], owner: str) -> dict[int, str]:
    """Write tests' outcomes while this task holds the mailboxes' leases: an event per test,
    the status where it changes (a transient failure of an active mailbox only on its third try
    in a row), the next slot, and the lease given back. Mailboxes deleted or taken back
    meanwhile are left out. Returns each mailbox's status (or DELETED, LEASE_LOST)."""
    pks = [mailbox.pk for mailbox, _, _ in results]
    held = {
        m.pk: m
        for m in Mailbox.objects.select_for_update(of=("self",))
        .select_related("workspace", "check_requested_by")
        .filter(pk__in=pks, check_lease_owner=owner)
        .order_by("pk")  # locks taken in one order: no deadlock with another batch
    }
    missing = set(pks) - set(held)
    existing = set(Mailbox.objects.filter(pk__in=missing).values_list("pk", flat=True))
    answer = {
        pk: (LEASE_LOST if pk in existing else mailbox_checks.DELETED) for pk in missing
    }
    now = timezone.now()
    events, changes, updates = [], {}, []
    for mailbox, error, detail in results:
        current = held.get(mailbox.pk)
        if current is None:
            continue
        outcome = mailbox_checks.outcome_for(current, error)
        failures = 0
        current.check_due_at = slot_after_test(
            current.uid, current.workspace.health_check_interval, now
        )
        message = detail
        if (
            error is not None
            and not error.permanent
            and current.status == Mailbox.Status.ACTIVE
            and current.check_transient_failures + 1 < TRANSIENT_TRIES
        ):
            # A blip: keep the status, try again soon; the third failure in a row counts.
            failures = current.check_transient_failures + 1
            delay = TRANSIENT_RETRY_DELAYS[failures - 1]
            current.check_due_at = now + delay
            outcome = current.status
            message = (
                f"{detail} (transient, try {failures} of {TRANSIENT_TRIES}; "
                f"trying again in {int(delay.total_seconds() // 60)} minutes)"
            )
        events.append(
            mailbox_checks.connection_test_event(
                current, outcome, error, message, current.check_requested_by_id
            )
        )
        # A mailbox disabled while it was being tested stays disabled.
        if current.status != Mailbox.Status.DISABLED and (
            current.status != outcome
            or (not failures and current.error_code != (error.code if error else ""))
        ):
            key = (outcome, error, detail if error else "", current.check_requested_by_id)
            changes.setdefault(key, []).append(current)
        current.last_checked_at = current.updated_at = now
        current.check_requested_by_id = None
        current.check_transient_failures = failures
        current.check_lease_owner, current.check_lease_expires_at = "", None
        updates.append(current)
    insert_many(events)
    for (outcome, error, message, actor_id), group in changes.items():
        # The one place a status is written, a group with the same outcome at a time.
        Mailbox.set_status_many(
            group, outcome, error=error, message=message, actor=group[0].check_requested_by
            if actor_id else None, via="task",
        )  # fmt: skip
    Mailbox.objects.bulk_update(
        updates,
        [
            "last_checked_at",
            "updated_at",
            "check_due_at",
            "check_requested_by",
            "check_transient_failures",
            "check_lease_owner",
            "check_lease_expires_at",
        ],
    )
    answer.update({m.pk: m.status for m in updates})
    return answer


def run_due(owner: str, limit: int | None = None, concurrency: int | None = None) -> Counter:
    """One task's work: claim a chunk of due mailboxes, test them at once (capped per mail host
    and per tenant), record the results in small batches as they arrive. Mailboxes deleted,
    disabled or unreadable meanwhile do not stop the others. Returns the number per outcome."""
    ids = claim_due(owner, limit)
    outcome: Counter = Counter()
    if not ids:
        return outcome
    with ChecksHeartbeat(owner, ids):
        mailboxes = list(
            Mailbox.objects.filter(pk__in=ids, check_lease_owner=owner).select_related(
                "credential", "workspace"
            )
        )
        testable = []
        for mailbox in mailboxes:
            if mailbox.status == Mailbox.Status.DISABLED:
                # Nothing to test until it is enabled again (which queues a test).
                _release(mailbox.pk, owner, check_due_at=None, check_requested_by=None)
                outcome["disabled"] += 1
            else:
                testable.append(mailbox)
        caps = mailbox_checks.Caps(settings.HEALTH_CHECK_PER_HOST, settings.HEALTH_CHECK_PER_TENANT)
        results = mailbox_checks.test_each(
            testable, concurrency or settings.HEALTH_CHECK_CONCURRENCY, caps
        )
        waiting: list[Result] = []
        since = 0.0
        for mailbox, result in results:
            if result == mailbox_checks.DELETED:
                outcome[mailbox_checks.DELETED] += 1
            elif result == mailbox_checks.ALREADY_RECORDED:
                # A revoked grant, recorded by identity: only the schedule moves on.
                interval = mailbox.workspace.health_check_interval
                _release(
                    mailbox.pk,
                    owner,
                    check_due_at=slot_after_test(mailbox.uid, interval, timezone.now()),
                    check_requested_by=None,
                )
                outcome[Mailbox.Status.REAUTH_REQUIRED] += 1
            else:
                waiting.append((mailbox, *result))
                since = since or time.monotonic()
            if waiting and (
                len(waiting) >= RECORD_BATCH or time.monotonic() - since >= RECORD_SECONDS
            ):
                outcome.update(record_many(waiting, owner).values())
                waiting, since = [], 0.0
        if waiting:
            outcome.update(record_many(waiting, owner).values())
    return outcome


def reclaim_expired(now: datetime) -> int:
    """Reaper: free the mailboxes whose tester's lease ran out (its worker died), mark its task
    rows failed with a note and queue tasks to test them again. Returns how many mailboxes."""
    expired = Mailbox.objects.filter(check_lease_expires_at__lt=now)
    owners = set(expired.order_by().values_list("check_lease_owner", flat=True).distinct()[:100])
    if not owners:
        return 0
    freed = expired.filter(check_lease_owner__in=owners).update(
        check_lease_owner="", check_lease_expires_at=None
    )
    if freed:
        leases.fail_task_rows(
            owners, "Its worker stopped while testing mailboxes (Fleet's reaper queued them again)."
        )
        _enqueue_tasks(freed)
    return freed
