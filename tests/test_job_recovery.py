"""Work survives a dying worker: real `db_worker` processes (and a real `run_periodic` for the
reaper) against PostgreSQL, one killed with SIGKILL in the middle of a job — a Graph bulk add
(the sandbox's Graph slowed down), a webhook delivery (a receiver that stalls), a credential
verification (a token endpoint that stalls) — then either a new worker is started or a second
one is already running. Everything is done within the lease plus one reaper period (plus the
time the rest of the job takes), and nothing is done twice where it would show.

Leases are short here (JOB_LEASE_SECONDS=3, the reaper every second) through the environment of
the worker processes. Each test prints the recovery time it measured (`pytest -s` shows them).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from django.utils.timezone import now
from django_tasks_db.models import DBTaskResult

from fleet import credentials, leases, webhooks
from fleet.bulk_add import Account, start_run
from fleet.models import BulkAddRun, Credential, Mailbox, MailboxEvent, WebhookDelivery
from fleet.tasks import run_bulk_add, send_webhooks, verify_credential
from tests import test_bulk_add as graph_sandbox
from tests.receivers import Receiver
from tests.test_tasks import database_url

ROOT = Path(__file__).resolve().parent.parent
LEASE = 3.0
REAPER = 1.0
# Kill → taken over by a new task: the lease runs out, then the next reaper pass (+ a worker's
# poll and start-up, a few tenths of a second on a loaded machine).
TAKEOVER_LIMIT = LEASE + REAPER + 4.0

dns_zone = graph_sandbox.dns_zone
tenant = graph_sandbox.tenant
graph_credential = graph_sandbox.graph_credential
fresh_tokens = graph_sandbox.fresh_tokens

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "postgres" not in os.environ.get("DATABASE_URL", ""),
        reason="kill -9 recovery is shown on PostgreSQL (DATABASE_URL=postgres://…)",
    ),
]


class Fleet:
    """Worker processes and one `run_periodic`, all killed at the end of the test."""

    def __init__(self):
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, *command: str) -> subprocess.Popen:
        # The environment as it is now: fixtures (worker_env …) may have set more since.
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "JOB_LEASE_SECONDS": str(LEASE),
            "JOB_REAPER_SECONDS": str(REAPER),
            # The receivers listen on plain http on loopback (fleet/webhook_targets.py).
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "WEBHOOK_ALLOW_HTTP": "true",
        }
        # stderr goes to a file, not a pipe: a worker that logs more than a pipe holds (64 KiB)
        # while nobody reads it would block on its next write and stop taking tasks.
        log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop())
        process = subprocess.Popen(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        process.log = log
        self.processes[name] = process
        return process

    def worker(self, name: str) -> subprocess.Popen:
        return self._start(
            name, "db_worker", "--interval", "0.1", "--no-startup-delay", "--worker-id", name
        )

    def reaper(self) -> subprocess.Popen:
        return self._start("periodic", "run_periodic")

    def kill(self, name: str) -> float:
        """SIGKILL, as an operator's `kill -9` or a machine that vanishes. Returns the time."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        return time.monotonic()

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
        for process in self.processes.values():
            process.wait(timeout=20)
            process.log.seek(0)
            err = process.log.read()
            process.log.close()
            assert "Traceback" not in err, err


@pytest.fixture
def fleet(settings):
    settings.JOB_LEASE_SECONDS = LEASE
    running = Fleet()
    yield running
    running.stop()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    tasks = [
        (t.task_path.rsplit(".", 1)[-1], t.status, t.return_value, t.traceback[-300:])
        for t in DBTaskResult.objects.exclude(task_path__contains="periodic").order_by(
            "enqueued_at"
        )
        if not t.task_path.endswith(("reap", "sweep_webhooks")) or t.status == "FAILED"
    ]
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; tasks: {tasks}")


def holder_of(row) -> str:
    """The worker id of the task holding a job's lease."""
    row.refresh_from_db()
    task = DBTaskResult.objects.get(id=row.lease_owner)
    return task.worker_ids[-1]


