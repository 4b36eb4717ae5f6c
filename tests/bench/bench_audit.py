"""Issue 15 item 5: the audit log's admin list and API page on ten million entries.

Seeded by `manage.py seed_audit` (BENCH_AUDIT_ENTRIES, default 10,000,000) over the 20
workspaces of `seed_fleet` (BENCH_AUDIT_MAILBOXES mailboxes, default 0: no audit query joins a
mailbox, so the fleet's size does not enter these figures). Median of RUNS warm runs, as a
manager of 5 of the 20 workspaces and as a superuser. Baselines, measured in the same run on the
same rows:

- admin: Django's stock ModelAdmin for AuditEntry with the same columns and the stock field
  filters, scoped the obvious way (get_queryset filtered to the user's workspaces): full
  COUNT(*)s, DISTINCT scans for the filter choices, date_hierarchy, OFFSET pages;
- API: DRF's ListAPIView with PageNumberPagination (COUNT(*) and OFFSET), same serializer, same
  key scoping.

Floor: the page's one indexed read alone (SELECT … ORDER BY created_at DESC LIMIT 50, raw SQL).
"""

from __future__ import annotations

import os
import statistics
import time

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.urls import reverse
from rest_framework.generics import ListAPIView
from rest_framework.pagination import PageNumberPagination
from rest_framework.test import APIRequestFactory

from fleet import access
from fleet.api.audit import AuditEntrySerializer, AuditLogList
from fleet.api.auth import ApiKeyAuthentication, HasApiKey
from fleet.models import AuditEntry, Membership, Role, Workspace
from tests.bench.bench_admin import request_for
from tests.bench.runner import Row
from tests.conftest import issue_key

ENTRIES = int(os.environ.get("BENCH_AUDIT_ENTRIES", "10000000"))
MAILBOXES = int(os.environ.get("BENCH_AUDIT_MAILBOXES", "0"))
RUNS = 5
# The stock baselines take seconds to minutes a call at 10M (COUNT(*), DISTINCTs): timed once
# each, and at more than 2M entries only on the first two lists.
STOCK_RUNS = 1


class StockAuditAdmin(admin.ModelAdmin):
    list_display = [
        "created_at", "workspace", "actor_name", "api_key_prefix", "via", "action",
        "object_type", "object_repr", "client_address",
    ]
    list_filter = ["workspace", "actor", "action", "object_type", "via", "created_at"]
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        return super().get_queryset(request).restrict(request.user)

    # (Django's model permissions are not the point here: Fleet's roles decide.)
    def has_view_permission(self, request, obj=None):
        return True

    def has_module_permission(self, request):
        return True


class StockPage(PageNumberPagination):
    page_size = 50


class StockAuditList(ListAPIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasApiKey]
    serializer_class = AuditEntrySerializer
    pagination_class = StockPage

    def get_queryset(self):
        return access.key_scope(AuditEntry.objects.all(), self.request.auth).order_by(
            "-created_at", "-id"
        )


def measure(call, runs: int = RUNS, warm: bool = True) -> tuple[int, float]:
    """(queries, median ms) over `runs` runs of `call()` (a response is rendered), after a
    warm-up call."""
    if warm:
        call()
    times, queries = [], 0
    for _ in range(runs):
        executed = []
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
            assert response.status_code == 200, (response.status_code, response.content[:300])
    return queries, statistics.median(times)


def raw_page(workspace_ids: list[int] | None, extra: str = "", params: tuple = ()) -> float:
    """The floor: the page's indexed read alone, as SQL."""
    where = "WHERE workspace_id = ANY(%s)" if workspace_ids is not None else "WHERE true"
    sql = (
        f"SELECT * FROM fleet_auditentry {where} {extra} "
        "ORDER BY created_at DESC, id DESC LIMIT 50"
    )
    args = ((workspace_ids,) if workspace_ids is not None else ()) + params

    def call():
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            cursor.fetchall()

    return measure(call)[1]


def explain(sql_of_queryset) -> str:
    sql, params = sql_of_queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def seed() -> None:
    with open(os.devnull, "w") as quiet:
        if MAILBOXES:
            call_command("seed_fleet", mailboxes=MAILBOXES, workspaces=20, stdout=quiet)
        have = AuditEntry.objects.count()
        if have < ENTRIES:
            call_command("seed_audit", entries=ENTRIES - have, workspaces=20, stdout=quiet)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def run() -> list[Row]:
    with override_settings(API_RATE_LIMIT="1000000/minute"):  # measuring, not throttling
        return _run()


