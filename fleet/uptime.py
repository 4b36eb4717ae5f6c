"""Uptime: how often a mailbox's connection tests passed, and how often mailboxes dropped.

Every connection test is one MailboxEvent of kind CONNECTION_TEST (fleet/mailbox_checks.py;
the health sweep writes one per mailbox per interval). **Uptime is the share of the tests in the
last 30 days that passed** (no error code), not time measured between tests: a mailbox tested
daily that failed on 3 of 30 days has 90 %. A *disconnection* is an active mailbox falling into
`error` or `reauth_required` (MailboxEvent.LOST).

- One mailbox: read from its own events of the last 30 days (the `event_mailbox_time` index on
  (mailbox, -created_at): at most a few hundred rows even on an hourly cadence).
- A workspace, the dashboard: never from the events (1M mailboxes tested daily write 30M a
  month), but from `UptimeHour`, one row per workspace and hour that database triggers keep in
  step with the events (migration 0016): at most 720 rows per workspace for 30 days.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from fleet.models import Mailbox, MailboxEvent, UptimeHour

WINDOW_DAYS = 30
LAST_CHECKS = 10


def share(passed: int, checks: int) -> float | None:
    """Passed tests as a percentage (one decimal), None when there was no test."""
    return round(100 * passed / checks, 1) if checks else None


@dataclass
class MailboxUptime:
    checks: int
    passed: int
    uptime: float | None  # percent of the 30 days' tests that passed; None: never tested
    disconnections: int  # active → error / reauth_required in the 30 days
    last_checks: list[MailboxEvent] = field(default_factory=list)  # newest first


def for_mailbox(mailbox: Mailbox, now: datetime | None = None) -> MailboxUptime:
    """The mailbox's 30-day uptime and its last checks: two queries on its own events."""
    since = (now or timezone.now()) - timedelta(days=WINDOW_DAYS)
    recent = MailboxEvent.objects.filter(mailbox=mailbox, created_at__gte=since)
    counts = recent.aggregate(
        checks=Count("id", filter=Q(kind=MailboxEvent.Kind.CONNECTION_TEST)),
        passed=Count("id", filter=Q(kind=MailboxEvent.Kind.CONNECTION_TEST, error_code="")),
        disconnections=Count("id", filter=MailboxEvent.LOST),
    )
    last = list(
        MailboxEvent.objects.filter(mailbox=mailbox, kind=MailboxEvent.Kind.CONNECTION_TEST)
        .only("created_at", "to_status", "error_code", "message", "via")
        .order_by("-created_at", "-id")[:LAST_CHECKS]
    )
    return MailboxUptime(
        counts["checks"],
        counts["passed"],
        share(counts["passed"], counts["checks"]),
        counts["disconnections"],
        last,
    )


@dataclass
class WorkspaceUptime:
    workspace_id: int
    checks: int  # connection tests in 30 days
    passed: int
    disconnections_24h: int

    @property
    def uptime(self) -> float | None:
        return share(self.passed, self.checks)


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def window_start(now: datetime | None = None) -> datetime:
    """Where the workspace figures' 30 days begin: a whole hour (the rollup's unit)."""
    return hour_of(now or timezone.now()) - timedelta(days=WINDOW_DAYS)


def day_start(now: datetime | None = None) -> datetime:
    """Where "the last 24 h" begins: the current hour and the 23 before it."""
    return hour_of(now or timezone.now()) - timedelta(hours=23)


def per_workspace(rows: QuerySet, now: datetime | None = None) -> dict[int, WorkspaceUptime]:
    """30-day uptime and disconnections in the last 24 h of each workspace of `rows` (an
    UptimeHour queryset, already scoped): one GROUP BY query over the rollup. The 24 h are the
    current hour and the 23 before it (the rollup counts per hour)."""
    day_ago = day_start(now)
    found = (
        rows.filter(hour__gte=window_start(now))
        .values("workspace_id")
        .annotate(
            checks=Sum("checks"),
            passed=Sum("passed"),
            lost=Sum("disconnections", filter=Q(hour__gte=day_ago)),
        )
        .order_by()
    )
    return {
        row["workspace_id"]: WorkspaceUptime(
            row["workspace_id"], row["checks"] or 0, row["passed"] or 0, row["lost"] or 0
        )
        for row in found
    }


def for_workspace(workspace_id: int, now: datetime | None = None) -> WorkspaceUptime:
    found = per_workspace(UptimeHour.objects.filter(workspace_id=workspace_id), now)
    return found.get(workspace_id) or WorkspaceUptime(workspace_id, 0, 0, 0)


def workspace_annotations(now: datetime | None = None) -> dict:
    """The figures of `per_workspace` as annotations of a Workspace query (`uptime_checks`,
    `uptime_passed`, `uptime_lost`): subqueries of the rollup, so a page that lists workspaces
    gets them without a query of its own."""
    day_ago = day_start(now)

    def total(column: str, **since) -> Coalesce:
        rows = (
            UptimeHour.objects.filter(workspace=OuterRef("pk"), **since)
            .order_by()
            .values("workspace")
            .annotate(n=Sum(column))
            .values("n")[:1]
        )
        return Coalesce(Subquery(rows), 0)

    start = window_start(now)
    return {
        "uptime_checks": total("checks", hour__gte=start),
        "uptime_passed": total("passed", hour__gte=start),
        "uptime_lost": total("disconnections", hour__gte=max(start, day_ago)),
    }
