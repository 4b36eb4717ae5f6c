"""The managers' dashboard: what is broken and why, across the user's workspaces or one of them.

Every figure comes with the admin list it was counted from, so a click shows exactly those rows.
Each block is one aggregate query; the number of queries does not grow with the fleet. The
mailbox, deliverability and trend blocks read the rolled-up tallies (fleet/tallies.py: a few rows
per workspace, kept by database triggers), so their cost does not grow with it either.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from django.db.models import Count, Max, Min, OuterRef, Q, Subquery, Sum, Window
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from fleet import errors, health, uptime
from fleet.models import (
    BulkAddRun,
    ConsentRequest,
    Credential,
    DomainTally,
    EventDayTally,
    ImportBatch,
    Mailbox,
    MailboxEvent,
    MailboxTally,
    Membership,
    Role,
    Workspace,
)

# Microsoft's refusals of app passwords: Basic auth turned off, SMTP AUTH disabled.
BASIC_AUTH_CODES = {errors.BASIC_AUTH_DISABLED.code, errors.SMTP_AUTH_DISABLED.code}
TREND_DAYS = 30
CHART_AXIS = 100  # y of the axis in the SVG's 620 by 212 view box
CHART_BAR_MAX = 90  # the tallest bar, in view-box units
CHART_SLOT = 20  # view-box units per day
DOMAINS_SHOWN = 12  # the deliverability block: domains with problems first
CHECKS = ("spf", "dkim", "dmarc", "mx")


@dataclass
class Figure:
    key: str
    label: str
    count: int
    url: str
    hint: str = ""


@dataclass
class TrendDay:
    day: date
    made: int
    lost: int
    made_url: str
    lost_url: str
    # Geometry of the server-drawn SVG chart: made bars grow up from the axis, lost bars down.
    x: int = 0
    made_height: int = 0
    lost_height: int = 0

    @property
    def made_top(self) -> int:
        return CHART_AXIS - self.made_height


@dataclass
class DomainHealth:
    """SPF, DKIM, DMARC and MX of one domain of the user's mailboxes, each `ok`, `missing` (some
    mailbox of the domain was found without it) or `unknown` (never checked)."""

    domain: str
    mailboxes: int
    url: str
    spf: str = "unknown"
    dkim: str = "unknown"
    dmarc: str = "unknown"
    dmarc_policy: str = ""
    mx: str = "unknown"
    problems: int = 0  # mailboxes of the domain with a check found missing

    @property
    def checks(self) -> list[tuple[str, str]]:
        return [("SPF", self.spf), ("DKIM", self.dkim), ("DMARC", self.dmarc), ("MX", self.mx)]


@dataclass
class UptimeRow:
    """One workspace's 30-day uptime (share of connection tests passed) and its disconnections
    in the last 24 h, each with the list of the events it counts."""

    name: str
    checks: int
    passed: int
    disconnections: int
    checks_url: str
    disconnections_url: str

    @property
    def uptime(self) -> float | None:
        return uptime.share(self.passed, self.checks)


@dataclass
class Dashboard:
    workspaces: list[Workspace]
    selected: Workspace | None
    total: int = 0
    by_status: list[Figure] = field(default_factory=list)
    by_warmup: list[Figure] = field(default_factory=list)
    error_codes: list[Figure] = field(default_factory=list)
    trend: list[TrendDay] = field(default_factory=list)
    consents_waiting: Figure | None = None
    consents_expiring: Figure | None = None
    credentials_expiring: list[Credential] = field(default_factory=list)
    credentials_expiring_url: str = ""
    reauth: Figure | None = None
    recent_bulk_adds: list[BulkAddRun] = field(default_factory=list)
    recent_imports: list[ImportBatch] = field(default_factory=list)
    # App-password mailboxes still in use: what Basic auth's end (MC786329) stops.
    basic_auth_affected: Figure | None = None
    basic_auth_refused: Figure | None = None  # already refused: 550 5.7.30 / 535 5.7.139
    # Deliverability per domain (Outlook.com rejects bulk senders without SPF, DKIM and DMARC:
    # 550 5.7.515 since 5 May 2025); consumer addresses are Microsoft's domains, left out.
    domains: list[DomainHealth] = field(default_factory=list)
    domain_count: int = 0
    # The user operates (tests, reconnects) here: the calls to action are buttons for them.
    can_operate: bool = False
    # Connection-test uptime per workspace, worst first (fleet/uptime.py; one query).
    uptime: list[UptimeRow] = field(default_factory=list)
    uptime_total: UptimeRow | None = None
    # Health sweeps (fleet/health.py): by when every mailbox not disabled had been tested (the
    # last complete sweep), how many were never tested, overdue, due in the next hour.
    swept_since: datetime | None = None
    never_tested: Figure | None = None
    overdue: Figure | None = None
    due_next_hour: Figure | None = None

    @property
    def trend_max(self) -> int:
        return max([1, *(max(d.made, d.lost) for d in self.trend)])

    @property
    def trend_made_total(self) -> int:
        return sum(d.made for d in self.trend)

    @property
    def trend_lost_total(self) -> int:
        return sum(d.lost for d in self.trend)

    @property
    def trend_ticks(self) -> list[TrendDay]:
        return [d for i, d in enumerate(self.trend) if (len(self.trend) - 1 - i) % 7 == 0]


def changelist(model, **params) -> str:
    url = reverse(f"admin:fleet_{model._meta.model_name}_changelist")
    params = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{url}?{urlencode(params)}" if params else url


def build(user, workspace_id: int | None = None) -> Dashboard:
    # With the user's role in each (one query): the calls to action are buttons for operators.
    # With the user's role in each and the consent requests waiting in each, in one query: the
    # dashboard's query budget (12 per page, tests/test_admin_scale.py) is shared by its blocks.
    workspaces = list(
        Workspace.objects.restrict(user)
        .annotate(
            user_role=Subquery(
                Membership.objects.filter(workspace=OuterRef("pk"), user_id=user.pk).values(
                    "role"
                )[:1]
            ),
            consents_waiting=_count_in_workspace(ConsentRequest, ConsentRequest.open_q()),
            consents_expiring=_count_in_workspace(ConsentRequest, ConsentRequest.expiring_q()),
            **uptime.workspace_annotations(),
        )
        .order_by("name")
    )
    selected = next((w for w in workspaces if w.pk == workspace_id), None)
    ws_param = {"workspace__id__exact": selected.pk} if selected else {}

    def scoped(model):
        qs = model.objects.restrict(user)
        if selected:
            qs = qs.filter(**{model.workspace_lookup: selected.pk})
        return qs

    board = Dashboard(workspaces=workspaces, selected=selected)
    operating = Role.at_least(Role.OPERATOR)
    board.can_operate = user.is_superuser or any(
        w.user_role in operating for w in ([selected] if selected else workspaces)
    )
    # Counts per (status, warmup state, error code, auth method): a few dozen tally rows per
    # workspace whatever the fleet's size, summed here.
    status_counts: Counter = Counter()
    warmup_counts: Counter = Counter()
    code_counts: Counter = Counter()
    affected = refused = 0
    for status, warmup, code, auth, n in (
        scoped(MailboxTally)
        .filter(mailboxes__gt=0)
        .values_list("status", "warmup_status", "error_code", "auth_method")
        .annotate(n=Sum("mailboxes"))
        .order_by()
    ):
        status_counts[status] += n
        warmup_counts[warmup] += n
        if code:
            code_counts[code] += n
        if auth == Mailbox.AuthMethod.APP_PASSWORD and status != Mailbox.Status.DISABLED:
            affected += n
            refused += n if code in BASIC_AUTH_CODES else 0
    board.total = sum(status_counts.values())
    sweep = _sweep_figures(scoped(Mailbox), timezone.now())
    board.swept_since = sweep["least_recent"] if not sweep["never"] else None
    board.never_tested = Figure(
        "never", "never tested", sweep["never"], changelist(Mailbox, check="never", **ws_param)
    )
    board.overdue = Figure(
        "overdue",
        "overdue",
        sweep["overdue"],
        changelist(Mailbox, check="overdue", **ws_param),
        hint="Due more than 10 minutes ago and not tested yet: are workers and run_periodic running?",
    )
    board.due_next_hour = Figure(
        "next_hour",
        "due in the next hour",
        sweep["soon"],
        changelist(Mailbox, check="next_hour", **ws_param),
    )
    board.by_status = [
        Figure(
            s.value,
            s.label,
            status_counts[s.value],
            changelist(Mailbox, status=s.value, **ws_param),
        )
        for s in Mailbox.Status
    ]
    board.reauth = next(f for f in board.by_status if f.key == Mailbox.Status.REAUTH_REQUIRED)
    board.by_warmup = [
        Figure(
            w.value,
            w.label,
            warmup_counts[w.value],
            changelist(Mailbox, warmup_status=w.value, **ws_param),
        )
        for w in Mailbox.Warmup
    ]
    codes = sorted(code_counts.items(), key=lambda item: (-item[1], item[0]))[:10]
    board.error_codes = [
        Figure(
            code,
            (errors.get(code).message if errors.get(code) else code),
            n,
            changelist(Mailbox, error_code=code, **ws_param),
            hint=errors.get(code).hint if errors.get(code) else "",
        )
        for code, n in codes
    ]

    plan_url = reverse("admin:fleet_moverun_plan") + (
        f"?workspace={selected.pk}" if selected else ""
    )
    board.basic_auth_affected = Figure(
        "basic_auth_affected",
        "app-password mailboxes stop working when Basic auth is turned off",
        affected,
        plan_url,
        hint="Microsoft disables Basic auth for SMTP AUTH by default at the end of December 2026 "
        "(MC786329): move them to OAuth from the move plan.",
    )
    board.basic_auth_refused = Figure(
        "basic_auth_refused",
        "already refused by Microsoft (550 5.7.30 / 535 5.7.139)",
        refused,
        plan_url,
    )

    board.domains, board.domain_count = _domains(scoped(DomainTally), ws_param)
    board.trend = _trend(scoped(EventDayTally), ws_param)

    shown = [selected] if selected else workspaces
    consents = {
        "waiting": sum(w.consents_waiting for w in shown),
        "expiring": sum(w.consents_expiring for w in shown),
    }
    board.consents_waiting = Figure(
        "waiting",
        "waiting for consent",
        consents["waiting"],
        changelist(ConsentRequest, state="open", **ws_param),
    )
    board.consents_expiring = Figure(
        "expiring",
        f"expiring within {ConsentRequest.EXPIRING_HOURS} h",
        consents["expiring"],
        changelist(ConsentRequest, state="expiring", **ws_param),
    )

    board.credentials_expiring = list(
        scoped(Credential)
        .filter(Credential.secret_expiring_q())
        .select_related("workspace")
        .order_by("secret_expires_at")[:10]
    )
    board.credentials_expiring_url = changelist(Credential, secret_expiry="soon", **ws_param)
    board.recent_bulk_adds = list(scoped(BulkAddRun).select_related("workspace")[:5])
    board.recent_imports = list(scoped(ImportBatch).select_related("workspace")[:5])
    _uptime(board)
    return board


def _sweep_figures(mailboxes, now: datetime) -> dict:
    """Overdue, due in the next hour, never tested, and the oldest last test (every mailbox was
    tested since then: the last complete sweep), in one query that reads only the mailboxes due
    within the hour or never tested (the partial indexes on `check_due_at` and on untested
    mailboxes), not the fleet. A mailbox due later was tested more recently than those due
    sooner, so the oldest test among them is the fleet's."""
    soon = now + timedelta(hours=1)
    figures = (
        mailboxes.filter(Q(check_due_at__lt=soon) | Q(last_checked_at__isnull=True))
        .exclude(status=Mailbox.Status.DISABLED)
        .aggregate(
            overdue=Count("id", filter=health.overdue_q(now)),
            soon=Count("id", filter=health.due_soon_q(now)),
            never=Count("id", filter=health.never_tested_q()),
            least_recent=Min("last_checked_at"),
        )
    )
    if figures["least_recent"] is None and not figures["never"]:
        # Nothing due within the hour (a small fleet): the oldest test is then read directly.
        figures["least_recent"] = mailboxes.exclude(status=Mailbox.Status.DISABLED).aggregate(
            least_recent=Min("last_checked_at")
        )["least_recent"]
    return figures


