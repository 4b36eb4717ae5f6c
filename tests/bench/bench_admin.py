"""Issue 7: the admin on a 100,000-mailbox fleet (seeded by `manage.py seed_fleet`).

For the dashboard, the mailbox list (unfiltered, with each filter, searched by address and by
domain) and a mailbox's page, as a superuser who sees the whole fleet (the stock admin has no
workspace scoping to compare with), plus the dashboard and list as a manager of 5 of the 20
workspaces: SQL queries and wall time (median of 3 warm runs). Baselines, measured in the same run on the same rows:

- lists and pages: Django's stock ModelAdmin for the same model and columns (no
  `list_select_related`, full result counts, the stock related-object filters);
- dashboard: the straightforward way to count the same figures, one COUNT per workspace and
  status, warmup state and error code (no index tuning in either).

BENCH_FLEET_SIZE sets the fleet (default 100000).
"""

from __future__ import annotations

import os
import statistics
import time

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, transaction
from django.test import RequestFactory
from django.urls import reverse

from fleet import dashboard
from fleet.models import Mailbox, Membership, Role, Workspace
from tests.bench.runner import Row

FLEET = int(os.environ.get("BENCH_FLEET_SIZE", "100000"))
RUNS = 3


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


def measure(call) -> tuple[int, float]:
    """(queries, median milliseconds) of `call()` over RUNS warm runs."""
    call()  # warm caches, connections and templates
    times, queries = [], 0
    for _ in range(RUNS):
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


# The indexes Fleet adds for the admin's filters and searches (fleet/models.py, migration 0002).
FLEET_INDEXES = [
    "mailbox_ws_status",
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
        result = measure(call)
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


def run() -> list[Row]:
    with open(os.devnull, "w") as quiet:
        call_command("seed_fleet", mailboxes=FLEET, workspaces=20, stdout=quiet)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    User = get_user_model()
    root = User.objects.create_user("bench-root", password="x", is_staff=True, is_superuser=True)
    manager = User.objects.create_user("bench-manager", password="x", is_staff=True)
    spaces = list(Workspace.objects.filter(slug__startswith="client-").order_by("slug")[:5])
    for ws in spaces:
        Membership.objects.create(user=manager, workspace=ws, role=Role.MANAGER)
    sample = Mailbox.objects.filter(workspace=spaces[0]).order_by("id")[FLEET // 40]
    code = Mailbox.objects.exclude(error_code="").values_list("error_code", flat=True).first()

    fleet_admin = admin.site._registry[Mailbox]
    stock_admin = StockMailboxAdmin(Mailbox, admin.site)
    changelist = reverse("admin:fleet_mailbox_changelist")
    lists = [
        ("mailbox list", {}),
        ("list, status=error", {"status": "error"}),
        ("list, error code", {"error_code": code}),
        ("list, warmup paused", {"warmup_status": "paused"}),
        ("list, one workspace", {"workspace__id__exact": spaces[0].pk}),
        ("list, search address", {"q": sample.email.split("@")[0]}),
        ("list, search domain", {"q": sample.domain}),
    ]
    rows: list[Row] = []
    label = f"admin at {FLEET // 1000}k"
    for name, params in lists:
        fq, fms = measure(
            lambda p=params: fleet_admin.changelist_view(request_for(root, changelist, p))
        )
        bq, bms = measure(
            lambda p=params: stock_admin.changelist_view(request_for(root, changelist, p))
        )
        rows.append(Row(f"{label}: {name}", "SQL queries (stock admin)", fq, bq))
        rows.append(
            Row(f"{label}: {name}", "wall time (stock admin)", round(fms), round(bms), unit="ms")
        )
        if connection.vendor == "postgresql":
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
    bq, bms = measure(lambda: stock_admin.change_view(request_for(root, page), str(sample.pk)))
    rows.append(Row(f"{label}: mailbox page", "SQL queries", fq, bq))
    rows.append(Row(f"{label}: mailbox page", "wall time", round(fms), round(bms), unit="ms"))

    for who, user in (("all 20 workspaces", root), ("manager of 5", manager)):
        fq, fms = measure(lambda u=user: dashboard.build(u))
        bq, bms = measure(lambda u=user: naive_dashboard(u))
        rows.append(Row(f"{label}: dashboard figures, {who}", "SQL queries", fq, bq))
        rows.append(
            Row(
                f"{label}: dashboard figures, {who}", "wall time", round(fms), round(bms), unit="ms"
            )
        )
    # Whole views as the manager (session and permission queries included), for the record.
    index = reverse("admin:index")
    for name, call in (
        ("dashboard page", lambda: admin.site.index(request_for(manager, index))),
        ("mailbox list", lambda: fleet_admin.changelist_view(request_for(manager, changelist))),
        (
            "mailbox page",
            lambda: fleet_admin.change_view(request_for(manager, page), str(sample.pk)),
        ),
    ):
        queries, ms = measure(call)
        print(f"   as a manager of 5 workspaces: {name}: {queries} queries, {ms:.0f} ms")
    return rows
