"""Connection tests that live on the mailbox rows (fleet/health.py): leased, reclaimed after a
`kill -9` of their worker, scheduled once per interval and evenly spread, transient failures
retried before they count, "Sweep now" across real workers.

The recovery tests run real `db_worker` processes and a real `run_periodic` (reaper and health
dispatcher) against PostgreSQL, with the loopback SMTP/IMAP servers slowed down so that the
kill lands in the middle of an import's 200 connection tests.
"""

from __future__ import annotations

import io
import os
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from fleet import errors, health, imports
from fleet.models import Mailbox, MailboxEvent
from fleet.tasks import test_due_mailboxes
from sandbox import mailservers as ms
from tests.mail_fixtures import mail, point_at, servers  # noqa: F401
from tests.test_job_recovery import (
    LEASE,
    REAPER,
    Fleet,
    assert_dead_task_failed_with_a_note,
    wait_for,
)

on_postgres = pytest.mark.skipif(
    "postgres" not in os.environ.get("DATABASE_URL", ""),
    reason="kill -9 recovery is shown on PostgreSQL (DATABASE_URL=postgres://…)",
)


@pytest.fixture
def fleet(settings):
    settings.JOB_LEASE_SECONDS = LEASE
    running = Fleet()
    yield running
    running.stop()


def import_boxes(ws, user, mail, count: int, prefix: str = "box"):
    names = [f"{prefix}{n:03}@contoso.com" for n in range(count)]
    for name in names:
        mail.add(name, "pw")
    body = "email,password\n" + "".join(f"{n},pw\n" for n in names)
    result = imports.import_mailboxes(ws, io.BytesIO(body.encode()), user=user)
    # The demo points imported mailboxes at Microsoft; here at the loopback servers.
    Mailbox.objects.filter(workspace=ws).update(
        smtp_host=mail.host, smtp_port=mail.smtp_port, imap_host=mail.host, imap_port=mail.imap_port
    )
    return result.batch, names


def holder(mailbox_ids) -> tuple[str, str] | None:
    """(lease owner, worker id) of a task testing one of these mailboxes right now."""
    owner = (
        Mailbox.objects.filter(pk__in=mailbox_ids)
        .exclude(check_lease_owner="")
        .values_list("check_lease_owner", flat=True)
        .first()
    )
    if not owner:
        return None
    task = DBTaskResult.objects.filter(id=owner).first()
    return (owner, task.worker_ids[-1]) if task and task.worker_ids else None


@on_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["restart", "survivor"])
def test_import_tests_killed_mid_batch_are_all_done_once(
    mode, fleet, mail, monkeypatch, ws_a, personas
):
    total = 200
    mail.reply_delay = 0.03  # every reply: a mailbox's test takes a few tenths of a second
    monkeypatch.setenv("HEALTH_CHECK_CONCURRENCY", "5")
    monkeypatch.setenv("HEALTH_CHECK_CHUNK", "25")
    batch, names = import_boxes(ws_a, personas["alice"], mail, total)
    ids = list(batch.mailboxes.values_list("pk", flat=True))
    assert batch.progress()["pending"] == total

    fleet.worker("worker-1")
    if mode == "survivor":
        fleet.worker("worker-2")
    fleet.reaper()

    def working():
        return batch.progress()["tested"] >= 20 and holder(ids)

    owner, worker_id = wait_for(working, 90, "the first tests")
    killed = fleet.kill(worker_id)
    tested_at_kill = batch.progress()["tested"]
    assert tested_at_kill < total, "the batch ended before the kill: nothing was shown"
    if mode == "restart":
        fleet.worker("worker-3")

    def taken_back():
        return not Mailbox.objects.filter(check_lease_owner=owner).exists()

    wait_for(taken_back, 60, "the reaper to take the dead worker's mailboxes back")
    takeover = time.monotonic() - killed
    wait_for(lambda: batch.progress()["pending"] == 0, 180, "every mailbox of the import")
    done = time.monotonic() - killed
    print(
        f"\n[recovery] import connection tests ({mode}): {tested_at_kill} of {total} tested at "
        f"kill -9, leases taken back {takeover:.1f} s after it, all {total} tested "
        f"{done:.1f} s after it (lease {LEASE:.0f} s + reaper {REAPER:.0f} s)"
    )

    assert batch.progress() == {
        "total": total,
        "tested": total,
        "active": total,
        "failed": 0,
        "pending": 0,
    }
    # One connection-test event per mailbox: the tests the dead worker had in flight were
    # never recorded, and their second attempt is recorded once.
    tests = Counter(
        MailboxEvent.objects.filter(kind="connection_test").values_list("email", flat=True)
    )
    assert set(tests) == set(names) and set(tests.values()) == {1}
    assert not Mailbox.objects.exclude(check_lease_owner="").exists()
    # Each is scheduled for its next health check: its slot at least half an interval away.
    horizon = timezone.now() + timedelta(hours=36, minutes=1)
    assert not Mailbox.objects.filter(check_due_at=None).exists()
    assert not Mailbox.objects.filter(check_due_at__gt=horizon).exists()
    assert_dead_task_failed_with_a_note(owner)
    assert takeover < LEASE + REAPER + 6.0 or mode == "restart", f"{takeover:.1f} s"
    assert not DBTaskResult.objects.filter(
        task_path=test_due_mailboxes.module_path, status="FAILED"
    ).exclude(id=owner)