def start_workers(fleet: Fleet, mode: str) -> None:
    """`restart`: one worker now (killed later, then a new one); `survivor`: two at once."""
    fleet.worker("worker-1")
    if mode == "survivor":
        fleet.worker("worker-2")


def after_kill(fleet: Fleet, mode: str) -> None:
    if mode == "restart":
        fleet.worker("worker-3")


def takeover_limit(mode: str, killed: float) -> float:
    """Seconds after the kill by which the work must be taken over: the lease, one reaper period
    and some slack; for a worker started after the kill, not before it is up (starting Django
    takes seconds on a busy machine, and is not ours to shorten)."""
    if mode != "restart":
        return TAKEOVER_LIMIT
    first = (
        DBTaskResult.objects.filter(worker_ids__contains=["worker-3"])
        .order_by("started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    assert first is not None, "the new worker ran nothing"
    up = time.monotonic() - killed - (now() - first).total_seconds()
    print(f"\n[recovery] the new worker was up {up:.1f} s after the kill")
    return max(TAKEOVER_LIMIT, up + REAPER + 2.0)


def report(kind: str, mode: str, takeover: float, done: float) -> None:
    print(
        f"\n[recovery] {kind} ({mode}): taken over {takeover:.1f} s after kill -9, "
        f"finished {done:.1f} s after it (lease {LEASE:.0f} s + reaper {REAPER:.0f} s)"
    )


def assert_dead_task_failed_with_a_note(owner: str) -> None:
    dead = DBTaskResult.objects.get(id=owner)
    assert dead.status == "FAILED" and dead.exception_class_path == leases.WORKER_LOST
    assert "Fleet's reaper" in dead.traceback


# --- a Graph bulk add -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["restart", "survivor"])
def test_bulk_add_killed_mid_run_resumes_from_its_undone_results(
    mode, fleet, graph_credential, sandbox, worker_env, ws_a
):
    total = 200
    emails = [f"kill{n:03}@acme-outreach.com" for n in range(total)]
    for email in emails:
        sandbox.directory.add_user(email)
    sandbox.switches.latency = 0.4  # every Graph reply: the run takes several seconds
    start_workers(fleet, mode)
    fleet.reaper()
    run = start_run(ws_a, graph_credential, [Account(e) for e in emails])

    def progressed():
        run.refresh_from_db()
        return run.status == "running" and run.processed >= 20

    wait_for(progressed, 60, "the first chunks")
    first_owner = run.lease_owner
    killed = fleet.kill(holder_of(run))
    run.refresh_from_db()
    processed_at_kill = run.processed
    assert processed_at_kill < total, "the run ended before the kill: nothing was shown"
    after_kill(fleet, mode)

    def taken_over():
        run.refresh_from_db()
        return run.lease_owner not in ("", first_owner) or run.status == "finished"

    wait_for(taken_over, 60, "another task to take the run")
    takeover = time.monotonic() - killed
    wait_for(lambda: BulkAddRun.objects.get(pk=run.pk).status == "finished", 120, "the run")
    done = time.monotonic() - killed
    report("bulk add", mode, takeover, done)

    run.refresh_from_db()
    assert (run.status, run.outcome) == ("finished", "all_connected")
    assert (run.processed, run.connected, run.failed) == (total, total, 0)
    assert run.lease_reclaims == 1 and run.lease_owner == ""
    assert run.results.count() == total and not run.results.filter(done=False).exists()
    # No duplicate mailbox and one activation event per mailbox, the killed chunk included.
    assert Mailbox.objects.filter(workspace=ws_a).count() == total
    activations = Counter(
        MailboxEvent.objects.filter(to_status="active").values_list("email", flat=True)
    )
    assert set(activations) == set(emails) and set(activations.values()) == {1}
    assert_dead_task_failed_with_a_note(first_owner)
    tasks = DBTaskResult.objects.filter(task_path=run_bulk_add.module_path)
    assert tasks.filter(status="SUCCESSFUL").count() == 1
    assert takeover < takeover_limit(mode, killed), f"taken over after {takeover:.1f} s"


# --- a webhook delivery -----------------------------------------------------------------------------
@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def hook_up(ws, receiver):
    ws.webhook_url = receiver.url
    ws.webhook_secret = "whsec-recovery"
    ws.save()
    return ws


@pytest.mark.parametrize("mode", ["restart", "survivor"])
def test_webhook_delivery_killed_mid_attempt_is_sent_once_more_with_its_id(
    mode, fleet, receiver, ws_a
):
    receiver.delays = [8.0, 0.0]  # the first attempt stalls until its sender is killed
    hook_up(ws_a, receiver)
    start_workers(fleet, mode)
    fleet.reaper()
    deliveries = [WebhookDelivery.objects.emit(ws_a, "webhook.test", {"n": n}) for n in range(3)]

    wait_for(lambda: receiver.requests, 30, "the first attempt")
    first = deliveries[0]
    first.refresh_from_db()
    first_owner = first.lease_owner
    killed = fleet.kill(holder_of(first))
    after_kill(fleet, mode)

    wait_for(lambda: len(receiver.requests) >= 2, 60, "the attempt after the kill")
    takeover = time.monotonic() - killed
    wait_for(
        lambda: WebhookDelivery.objects.filter(status="delivered").count() == 3, 60, "deliveries"
    )
    done = time.monotonic() - killed
    report("webhook delivery", mode, takeover, done)

    ids = [r.headers["X-Fleet-Delivery"] for r in receiver.requests]
    uids = [str(d.uid) for d in deliveries]
    # The killed attempt's event once more (same id, so the receiver dedupes), the rest once,
    # and in sequence order.
    assert ids == [uids[0], uids[0], uids[1], uids[2]], ids
    sequences = [int(r.headers["X-Fleet-Sequence"]) for r in receiver.requests]
    assert sequences == [1, 1, 2, 3]
    first.refresh_from_db()
    assert (first.status, first.attempts, first.lease_reclaims) == ("delivered", 2, 1)
    assert_dead_task_failed_with_a_note(first_owner)
    assert takeover < takeover_limit(mode, killed), f"sent again after {takeover:.1f} s"


# --- a credential verification ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["restart", "survivor"])
def test_credential_verification_killed_mid_call_is_done_by_another_worker(
    mode, fleet, graph_credential, sandbox, worker_env
):
    Credential.objects.filter(pk=graph_credential.pk).update(status="unverified")
    sandbox.switches.latency = 30.0  # the token request stalls
    start_workers(fleet, mode)
    fleet.reaper()
    credentials.request_verification(graph_credential)

    def held():
        graph_credential.refresh_from_db()
        return graph_credential.lease_owner

    first_owner = wait_for(held, 30, "a worker to take the verification")
    time.sleep(0.5)  # inside the token request
    killed = fleet.kill(holder_of(graph_credential))
    sandbox.switches.latency = 0.0
    after_kill(fleet, mode)

    def verified():
        graph_credential.refresh_from_db()
        return graph_credential.verification_requested_at is None

    wait_for(verified, 60, "the verification")
    done = time.monotonic() - killed
    report("credential verification", mode, done, done)

    assert graph_credential.status == "valid" and graph_credential.lease_reclaims == 1
    assert graph_credential.lease_owner == ""
    assert_dead_task_failed_with_a_note(first_owner)
    tasks = DBTaskResult.objects.filter(task_path=verify_credential.module_path)
    assert tasks.filter(status="SUCCESSFUL").count() == 1
    assert done < takeover_limit(mode, killed), f"verified {done:.1f} s after the kill"


# --- a receiver down for 5 minutes --------------------------------------------------------------------
def test_receiver_down_five_minutes_then_up_gets_every_event_once_in_order(fleet, ws_a, ws_b):
    """Two workspaces' events while their receiver is down; its 5 minutes of outage are
    simulated by moving each retry's `next_attempt_at` to now (time travel), with two workers
    sending, a sweeper and a reaper running. Then it comes back: every event once, in order."""
    from fleet import errors

    receiver = Receiver().start()
    port = receiver.server.server_address[1]
    for ws in (ws_a, ws_b):
        hook_up(ws, receiver)
    receiver.stop()  # down
    fleet.worker("worker-1")
    fleet.worker("worker-2")
    fleet.reaper()

    mailboxes = [
        Mailbox.objects.create(workspace=ws, email=f"m{n}@{ws.slug}.example", auth_method="oauth")
        for ws in (ws_a, ws_b)
        for n in range(3)
    ]
    # 2 status changes each, and `mailbox.reconnected` on the way back (error → active):
    # 18 events, 9 per workspace
    for m in mailboxes:
        m.set_status("error", errors.SECRET_UNREADABLE)
    for m in mailboxes:
        m.set_status("active")
    WebhookDelivery.objects.emit(ws_a, "webhook.test", {"last": True})  # the 19th
    expected = {ws.pk: WebhookDelivery.objects.filter(workspace=ws).count() for ws in (ws_a, ws_b)}
    assert expected == {ws_a.pk: 10, ws_b.pk: 9}

    simulated = 0
    attempts = 0
    while simulated < 5 * 60:  # retries 60 s, then 300 s apart: 5 minutes of outage
        attempts += 1

        def heads_failed(attempts=attempts):
            heads = WebhookDelivery.objects.filter(
                status="pending", attempts=attempts, lease_owner="", next_attempt_at__gt=now()
            )
            return list(heads) if len(heads) == 2 else None

        heads = wait_for(heads_failed, 30, f"attempt {attempts} of both heads to fail")
        assert {h.sequence for h in heads} == {1}  # the oldest of each workspace
        # Later events never went out while the head of their workspace failed.
        assert not WebhookDelivery.objects.filter(sequence__gt=1).exclude(attempts=0).exists()
        simulated += webhooks.RETRY_DELAYS[attempts - 1]  # what the schedule would wait
        if simulated < 5 * 60:  # time passes: the sweeper picks them up again
            WebhookDelivery.objects.filter(pk__in=[h.pk for h in heads]).update(
                next_attempt_at=now()
            )

    up = Receiver().start(port=port)  # back up, where the webhook points
    try:
        WebhookDelivery.objects.filter(status="pending").exclude(next_attempt_at=None).update(
            next_attempt_at=now()
        )
        wait_for(
            lambda: not WebhookDelivery.objects.exclude(status="delivered").exists(),
            60,
            "every delivery",
        )
    finally:
        up.stop()

    received: dict[str, list[int]] = {}
    for r in up.requests:
        received.setdefault(r.headers["X-Fleet-Delivery"], []).append(
            int(r.headers["X-Fleet-Sequence"])
        )
    assert len(received) == 19 and all(len(s) == 1 for s in received.values())  # each once
    per_workspace: dict[str, list[int]] = {}
    for r in up.requests:
        per_workspace.setdefault(json.loads(r.body)["workspace"]["slug"], []).append(
            int(r.headers["X-Fleet-Sequence"])
        )
    inversions = sum(
        1 for seqs in per_workspace.values() for a, b in itertools.pairwise(seqs) if b < a
    )
    stranded = WebhookDelivery.objects.exclude(status="delivered").count()
    print(
        f"\n[webhooks] receiver down {simulated / 60:.0f} simulated minutes: "
        f"{len(received)} events delivered once, stranded {stranded}, inversions {inversions}"
    )
    assert per_workspace == {"alpha": list(range(1, 11)), "beta": list(range(1, 10))}
    assert inversions == 0 and stranded == 0
    assert not DBTaskResult.objects.filter(task_path=send_webhooks.module_path, status="FAILED")