def _count_in_workspace(model, condition: Q) -> Coalesce:
    """How many of the workspace's `model` rows match `condition`: a subquery of the workspace
    list's query, not a query of its own."""
    rows = (
        model.objects.filter(condition, workspace=OuterRef("pk"))
        .order_by()
        .values("workspace")
        .annotate(n=Count("id"))
        .values("n")[:1]
    )
    return Coalesce(Subquery(rows), 0)


def _domains(tallies, ws_param: dict) -> tuple[list[DomainHealth], int]:
    """The DOMAINS_SHOWN domains with the most mailboxes missing a check (then the largest), and
    how many domains there are: one aggregate query over the domain tally (consumer domains are
    not tallied), whatever the fleet's size."""
    tallies = tallies.filter(mailboxes__gt=0)
    counts = {}
    for check in CHECKS:
        counts[f"{check}_ok"] = Sum("mailboxes", filter=Q(**{check: 1}))
        counts[f"{check}_bad"] = Sum("mailboxes", filter=Q(**{check: 0}))
    problems = Coalesce(Sum("mailboxes", filter=Q(spf=0) | Q(dkim=0) | Q(dmarc=0) | Q(mx=0)), 0)
    rows = list(
        tallies.values("domain")
        .annotate(n=Sum("mailboxes"), problems=problems, policy=Max("dmarc_policy"), **counts)
        # COUNT(*) OVER () after GROUP BY: how many domains in all, in the same query.
        .annotate(domains=Window(Count("*")))
        .order_by("-problems", "-n", "domain")[:DOMAINS_SHOWN]
    )
    found = []
    for row in rows:
        health = DomainHealth(
            row["domain"],
            row["n"],
            changelist(Mailbox, domain=row["domain"], **ws_param),
            dmarc_policy=row["policy"] or "",
            problems=row["problems"],
        )
        for check in CHECKS:
            state = "missing" if row[f"{check}_bad"] else "ok" if row[f"{check}_ok"] else "unknown"
            setattr(health, check, state)
        found.append(health)
    return found, (rows[0]["domains"] if found else 0)