def _run() -> list[Row]:
    if connection.vendor != "postgresql":
        print("   bench_audit runs on PostgreSQL only (10M rows)")
        return []
    started = time.perf_counter()
    seed()
    print(f"   seeded {AuditEntry.objects.count()} entries in {time.perf_counter() - started:.0f} s")
    User = get_user_model()
    root = User.objects.create_user("bench-root", password="x", is_staff=True, is_superuser=True)
    manager = User.objects.create_user("bench-manager", password="x", is_staff=True)
    spaces = list(Workspace.objects.order_by("pk")[:20])
    for ws in spaces[:5]:
        Membership.objects.create(user=manager, workspace=ws, role=Role.MANAGER)
    mine = [ws.pk for ws in spaces[:5]]
    _, platform_key = issue_key(name="bench", user=manager)

    fleet_admin = admin.site._registry[AuditEntry]
    stock_admin = StockAuditAdmin(AuditEntry, admin.site)
    url = reverse("admin:fleet_auditentry_changelist")
    actor = AuditEntry.objects.filter(workspace_id__in=mine).exclude(actor=None).first().actor_id
    label = f"audit log at {ENTRIES / 1e6:g}M entries"
    rows: list[Row] = []

    lists = [
        ("admin list, manager of 5", manager, {}, mine, "", ()),
        ("admin list, superuser", root, {}, None, "", ()),
        (
            "admin list, one workspace",
            manager, {"workspace__id__exact": mine[0]}, [mine[0]], "", (),
        ),
        (
            "admin list, action disabled",
            manager, {"action": "mailbox.disabled"}, mine,
            "AND action = %s", ("mailbox.disabled",),
        ),
        (
            "admin list, rare action",
            manager, {"action": "apikey.revoked"}, mine, "AND action = %s", ("apikey.revoked",),
        ),
        (
            "admin list, search an object id",
            manager, {"q": "__OBJECT__"}, mine, "AND object_id = %s", ("__OBJECT__",),
        ),
        (
            "admin list, actor",
            manager, {"actor": str(actor)}, mine, "AND actor_id = %s", (actor,),
        ),
        ("admin list, last 24 h", manager, {"when": "24h"}, mine, "", ()),
    ]
    some_object = AuditEntry.objects.filter(workspace_id__in=mine).first().object_id
    lists = [
        (n, u, {k: (some_object if v == "__OBJECT__" else v) for k, v in p.items()}, w, e,
         tuple(some_object if x == "__OBJECT__" else x for x in ep))
        for n, u, p, w, e, ep in lists
    ]
    for n, (name, user, params, floor_ws, extra, extra_params) in enumerate(lists):
        fq, fms = measure(lambda u=user, p=params: fleet_admin.changelist_view(request_for(u, url, p)))
        stock_params = {
            k.replace("when", "created_at__gte"): v for k, v in params.items() if k != "when"
        }
        if "actor" in stock_params:
            stock_params = {"actor__id__exact": stock_params.pop("actor")}
        floor = raw_page(floor_ws, extra, extra_params)
        if ENTRIES > 2_000_000 and n >= 2:
            rows.append(Row(f"{label}: {name}", "wall time (floor)", round(fms), round(floor, 1),
                            round(floor, 1), unit="ms"))
            print(f"   {name}: {fq} queries")
            continue
        bq, bms = measure(
            lambda u=user, p=stock_params: stock_admin.changelist_view(request_for(u, url, p)),
            runs=STOCK_RUNS, warm=False,
        )
        rows.append(Row(f"{label}: {name}", "SQL queries (stock admin)", fq, bq))
        rows.append(
            Row(f"{label}: {name}", "wall time (stock admin)", round(fms), round(bms),
                round(floor, 1), unit="ms")
        )

    factory = APIRequestFactory()
    fleet_view, stock_view = AuditLogList.as_view(), StockAuditList.as_view()

    def fleet_api(params):
        return fleet_view(
            factory.get("/api/v1/audit-log", params, HTTP_X_API_KEY=platform_key)
        )

    def stock_api(params):
        return stock_view(factory.get("/stock/audit-log", params, HTTP_X_API_KEY=platform_key))

    # The 20th page: the cursor got by walking 19 pages (not timed).
    cursor = {}
    for _ in range(19):
        body = fleet_api(cursor)
        body.render()
        following = body.data["pagination"]["next"]
        cursor = {"cursor": following.split("cursor=")[1].split("&")[0]}
    from urllib.parse import unquote

    cursor = {"cursor": unquote(cursor["cursor"])}
    apis = [
        ("API first page, platform key (5 ws)", {}, {}, ""),
        ("API page 20 (cursor / page=20)", cursor, {"page": 20}, ""),
        ("API, action filter", {"action": "mailbox.disabled"}, None, "AND action = %s"),
    ]
    for name, fparams, sparams, extra in apis:
        fq, fms = measure(lambda p=fparams: fleet_api(p))
        floor = raw_page(mine, extra, ("mailbox.disabled",) if extra else ())
        if sparams is None:
            rows.append(Row(f"{label}: {name}", "wall time (floor)", round(fms), round(floor, 1),
                            round(floor, 1), unit="ms"))
            print(f"   {name}: {fq} queries")
            continue
        bq, bms = measure(lambda p=sparams: stock_api(p), runs=STOCK_RUNS, warm=False)
        rows.append(Row(f"{label}: {name}", "SQL queries (DRF page numbers)", fq, bq))
        rows.append(
            Row(f"{label}: {name}", "wall time (DRF page numbers)", round(fms), round(bms),
                round(floor, 1), unit="ms")
        )
    plan = explain(
        AuditEntry.objects.restrict(manager).order_by("-created_at", "-id")[:50]
    )
    print("   EXPLAIN of the manager's page:\n      " + plan.replace("\n", "\n      "))
    return rows
