"""Issues 7 and 15: the admin on a large fleet (seeded by `manage.py seed_fleet`).

For the dashboard, the mailbox list (unfiltered, with each filter, searched by a part of an
address, by a whole address and by domain) and a mailbox's page, as a superuser who sees the
whole fleet (the stock admin has no workspace scoping to compare with), plus the dashboard and
list as a manager of 5 of the 20 workspaces: SQL queries and wall time. Fleet's figure is the
median of RUNS (20) warm requests, each baseline's of BASELINE_RUNS (5). Baselines, measured in
the same run on the same rows:

- lists and pages: Django's stock ModelAdmin for the same model and columns (no
  `list_select_related`, full result counts, the stock related-object filters, plain search);
- lists and pages without Fleet's indexes (dropped in a transaction that is rolled back);
- dashboard: the straightforward way to count the same figures, one COUNT per workspace and
  status, warmup state and error code; and the same figures counted live from the mailboxes and
  events instead of read from the tallies (fleet/tallies.py) — what the dashboard did before.

BENCH_FLEET_SIZE sets the fleet: one size (default 100000) or several, comma separated
(`BENCH_FLEET_SIZE=100000,1000000`): the fleet is grown from one to the next in the same run and
every figure is measured at each size. 1,000,000 takes a few minutes to seed on PostgreSQL.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import timedelta

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Q
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from fleet import dashboard, tallies
from fleet.models import Mailbox, MailboxEvent, Membership, Role, Workspace
from tests.bench.runner import Row

SIZES = [int(n) for n in os.environ.get("BENCH_FLEET_SIZE", "100000").split(",") if n.strip()]
RUNS = 20
BASELINE_RUNS = 5
WORKSPACES = 20


class StockMailboxAdmin(admin.ModelAdmin):
    """What `admin.site.register(Mailbox)` with the same columns, filters and search gives."""

    list_display = [
        "email",
        "workspace",
        "status",
        "error_code",
        "auth_method",
        "warmup_status",
        "last_checked_at",
    ]
    list_filter = [
        "status",
        "error_code",
        "auth_method",
        "provider",
        "warmup_status",
        "workspace",
        "tags",
    ]
    search_fields = ["email", "domain", "display_name"]


def measure(call, runs: int = RUNS, warm: bool = True) -> tuple[int, float]:
    """(queries, median milliseconds) of `call()` over `runs` runs (after a warm-up one)."""
    if warm:
        call()  # warm caches, connections and templates
    times, queries = [], 0
    for _ in range(runs):
        executed = []
        # Counted as they run: Django's query log keeps only the last 9,000.
        with connection.execute_wrapper(
            lambda execute, *args, seen=executed: seen.append(1) or execute(*args)
        ):
            started = time.perf_counter()
            response = call()
            if hasattr(response, "render"):
                response.render()
            times.append((time.perf_counter() - started) * 1000)
        queries = len(executed)
        if hasattr(response, "status_code"):
            assert response.status_code == 200, response.status_code
    return queries, statistics.median(times)


# The indexes Fleet adds for the admin's filters, searches and order (fleet/models.py,
# migrations 0002 and 0008).
FLEET_INDEXES = [
    "mailbox_ws_status",
    "mailbox_status",
    "mailbox_failing_code",
    "mailbox_ws_warmup",
    "mailbox_domain_upper",
    "mailbox_email_order",
    "mailbox_email_upper_trgm",
    "mailbox_name_upper_trgm",
    "event_ws_time",
    "event_mailbox_time",
]


def without_fleet_indexes(call) -> tuple[int, float]:
    """`measure(call)` with Fleet's indexes dropped, in a transaction that is rolled back."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            for name in FLEET_INDEXES:
                cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
        result = measure(call, BASELINE_RUNS)
        transaction.set_rollback(True)
    return result


def request_for(user, path: str, params: dict | None = None):
    request = RequestFactory().get(path, params or {})
    request.user = user
    from django.contrib.messages.storage.fallback import FallbackStorage
    from django.contrib.sessions.backends.db import SessionStore

    request.session = SessionStore()
    request._messages = FallbackStorage(request)
    return request


def naive_dashboard(user) -> int:
    """One COUNT per workspace and figure: how a first dashboard usually counts."""
    total = 0
    for ws in Workspace.objects.restrict(user):
        mailboxes = Mailbox.objects.filter(workspace=ws)
        for status in Mailbox.Status.values:
            total += mailboxes.filter(status=status).count()
        for warmup in Mailbox.Warmup.values:
            total += mailboxes.filter(warmup_status=warmup).count()
        for code in (
            mailboxes.exclude(error_code="").values_list("error_code", flat=True).distinct()
        ):
            total += mailboxes.filter(error_code=code).count()
    return total


def live_dashboard(user) -> None:
    """The tallied blocks' figures counted from the source rows: the dashboard's three
    aggregates before the tallies (same GROUP BYs, one query each)."""
    since = timezone.now() - timedelta(days=dashboard.TREND_DAYS)
    tallies.live_status_counts(Mailbox.objects.restrict(user))
    tallies.live_domain_counts(Mailbox.objects.restrict(user))
    tallies.live_event_days(MailboxEvent.objects.restrict(user).filter(Q(created_at__gte=since)))


