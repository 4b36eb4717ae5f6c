"""A move off Basic auth survives a dying worker: a real `db_worker` process is killed with
SIGKILL in the middle of a move of 50 app-only mailboxes (the sandbox's SMTP/IMAP servers answer
slowly), a new worker is started, the reaper (`reap`, which runs fleet.move.reclaim_expired, as `run_periodic` enqueues
it) queues the run again once its lease has expired, and the new worker finishes it: every
mailbox moved once, with one event each."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.db.models import Count

from fleet import move
from fleet.models import Mailbox, MailboxEvent, MoveItem, MoveRun
from fleet.tasks import reap
from tests.test_basic_auth_move import (  # noqa: F401  (fixtures)
    app_password_mailbox,
    fresh_tokens,
    mail,
    verified,
)
from tests.test_tasks import ROOT, database_url

TOTAL = 50
LEASE = 4  # seconds (MOVE_LEASE_SECONDS of the workers); production holds a run 5 minutes
REAPER = 1.0  # seconds between two reaper runs (production: every minute)
WORKER_POLL = 0.1


def start_worker(name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "db_worker",
            "--interval",
            str(WORKER_POLL),
            "--no-startup-delay",
            "--worker-id",
            name,
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, timeout: float, every: float = 0.05, between=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if between is not None:
            between()
        time.sleep(every)
    return False


def moved() -> int:
    return MoveItem.objects.filter(state=MoveItem.State.MOVED).count()


@pytest.mark.django_db(transaction=True)
def test_a_move_whose_worker_is_killed_finishes_on_another(
    verified, mail, ws_a, sandbox, personas, worker_env, monkeypatch
):
    monkeypatch.setenv("MOVE_LEASE_SECONDS", str(LEASE))
    monkeypatch.setenv("MAIL_CHECK_CONCURRENCY", "4")
    mail.reply_delay = 0.03  # every SMTP/IMAP reply: a move takes seconds, not milliseconds
    for n in range(TOTAL):
        sandbox.directory.add_user(f"move{n:02}@acme-outreach.com")
        app_password_mailbox(ws_a, f"move{n:02}@acme-outreach.com", mail)
    run = move.start_move(ws_a, personas["bob"])  # queued (the task row, once committed)
    assert run.total == TOTAL

    first = start_worker("worker-1")
    try:
        assert wait_for(lambda: moved() >= 8, timeout=60), "the first worker moved nothing"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    killed_at = time.monotonic()
    at_kill = moved()
    run.refresh_from_db()
    assert run.status == MoveRun.Status.RUNNING and at_kill < TOTAL, (run.status, at_kill)
    lease_until, first_start = run.lease_until, run.started_at

    second = start_worker("worker-2")
    try:
        # The reaper, enqueued as run_periodic does; the second worker runs it, and the move.
        finished = wait_for(
            lambda: MoveRun.objects.get(pk=run.pk).status == MoveRun.Status.FINISHED,
            timeout=LEASE + REAPER + 60,
            every=REAPER,
            between=reap.enqueue,
        )
        took = time.monotonic() - killed_at
    finally:
        second.terminate()
        _, err = second.communicate(timeout=20)
    assert "Traceback" not in (err or ""), err
    assert finished, MoveRun.objects.filter(pk=run.pk).values()

    run.refresh_from_db()
    assert (run.status, run.attempts, run.moved, run.failed) == ("finished", 2, TOTAL, 0)
    # Queued again only after the lease ran out, and within one reaper period (plus a worker's
    # poll and start-up) of it.
    assert run.started_at > first_start
    assert lease_until <= run.started_at
    assert (run.started_at - lease_until).total_seconds() <= REAPER + 5

    # Every mailbox switched once: app-only, password wiped, one "moved" event and at most one
    # status change each.
    mailboxes = list(Mailbox.objects.filter(workspace=ws_a))
    assert len(mailboxes) == TOTAL
    assert {m.auth_method for m in mailboxes} == {"graph_app_only"}
    assert all(str(m.password) == "" and str(m.totp_secret) for m in mailboxes)
    moved_events = (
        MailboxEvent.objects.filter(message__startswith="Moved off Basic auth")
        .values("mailbox")
        .annotate(n=Count("id"))
    )
    assert len(moved_events) == TOTAL and {e["n"] for e in moved_events} == {1}
    status_events = (
        MailboxEvent.objects.filter(kind="status", to_status="active")
        .values("mailbox")
        .annotate(n=Count("id"))
    )
    assert {e["n"] for e in status_events} <= {1}
    assert MoveItem.objects.filter(run=run).exclude(state="moved").count() == 0
    print(
        f"\nmove of {TOTAL}: {at_kill} moved before kill -9; finished {took:.1f} s after it "
        f"(lease {LEASE} s + reaper {REAPER} s)"
    )
