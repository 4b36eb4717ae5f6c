"""Keeping refresh tokens alive: one redemption every TOKEN_KEEPALIVE_DAYS for mailboxes that
nothing else needed a token for (a health sweep or a program refreshes as it goes, and every
refresh moves the mailbox's `token_keepalive_due_at` on).

Microsoft's refresh tokens expire after 90 days unused and replace themselves on every use
(https://learn.microsoft.com/entra/identity-platform/refresh-tokens#token-lifetime), so a
mailbox tested once a month must still redeem its token now and then — but no more than that:
the old design refreshed every access token ahead of expiry, 18 to 32 token calls per mailbox per
day from one loop.

How the work is shared out (nothing walks the fleet in one loop):

- `dispatch` (periodic, every JOB_REAPER_SECONDS; safe on many hosts at once) claims due rows in
  chunks of TOKEN_KEEPALIVE_CHUNK with one conditional UPDATE each (`… WHERE pk IN (SELECT … ORDER
  BY token_keepalive_due_at LIMIT n)`, the lease free or expired), marking them with a queue
  token as their lease owner, and enqueues one `keep_tokens_alive` task per chunk.
- The task (`run`) takes the chunk's leases over under its own task id, renews them from a
  heartbeat thread, and redeems TOKEN_REFRESH_CONCURRENCY tokens at a time
  (`identity.refresh_mailbox_token`, fenced on the lease; each saved refresh releases its row).
- A worker that dies leaves its unfinished rows with an expiring lease: the reaper
  (`reclaim_expired`, listed in `fleet.tasks.RECLAIMERS`) marks the dead task FAILED with a note
  and dispatches the rows again. Rows already refreshed were released with their new token, so
  they are not redeemed again.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Q
from django.db.utils import DatabaseError
from django.utils import timezone

from fleet import errors, leases
from fleet.errors import FleetError
from fleet.microsoft import identity
from fleet.models import Mailbox

log = logging.getLogger(__name__)

# Chunks one dispatch claims at most (500 x 20 = 10,000 mailboxes a minute by default, far more
# than 100,000 mailboxes over 7 days need); the next run goes on where this one stopped.
DISPATCH_CHUNKS = 20
# A transient failure (Microsoft unavailable, throttled) is tried again this much later.
RETRY_AFTER = timedelta(hours=1)
# Rows of tasks not started yet: a queue backlog this long before the rows go out again.
QUEUED_LEASES = 10


def queued_lease() -> timedelta:
    return timedelta(seconds=QUEUED_LEASES * leases.lease_seconds())


def _free(now: datetime) -> Q:
    return Q(token_lease_owner="") | Q(token_lease_expires_at__lt=now)


def due(now: datetime):
    """Mailboxes whose refresh token the keep-alive redeems now."""
    return (
        Mailbox.objects.filter(
            token_keepalive_due_at__lte=now, auth_method=Mailbox.AuthMethod.OAUTH
        )
        .exclude(status__in=[Mailbox.Status.REAUTH_REQUIRED, Mailbox.Status.DISABLED])
        .filter(_free(now))
    )


def dispatch(now: datetime | None = None) -> int:
    """Periodic: hand the due refresh tokens to keep-alive tasks, a chunk per task. Returns how
    many mailboxes were handed out."""
    from fleet.tasks import enqueue_on_commit, keep_tokens_alive

    now = now or timezone.now()
    take_back_expired(now)  # whichever of the dispatcher and the reaper comes first
    _forget_unkept(now)
    chunk = settings.TOKEN_KEEPALIVE_CHUNK
    handed = 0
    for _ in range(DISPATCH_CHUNKS):
        owner = f"queued-{uuid.uuid4().hex}"
        picked = due(now).order_by("token_keepalive_due_at").values("pk")[:chunk]
        claimed = (
            Mailbox.objects.filter(pk__in=picked)
            .filter(_free(now))
            .update(token_lease_owner=owner, token_lease_expires_at=now + queued_lease())
        )
        if not claimed:
            break
        handed += claimed
        enqueue_on_commit(keep_tokens_alive, owner)
        if claimed < chunk:
            break
    return handed


def _forget_unkept(now: datetime) -> None:
    """Due rows the keep-alive will not redeem (disabled, waiting for a reconnect, no longer
    OAuth) leave the due index, a chunk per run, so that they are not read again every minute.
    A new consent schedules them again."""
    unkept = Mailbox.objects.filter(token_keepalive_due_at__lte=now).filter(
        Q(status__in=[Mailbox.Status.REAUTH_REQUIRED, Mailbox.Status.DISABLED])
        | ~Q(auth_method=Mailbox.AuthMethod.OAUTH)
    )
    Mailbox.objects.filter(
        pk__in=unkept.order_by().values("pk")[: settings.TOKEN_KEEPALIVE_CHUNK]
    ).update(token_keepalive_due_at=None)


class LeaseHeartbeat(leases.Heartbeat):
    """`leases.Heartbeat` for the token leases of every row a keep-alive task holds."""

    def __init__(self, owner: str):
        super().__init__(Mailbox, None, owner)

    def _run(self) -> None:
        interval = max(leases.lease_seconds() / 3, 0.2)
        try:
            while not self._stop.wait(interval):
                try:
                    held = Mailbox.objects.filter(token_lease_owner=self.owner).update(
                        token_lease_expires_at=leases.lease_until()
                    )
                except DatabaseError:
                    log.warning("token lease renewal of %s failed", self.owner)
                    close_old_connections()
                    continue
                if not held:
                    return  # every row is done (or was taken back)
        finally:
            connection.close()


def run(queued_owner: str, owner: str) -> dict[str, int]:
    """A keep-alive task: redeem the refresh tokens of the chunk `dispatch` queued under
    `queued_owner`, TOKEN_REFRESH_CONCURRENCY at a time, holding their leases as `owner`.
    Returns counts by outcome."""
    claimed = Mailbox.objects.filter(token_lease_owner=queued_owner).update(
        token_lease_owner=owner, token_lease_expires_at=leases.lease_until()
    )
    if not claimed:
        return {}  # another dispatch took these rows (this task waited longer than its lease)
    counts: Counter = Counter()
    with LeaseHeartbeat(owner):
        rows = list(
            Mailbox.objects.filter(token_lease_owner=owner)
            .select_related("credential")
            .order_by("token_keepalive_due_at")
        )
        work: queue.SimpleQueue = queue.SimpleQueue()
        for row in rows:
            work.put(row)
        lock = threading.Lock()

        def refresher() -> None:
            try:
                while True:
                    try:
                        mailbox = work.get_nowait()
                    except queue.Empty:
                        return
                    outcome = keep_alive(mailbox, owner)
                    with lock:
                        counts[outcome] += 1
            finally:
                connection.close()

        threads = [
            threading.Thread(target=refresher, name=f"keepalive-{n}", daemon=True)
            for n in range(min(settings.TOKEN_REFRESH_CONCURRENCY, len(rows)))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return dict(counts)


def keep_alive(mailbox: Mailbox, owner: str) -> str:
    """One mailbox of a keep-alive task: its refresh token redeemed, or why not."""
    if mailbox.status in (Mailbox.Status.REAUTH_REQUIRED, Mailbox.Status.DISABLED):
        identity.release_lease(mailbox.pk, owner, token_keepalive_due_at=None)
        return "skipped"
    try:
        identity.refresh_mailbox_token(mailbox, owner=owner)
    except Mailbox.DoesNotExist:
        return "gone"  # deleted during the run
    except FleetError as failure:
        if failure.error is errors.REAUTH_REQUIRED:
            return "reauth_required"
        # Transient (or the credential's problem): try again later, the refresh token still
        # has most of its 90 days.
        identity.release_lease(
            mailbox.pk, owner, token_keepalive_due_at=timezone.now() + RETRY_AFTER
        )
        return "failed"
    except Exception:
        log.exception("keep-alive of mailbox %s failed", mailbox.pk)
        identity.release_lease(
            mailbox.pk, owner, token_keepalive_due_at=timezone.now() + RETRY_AFTER
        )
        return "failed"
    return "refreshed"


def take_back_expired(now: datetime) -> int:
    """Token leases whose holder died (or stalled) are freed, and the dead keep-alive tasks
    marked FAILED with a note. Returns how many rows."""
    expired = Mailbox.objects.exclude(token_lease_owner="").filter(token_lease_expires_at__lt=now)
    owners = set(expired.order_by().values_list("token_lease_owner", flat=True).distinct()[:1000])
    if not owners:
        return 0
    freed = expired.filter(token_lease_owner__in=owners).update(
        token_lease_owner="", token_lease_expires_at=None
    )
    leases.fail_task_rows(
        owners,
        "Its worker stopped during a token keep-alive run (Fleet's reaper gave the "
        "mailboxes it had not refreshed yet to a new task).",
    )
    return freed


def reclaim_expired(now: datetime) -> int:
    """The reaper's part (fleet.tasks.RECLAIMERS): expired token leases taken back and the rows
    dispatched again."""
    freed = take_back_expired(now)
    dispatch(now)
    return freed