def seed(size: int) -> None:
    with open(os.devnull, "w") as quiet:
        call_command("seed_fleet", mailboxes=size, workspaces=WORKSPACES, stdout=quiet)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def run() -> list[Row]:
    User = get_user_model()
    root = User.objects.create_user("bench-root", password="x", is_staff=True, is_superuser=True)
    manager = User.objects.create_user("bench-manager", password="x", is_staff=True)
    rows: list[Row] = []
    for size in SIZES:
        started = time.perf_counter()
        seed(size)
        print(f"   seeded {size:,} mailboxes in {time.perf_counter() - started:.0f} s", flush=True)
        if not Membership.objects.filter(user=manager).exists():
            for ws in Workspace.objects.filter(slug__startswith="client-").order_by("slug")[:5]:
                Membership.objects.create(user=manager, workspace=ws, role=Role.MANAGER)
        rows += measure_fleet(root, manager, size)
    return rows


class Rows(list):
    """The rows, each printed as it is measured (a run at 1M takes a while)."""

    def append(self, row: Row) -> None:
        super().append(row)
        print(f"   {row.scenario} | {row.metric} | {row.fleet} | {row.baseline}", flush=True)


def measure_fleet(root, manager, size: int) -> list[Row]:
    spaces = list(Workspace.objects.filter(slug__startswith="client-").order_by("slug")[:5])
    sample = Mailbox.objects.filter(workspace=spaces[0]).order_by("id")[size // 40]
    code = Mailbox.objects.exclude(error_code="").values_list("error_code", flat=True).first()

    fleet_admin = admin.site._registry[Mailbox]
    stock_admin = StockMailboxAdmin(Mailbox, admin.site)
    changelist = reverse("admin:fleet_mailbox_changelist")
    lists = [
        ("mailbox list", {}),
        ("list, status=error", {"status": "error"}),
        ("list, error code", {"error_code": code}),
        ("list, warmup paused", {"warmup_status": "paused"}),
        ("list, auth method", {"auth_method": "oauth"}),
        ("list, one workspace", {"workspace__id__exact": spaces[0].pk}),
        ("list, search part of an address", {"q": sample.email.split("@")[0]}),
        ("list, search an address", {"q": sample.email}),
        ("list, search domain", {"q": sample.domain}),
    ]
    rows = Rows()
    label = f"admin at {size // 1000:,}k"
    postgres = connection.vendor == "postgresql"
    for name, params in lists:
        fq, fms = measure(
            lambda p=params: fleet_admin.changelist_view(request_for(root, changelist, p))
        )
        bq, bms = measure(
            lambda p=params: stock_admin.changelist_view(request_for(root, changelist, p)),
            BASELINE_RUNS,
        )
        rows.append(Row(f"{label}: {name}", "SQL queries (stock admin)", fq, bq))
        rows.append(
            Row(f"{label}: {name}", "wall time (stock admin)", round(fms), round(bms), unit="ms")
        )
        if postgres:
            _, nms = without_fleet_indexes(
                lambda p=params: fleet_admin.changelist_view(request_for(root, changelist, p))
            )
            rows.append(
                Row(
                    f"{label}: {name}",
                    "wall time (without Fleet's indexes)",
                    round(fms),
                    round(nms),
                    unit="ms",
                )
            )

    page = reverse("admin:fleet_mailbox_change", args=[sample.pk])
    fq, fms = measure(lambda: fleet_admin.change_view(request_for(root, page), str(sample.pk)))
    bq, bms = measure(
        lambda: stock_admin.change_view(request_for(root, page), str(sample.pk)), BASELINE_RUNS
    )
    rows.append(Row(f"{label}: mailbox page", "SQL queries (stock admin)", fq, bq))
    rows.append(
        Row(f"{label}: mailbox page", "wall time (stock admin)", round(fms), round(bms), unit="ms")
    )
    if postgres:
        _, nms = without_fleet_indexes(
            lambda: fleet_admin.change_view(request_for(root, page), str(sample.pk))
        )
        rows.append(
            Row(
                f"{label}: mailbox page",
                "wall time (without Fleet's indexes)",
                round(fms),
                round(nms),
                unit="ms",
            )
        )

    index = reverse("admin:index")
    for who, user in (("all 20 workspaces", root), ("manager of 5", manager)):
        scenario = f"{label}: dashboard, {who}"
        fq, fms = measure(lambda u=user: admin.site.index(request_for(u, index)))
        # Hundreds of COUNTs per run: once, unwarmed, is enough to see its order of magnitude.
        bq, bms = measure(lambda u=user: naive_dashboard(u), 1, warm=False)
        _, lms = measure(lambda u=user: live_dashboard(u), BASELINE_RUNS)
        rows.append(Row(scenario, "SQL queries (naive counts)", fq, bq))
        rows.append(Row(scenario, "wall time (naive counts)", round(fms), round(bms), unit="ms"))
        rows.append(
            Row(scenario, "wall time (counted live, no tallies)", round(fms), round(lms), unit="ms")
        )
    # Whole views as the manager, for the record.
    for name, call in (
        ("mailbox list", lambda: fleet_admin.changelist_view(request_for(manager, changelist))),
        (
            "mailbox page",
            lambda: fleet_admin.change_view(request_for(manager, page), str(sample.pk)),
        ),
    ):
        queries, ms = measure(call)
        print(f"   as a manager of 5 workspaces: {name}: {queries} queries, {ms:.0f} ms")
    return rows
