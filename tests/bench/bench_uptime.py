"""Issue 12 item 6: the dashboard's uptime per workspace without reading the events.

A fleet of BENCH_UPTIME_MAILBOXES mailboxes (default 10,000) over 20 workspaces, each tested
once a day for 30 days (10 % of the tests failing), written as the connection tests write them
(one event per test, the database triggers of migration 0016 counting them in `UptimeHour`).

- Dashboard figure (30-day uptime and disconnections in 24 h of every workspace): Fleet's one
  query on the hourly rollup beside the same figures counted from the events (the
  `event_ws_time` index on (workspace, created_at) helps it as much as it can); median of 5 warm
  runs, and the rows each reads. Floor of rows: a running total per workspace (20).
- What the triggers cost: writing 20,000 test events in bulk, and 500 one INSERT at a time,
  with the triggers beside the same without them (dropped for the measure, then created again),
  µs per event, best of two alternated runs (the baseline writes no rollup: a ratio below 1 is
  the triggers' price).
"""

from __future__ import annotations

import importlib
import os
import statistics
import time
from datetime import timedelta

from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from fleet import uptime
from fleet.models import Mailbox, MailboxEvent, UptimeHour, Workspace
from tests.bench.runner import Row

MAILBOXES = int(os.environ.get("BENCH_UPTIME_MAILBOXES", "10000"))
WORKSPACES = 20
DAYS = 30
RUNS = 5
WRITE_SAMPLE = 20000
migration = importlib.import_module("fleet.migrations.0016_reconnect_uptime")


def seed() -> list[Mailbox]:
    workspaces = Workspace.objects.bulk_create(
        Workspace(name=f"Uptime {i}", slug=f"uptime-{i}") for i in range(WORKSPACES)
    )
    boxes = Mailbox.objects.bulk_create(
        (
            Mailbox(
                workspace=workspaces[i % WORKSPACES],
                email=f"u{i}@uptime{i % WORKSPACES}.example",
                auth_method="app_password",
                status="active",
            )
            for i in range(MAILBOXES)
        ),
        batch_size=2000,
    )
    now = timezone.now()
    for day in range(DAYS):
        when = now - timedelta(days=day, minutes=7)
        MailboxEvent.objects.bulk_create(
            (
                MailboxEvent(
                    workspace_id=m.workspace_id,
                    mailbox=m,
                    email=m.email,
                    kind=MailboxEvent.Kind.CONNECTION_TEST,
                    to_status="error" if (i + day) % 10 == 0 else "active",
                    error_code="INVALID_CREDENTIALS" if (i + day) % 10 == 0 else "",
                    created_at=when - timedelta(seconds=i % 3600),
                )
                for i, m in enumerate(boxes)
            ),
            batch_size=5000,
        )
    return boxes


def from_events() -> dict:
    """The baseline: the same figures counted from the events."""
    since = uptime.window_start()
    day_ago = uptime.day_start()
    return {
        row["workspace_id"]: row
        for row in MailboxEvent.objects.filter(created_at__gte=since)
        .values("workspace_id")
        .annotate(
            checks=Count("id", filter=Q(kind=MailboxEvent.Kind.CONNECTION_TEST)),
            passed=Count("id", filter=Q(kind=MailboxEvent.Kind.CONNECTION_TEST, error_code="")),
            lost=Count("id", filter=MailboxEvent.LOST & Q(created_at__gte=day_ago)),
        )
        .order_by()
    }


def timed(function) -> float:
    function()  # warm
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        function()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000


def write_events(boxes: list[Mailbox]) -> float:
    """µs per connection-test event written in bulk."""
    sample = [boxes[i % len(boxes)] for i in range(WRITE_SAMPLE)]
    started = time.perf_counter()
    MailboxEvent.objects.bulk_create(
        (
            MailboxEvent(
                workspace_id=m.workspace_id,
                mailbox=m,
                email=m.email,
                kind=MailboxEvent.Kind.CONNECTION_TEST,
                to_status="active",
            )
            for m in sample
        ),
        batch_size=5000,
    )
    return (time.perf_counter() - started) * 1e6 / WRITE_SAMPLE


def write_single_events(boxes: list[Mailbox], n: int = 500) -> float:
    """µs per event written one INSERT at a time (as `mailbox_checks.record` writes them)."""
    started = time.perf_counter()
    for m in boxes[:n]:
        MailboxEvent.objects.create(
            workspace_id=m.workspace_id,
            mailbox=m,
            email=m.email,
            kind=MailboxEvent.Kind.CONNECTION_TEST,
            to_status="active",
        )
    return (time.perf_counter() - started) * 1e6 / n


def set_triggers(on: bool) -> None:
    class Editor:
        pass

    editor = Editor()
    editor.connection = connection
    (migration.create_trigger_only if on else migration.drop_trigger)(None, editor)


def run() -> list[Row]:
    boxes = seed()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE fleet_mailboxevent; ANALYZE fleet_uptimehour")
    fleet_figures = uptime.per_workspace(UptimeHour.objects.all())
    baseline_figures = from_events()
    for workspace_id, row in baseline_figures.items():  # the same answer, or the bench is void
        assert fleet_figures[workspace_id].checks == row["checks"]
        assert fleet_figures[workspace_id].passed == row["passed"]
    fleet_ms = timed(lambda: uptime.per_workspace(UptimeHour.objects.all()))
    baseline_ms = timed(from_events)
    since = uptime.window_start()
    rollup_rows = UptimeHour.objects.filter(hour__gte=since).count()
    event_rows = MailboxEvent.objects.filter(created_at__gte=since).count()

    # Alternated, best of 2 each: the machine's load varies more than the triggers cost.
    with_triggers, without, single_with, single_without = [], [], [], []
    for _ in range(2):
        with_triggers.append(write_events(boxes))
        single_with.append(write_single_events(boxes))
        set_triggers(False)
        try:
            without.append(write_events(boxes))
            single_without.append(write_single_events(boxes))
        finally:
            set_triggers(True)
    with_triggers, without = min(with_triggers), min(without)
    scenario = f"dashboard uptime, {MAILBOXES:,} mailboxes, {DAYS} daily tests each"
    return [
        Row(scenario, "uptime of every workspace (median)", fleet_ms, baseline_ms, None, "ms"),
        # Floor: one running total per workspace.
        Row(scenario, "rows read", rollup_rows, event_rows, WORKSPACES, "rows"),
        # Here Fleet pays: the baseline writes no rollup (its ratio below 1 is the price).
        Row("writing connection-test events", "bulk, per event", with_triggers, without, None, "µs"),
        Row(
            "writing connection-test events",
            "one INSERT each",
            min(single_with),
            min(single_without),
            None,
            "µs",
        ),
    ]