def _trend(tallies, ws_param: dict) -> list[TrendDay]:
    """Connections made (→ active) and lost (active → error or reauth) per UTC day, 30 days,
    from the event tally."""
    today = timezone.now().astimezone(UTC).date()
    first = today - timedelta(days=TREND_DAYS - 1)
    rows = (
        tallies.filter(day__gte=first)
        .values("day")
        .annotate(made=Sum("made"), lost=Sum("lost"))
        .order_by()
    )
    per_day = {row["day"]: row for row in rows}
    peak = max([1, *(max(r["made"], r["lost"]) for r in per_day.values())])
    trend = []
    for offset in range(TREND_DAYS):
        day = first + timedelta(days=offset)
        row = per_day.get(day, {"made": 0, "lost": 0})
        when = {"day": day.isoformat()}
        trend.append(
            TrendDay(
                day,
                row["made"],
                row["lost"],
                changelist(MailboxEvent, change="made", **when, **ws_param),
                changelist(MailboxEvent, change="lost", **when, **ws_param),
                x=12 + offset * CHART_SLOT,
                # A day with any change gets at least a visible sliver.
                made_height=max(2, round(row["made"] * CHART_BAR_MAX / peak)) if row["made"] else 0,
                lost_height=max(2, round(row["lost"] * CHART_BAR_MAX / peak)) if row["lost"] else 0,
            )
        )
    return trend