# --- the schedule -----------------------------------------------------------------------------
def test_slots_are_stable_evenly_spread_and_once_per_interval():
    """A simulated day of 24,000 mailboxes: every one is due exactly once in the day, none is
    skipped, and the per-minute load stays close to its mean (no thundering herd)."""
    interval = timedelta(hours=24)
    # Random uids as uuid4 makes them, from a seeded generator: the figures below are the same on
    # every run (the bounds hold for any draw with overwhelming probability: 5 deviations).
    rng = random.Random(20261202)
    uids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(24_000)]
    start = datetime(2026, 12, 2, 0, 0, tzinfo=UTC)
    first = {uid: health.next_slot(uid, interval, start) for uid in uids}
    assert all(start < slot <= start + interval for slot in first.values())
    # Tested a little late (a busy worker) or early: the next slot is still one interval on.
    for uid, slot in list(first.items())[:500]:
        late = health.next_slot(uid, interval, slot + timedelta(minutes=7))
        assert late == slot + interval
        assert health.next_slot(uid, interval, slot) == slot + interval
    # Minute of the day (a slot at the interval's very end is the next day's minute 0).
    per_minute = Counter(
        int((slot - start).total_seconds() // 60) % (24 * 60) for slot in first.values()
    )
    mean = len(uids) / (24 * 60)
    assert len(per_minute) == 24 * 60  # no empty minute
    # Random uids make a Poisson spread: the busiest minute stays within a few deviations
    # (a midnight herd would put all 24,000 in one minute), and every 10 minutes near the mean.
    assert max(per_minute.values()) < mean * 3, (max(per_minute.values()), mean)
    per_ten = Counter(minute // 10 for minute in per_minute.elements())
    assert max(per_ten.values()) < 10 * mean * 1.4 and min(per_ten.values()) > 10 * mean * 0.6
    # Shorter cadences keep the same spread.
    hourly = Counter(
        int((health.next_slot(u, timedelta(hours=1), start) - start).total_seconds() // 60) % 60
        for u in uids
    )
    assert len(hourly) == 60 and max(hourly.values()) < (len(uids) / 60) * 1.3


@pytest.mark.django_db
def test_a_simulated_day_tests_each_mailbox_once_and_never_disabled_ones(ws_a, ws_b, mail):
    """The dispatcher's steps at every simulated 10 minutes of a day, the tests themselves
    in-process against the loopback servers: every mailbox not disabled is tested exactly once,
    disabled ones never, and no 10 minutes holds much more than its share."""
    from fleet import mailbox_checks

    ws_b.health_check_interval = timedelta(hours=12)
    ws_b.save()
    boxes = []
    for ws in (ws_a, ws_b):
        for n in range(60):
            email = f"day{n}@{ws.slug}.example"
            mail.add(email, "pw")
            boxes.append(
                point_at(
                    Mailbox.objects.create(
                        workspace=ws, email=email, auth_method="app_password", password="pw",
                        status="active",
                    ),
                    mail,
                )
            )  # fmt: skip
    off = boxes[5]
    Mailbox.objects.filter(pk=off.pk).update(status="disabled")
    start = timezone.now()
    assert health.schedule_unscheduled(start) == len(boxes) - 1
    assert Mailbox.objects.get(pk=off.pk).check_due_at is None

    tested_at: dict[int, list[datetime]] = {}
    step = timedelta(minutes=10)
    clock = start
    while clock < start + timedelta(hours=24):
        clock += step
        ids = health.claim_due("sim", limit=1000, now=clock)
        for mailbox in Mailbox.objects.filter(pk__in=ids):
            tested_at.setdefault(mailbox.pk, []).append(clock)
            error, detail = mailbox_checks.probe(mailbox)
            health.record(mailbox, error, detail, "sim")
            # The next slot was taken from the real clock; take it from the simulated one.
            Mailbox.objects.filter(pk=mailbox.pk).update(
                check_due_at=health.slot_after_test(
                    mailbox.uid, mailbox.workspace.health_check_interval, clock
                )
            )
    daily = {b.pk for b in boxes if b.workspace_id == ws_a.pk and b.pk != off.pk}
    twice = {b.pk for b in boxes if b.workspace_id == ws_b.pk}
    assert off.pk not in tested_at
    assert {pk for pk, t in tested_at.items() if len(t) == 1} == daily
    assert {pk for pk, t in tested_at.items() if len(t) == 2} == twice
    # The 12-hour workspace's two tests are 12 hours apart (to the 10-minute step).
    for pk in twice:
        first, second = tested_at[pk]
        assert abs((second - first) - timedelta(hours=12)) <= step
    assert MailboxEvent.objects.filter(kind="connection_test").count() == len(daily) + 2 * 60
    assert not MailboxEvent.objects.filter(mailbox_id=off.pk, kind="connection_test").exists()


# --- transient failures -------------------------------------------------------------------------
@pytest.mark.django_db
def test_one_blip_changes_nothing_three_in_a_row_are_a_disconnect(ws_a, mail):
    mail.add("blip@contoso.com", "pw")
    box = point_at(
        Mailbox.objects.create(
            workspace=ws_a, email="blip@contoso.com", auth_method="app_password", password="pw",
            status="active",
        ),
        mail,
    )  # fmt: skip
    refused = {"smtp_host": "127.0.0.1", "smtp_port": ms.refused_port()}

    def test_once(**servers):
        Mailbox.objects.filter(pk=box.pk).update(check_due_at=timezone.now(), **servers)
        before = timezone.now()
        outcome = health.run_due("local-test", concurrency=2)
        box.refresh_from_db()
        return outcome, box.check_due_at - before

    # One blip: recorded, the status stays, a retry in 15 minutes.
    outcome, retry_in = test_once(**refused)
    assert outcome == {"active": 1}
    assert (box.status, box.error_code, box.check_transient_failures) == ("active", "", 1)
    assert timedelta(minutes=14) < retry_in <= timedelta(minutes=16)
    blip = MailboxEvent.objects.filter(kind="connection_test").latest("id")
    assert (blip.to_status, blip.error_code) == ("active", "CONNECTION_REFUSED")
    assert "try 1 of 3" in blip.message
    # The retry passes: the count starts again, the next test is the normal slot.
    outcome, next_in = test_once(smtp_host=mail.host, smtp_port=mail.smtp_port)
    assert (box.status, box.check_transient_failures) == ("active", 0)
    assert timedelta(hours=12) <= next_in <= timedelta(hours=36)  # its slot
    assert not MailboxEvent.objects.filter(kind="status").exists()

    # Three in a row: the first two retried (15, then 45 minutes), the third is a disconnect.
    outcome, retry_in = test_once(**refused)
    assert box.check_transient_failures == 1 and box.status == "active"
    outcome, retry_in = test_once(**refused)
    assert box.check_transient_failures == 2 and box.status == "active"
    assert timedelta(minutes=44) < retry_in <= timedelta(minutes=46)
    outcome, _ = test_once(**refused)
    assert outcome == {"error": 1}
    assert (box.status, box.error_code, box.check_transient_failures) == (
        "error",
        errors.CONNECTION_REFUSED.code,
        0,
    )
    assert MailboxEvent.objects.filter(kind="status", to_status="error").count() == 1
    assert MailboxEvent.objects.filter(kind="connection_test").count() == 5


@pytest.mark.django_db
def test_a_permanent_failure_counts_at_once(ws_a, mail):
    mail.add("off@contoso.com", "pw", smtp_reply=ms.SMTP_AUTH_DISABLED)
    box = point_at(
        Mailbox.objects.create(
            workspace=ws_a, email="off@contoso.com", auth_method="app_password", password="pw",
            status="active", check_due_at=timezone.now(),
        ),
        mail,
    )  # fmt: skip
    assert health.run_due("local-test") == {"error": 1}
    box.refresh_from_db()
    assert (box.status, box.error_code) == ("error", "SMTP_AUTH_DISABLED")


@pytest.mark.django_db
def test_a_result_after_the_lease_was_taken_back_is_not_recorded(ws_a, mail):
    box = Mailbox.objects.create(
        workspace=ws_a, email="x@contoso.com", auth_method="app_password", password="pw",
        check_due_at=timezone.now(),
    )  # fmt: skip
    assert health.claim_due("task-a") == [box.pk]
    assert health.claim_due("task-b") == []  # held
    Mailbox.objects.filter(pk=box.pk).update(
        check_lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert health.reclaim_expired(timezone.now()) == 1
    assert health.claim_due("task-b") == [box.pk]
    assert health.record(box, None, "late", "task-a") == health.LEASE_LOST
    assert health.record(box, None, "ok", "task-b") == "active"
    assert MailboxEvent.objects.filter(kind="connection_test").count() == 1


# --- "Sweep now" and the cadence: API and admin ---------------------------------------------------
def due_ids():
    return set(Mailbox.objects.filter(check_due_at__isnull=False).values_list("pk", flat=True))


@pytest.mark.django_db
def test_sweep_api_key_scope_matrix_and_filters(api, api_keys, mailboxes, ws_a, ws_b):
    a, b = mailboxes["a"], mailboxes["b"]
    off = Mailbox.objects.create(
        workspace=ws_a, email="off@alpha.example", auth_method="app_password", status="disabled"
    )
    sweep = "/api/v1/mailboxes/sweep"
    # Viewers may not sweep: their key reaches nothing to operate on.
    assert api("post", sweep, api_keys["a_viewer"]).status_code == 403
    assert api("post", sweep, api_keys["b_viewer"], data={"workspace_id": ws_b.pk}).status_code == 403
    assert not due_ids()
    # A workspace key naming another workspace: 404, nothing queued.
    answer = api("post", sweep, api_keys["a_operator"], data={"workspace_id": ws_b.pk})
    assert answer.status_code == 404 and not due_ids()
    # Bad filters: the envelope, never a 500.
    bad = api("post", sweep, api_keys["a_operator"], data={"status": "nonsense"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
    # A filter that matches nothing queues nothing.
    none = api("post", sweep, api_keys["a_operator"], data={"tag": "beta-tag"})
    assert none.status_code == 202 and none.json()["data"] == {"queued": 0}
    # Bob is a manager of A and a viewer of B: his platform key sweeps A only, never disabled.
    done = api("post", sweep, api_keys["bob_platform"])
    assert done.status_code == 202 and done.json()["data"] == {"queued": 1}
    assert due_ids() == {a.pk} and off.pk not in due_ids()
    assert Mailbox.objects.get(pk=a.pk).check_requested_by.username == "bob"
    # The superuser's platform key, filtered by tag: B's mailbox.
    root = api("post", sweep, api_keys["root_platform"], data={"tag": "BETA-tag"})
    assert root.json()["data"] == {"queued": 1} and due_ids() == {a.pk, b.pk}


@pytest.mark.django_db
def test_workspace_interval_through_the_api(api, api_keys, ws_a, mailboxes):
    path = f"/api/v1/workspaces/{ws_a.pk}"
    shown = api("get", path, api_keys["a_viewer"]).json()["data"]
    assert shown["health_check_interval_hours"] == 24.0
    too_short = api("patch", path, api_keys["bob_platform"], data={"health_check_interval_hours": 0.5})
    assert too_short.status_code == 403  # bob is not an owner of A
    from fleet.models import Membership

    Membership.objects.filter(user__username="bob", workspace=ws_a).update(role="owner")
    from fleet import access

    access.forget_roles(Membership.objects.get(workspace=ws_a, user__username="bob").user)
    too_short = api("patch", path, api_keys["bob_platform"], data={"health_check_interval_hours": 0.5})
    assert too_short.status_code == 400
    assert "health_check_interval_hours" in too_short.json()["error"]["fields"]
    # A future slot is dropped on a new cadence (the dispatcher gives a new one); due stays due.
    a = mailboxes["a"]
    Mailbox.objects.filter(pk=a.pk).update(check_due_at=timezone.now() + timedelta(hours=20))
    changed = api("patch", path, api_keys["bob_platform"], data={"health_check_interval_hours": 6})
    assert changed.status_code == 200, changed.content
    assert changed.json()["data"]["health_check_interval_hours"] == 6.0
    ws_a.refresh_from_db()
    assert ws_a.health_check_interval == timedelta(hours=6)
    assert Mailbox.objects.get(pk=a.pk).check_due_at is None
    health.schedule_unscheduled()
    slot = Mailbox.objects.get(pk=a.pk).check_due_at
    assert timezone.now() < slot <= timezone.now() + timedelta(hours=6)


@pytest.mark.django_db
def test_admin_sweep_button_is_role_aware_and_the_interval_is_validated(
    client_for, personas, ws_a, mailboxes
):
    from django.urls import reverse

    page = reverse("admin:fleet_workspace_change", args=[ws_a.pk])
    operator = client_for(personas["alice"])
    body = operator.get(page).content.decode()
    assert 'id="tool-sweep_now"' in body
    done = operator.post(reverse("admin:fleet_workspace_do", args=[ws_a.pk, "sweep_now"]))
    assert done.status_code == 302
    assert due_ids() == {mailboxes["a"].pk}  # A's mailbox, never B's
    # Bob only views B: no button there, and a forged POST is refused without a change.
    viewer = client_for(personas["bob"])
    from fleet.models import Workspace

    ws_b = Workspace.objects.get(slug="beta")
    assert 'id="tool-sweep_now"' not in viewer.get(
        reverse("admin:fleet_workspace_change", args=[ws_b.pk])
    ).content.decode()
    viewer.post(reverse("admin:fleet_workspace_do", args=[ws_b.pk, "sweep_now"]))
    assert mailboxes["b"].pk not in due_ids()

    # The owner sets the cadence; under an hour is a form error.
    from fleet.models import Membership

    Membership.objects.filter(user=personas["bob"], workspace=ws_a).update(role="owner")
    owner = client_for(personas["bob"])
    form = {
        "name": "Alpha",
        "slug": "alpha",
        "health_check_interval": "00:30:00",
        "webhook_url": "",
        "webhook_secret": "",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    refused = owner.post(page, form)
    assert refused.status_code == 200
    assert "at least 1 hour" in refused.content.decode()
    ws_a.refresh_from_db()
    assert ws_a.health_check_interval == timedelta(hours=24)


@on_postgres
@pytest.mark.django_db(transaction=True)
def test_sweep_now_across_two_real_workers(fleet, mail, monkeypatch, settings, ws_a, personas):
    """A workspace of 120 mailboxes swept at once: two workers share the chunks (each takes
    some), every mailbox is tested once and goes back to its slot."""
    # A chunk takes about three seconds: a worker polling every 0.1 s cannot be left out.
    mail.reply_delay = 0.3
    monkeypatch.setenv("HEALTH_CHECK_CONCURRENCY", "10")
    monkeypatch.setenv("HEALTH_CHECK_CHUNK", "10")
    # …and here, where the sweep is queued: 12 tasks at once, which the workers share (with
    # the default chunk of 500 one task would be queued, each handing on to the next).
    settings.HEALTH_CHECK_CHUNK = 10
    names = [f"sw{n:03}@contoso.com" for n in range(120)]
    for name in names:
        mail.add(name, "pw")
        point_at(
            Mailbox.objects.create(
                workspace=ws_a, email=name, auth_method="app_password", password="pw",
                status="active",
            ),
            mail,
        )  # fmt: skip
    fleet.worker("worker-1")
    queued = health.sweep_now(
        Mailbox.objects.filter(workspace=ws_a), actor=personas["alice"], via="api"
    )
    assert queued == 120
    # The second worker comes up while the first is testing its chunk: the chunks left are
    # shared between them through the task queue.
    wait_for(
        lambda: DBTaskResult.objects.filter(
            task_path=test_due_mailboxes.module_path, status="RUNNING"
        ).exists(),
        90,
        "the first worker to take a chunk",
    )
    fleet.worker("worker-2")

    def all_tested():
        return MailboxEvent.objects.filter(kind="connection_test").count() >= 120 and not (
            Mailbox.objects.exclude(check_lease_owner="").exists()
        )

    wait_for(all_tested, 120, "the sweep")
    tests = Counter(
        MailboxEvent.objects.filter(kind="connection_test").values_list("email", flat=True)
    )
    assert set(tests) == set(names) and set(tests.values()) == {1}
    assert set(
        MailboxEvent.objects.filter(kind="connection_test").values_list("actor__username", flat=True)
    ) == {"alice"}
    runs = DBTaskResult.objects.filter(task_path=test_due_mailboxes.module_path, status="SUCCESSFUL")
    workers = Counter(run.worker_ids[-1] for run in runs if run.return_value)
    every = Counter(
        (tuple(t.worker_ids), t.status, bool(t.return_value), t.traceback[-120:])
        for t in DBTaskResult.objects.filter(task_path=test_due_mailboxes.module_path)
    )
    assert set(workers) == {"worker-1", "worker-2"}, sorted(every.items())
    horizon = timezone.now() + timedelta(hours=36)
    assert not Mailbox.objects.filter(workspace=ws_a).exclude(check_due_at__lte=horizon).exists()


# --- the dashboard ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_dashboard_shows_the_sweep_and_each_figure_links_to_its_rows(
    client_for, personas, ws_a, ws_b
):
    from fleet import dashboard

    now = timezone.now()

    def box(email, ws=ws_a, **fields):
        fields.setdefault("status", "active")
        return Mailbox.objects.create(
            workspace=ws, email=email, auth_method="app_password", **fields
        )

    tested = now - timedelta(hours=5)
    late = box("late@a.example", check_due_at=now - timedelta(hours=1), last_checked_at=tested)
    soon = box("soon@a.example", check_due_at=now + timedelta(minutes=20), last_checked_at=tested)
    box("later@a.example", check_due_at=now + timedelta(hours=5), last_checked_at=now)
    box("off@a.example", status="disabled", check_due_at=now - timedelta(hours=3))
    box("other@b.example", ws=ws_b, check_due_at=now - timedelta(hours=2))  # not alice's

    board = dashboard.build(personas["alice"], ws_a.pk)
    assert board.swept_since == tested
    assert (board.overdue.count, board.due_next_hour.count, board.never_tested.count) == (1, 1, 0)
    client = client_for(personas["alice"])
    for figure, expected in ((board.overdue, [late]), (board.due_next_hour, [soon])):
        page = client.get(figure.url)
        assert page.status_code == 200
        assert [m.email for m in page.context["cl"].result_list] == [m.email for m in expected]
    home = client.get(f"/admin/?workspace={ws_a.pk}").content.decode()
    assert 'data-figure="sweep-overdue"' in home and "Last complete sweep" in home

    fresh = box("new@a.example")
    board = dashboard.build(personas["alice"], ws_a.pk)
    assert board.swept_since is None and board.never_tested.count == 1
    page = client.get(board.never_tested.url)
    assert [m.email for m in page.context["cl"].result_list] == [fresh.email]


# --- caps per mail host and per tenant ------------------------------------------------------------
@pytest.mark.django_db
def test_caps_bound_tests_at_once_per_tenant_and_per_host(ws_a):
    """60 threads ask to test mailboxes of two tenants on one host: never more than the tenant
    cap of one tenant at once, nor more than the host cap in all; the work is interleaved."""
    import threading

    from fleet import mailbox_checks

    boxes = [
        Mailbox(workspace=ws_a, email=f"u{n}@{'one' if n % 3 else 'two'}.example",
                smtp_host="smtp.office365.com")
        for n in range(60)
    ]  # fmt: skip
    caps = mailbox_checks.Caps(per_host=5, per_tenant=3)
    lock = threading.Lock()
    now = Counter()
    peak = Counter()
    release = threading.Event()

    def hold(mailbox):
        tenant = mailbox_checks.tenant_key(mailbox)
        with caps.hold(mailbox):
            with lock:
                now[tenant] += 1
                now["host"] += 1
                peak[tenant] = max(peak[tenant], now[tenant])
                peak["host"] = max(peak["host"], now["host"])
            release.wait(0.01)
            with lock:
                now[tenant] -= 1
                now["host"] -= 1

    threads = [threading.Thread(target=hold, args=(m,)) for m in boxes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert peak["one.example"] <= 3 and peak["two.example"] <= 3
    assert 3 < peak["host"] <= 5  # both tenants at once, within the host's cap
    order = [mailbox_checks.tenant_key(m) for m in mailbox_checks.interleaved(boxes)[:6]]
    assert order == ["two.example", "one.example"] * 3