UPTIME_ROWS = 10  # workspaces shown, lowest uptime first


def _uptime(board: Dashboard) -> None:
    """Uptime per workspace from the hourly rollup (never the events), read with the workspace
    list (uptime.workspace_annotations): no query of its own."""
    shown = [board.selected] if board.selected else board.workspaces
    rows = []
    for workspace in shown:
        ws = {"workspace__id__exact": workspace.pk}
        rows.append(
            UptimeRow(
                workspace.name,
                workspace.uptime_checks,
                workspace.uptime_passed,
                workspace.uptime_lost,
                changelist(MailboxEvent, kind=MailboxEvent.Kind.CONNECTION_TEST, within="30d", **ws),
                changelist(MailboxEvent, change="lost", within="24h", **ws),
            )
        )
    # Tested workspaces with the lowest uptime first, then those without a test.
    rows.sort(key=lambda r: (r.uptime is None, r.uptime if r.uptime is not None else 0, r.name))
    board.uptime = rows[:UPTIME_ROWS]
    if len(shown) > 1:
        every = {"kind": MailboxEvent.Kind.CONNECTION_TEST, "within": "30d"}
        board.uptime_total = UptimeRow(
            "All your workspaces",
            sum(r.checks for r in rows),
            sum(r.passed for r in rows),
            sum(r.disconnections for r in rows),
            changelist(MailboxEvent, **every),
            changelist(MailboxEvent, change="lost", within="24h"),
        )
