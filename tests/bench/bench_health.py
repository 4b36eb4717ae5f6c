"""Issue 12 (2): a health sweep of 5,000 mailboxes on one worker against the loopback SMTP/IMAP
servers with 100 ms before every reply (the sandbox's latency switch), beside today's path (the
20-thread pool of `mailbox_checks.check_mailboxes`, one transaction per result) in the same run.

The mail servers run in child processes (on the same machine), so that the worker's figure is
the worker's: its threads do not share an interpreter with the servers'. Fleet's sweep is what a
worker does with its `test_due_mailboxes` tasks: claim a chunk (HEALTH_CHECK_CHUNK), test it
HEALTH_CHECK_CONCURRENCY at a time under the per-host and per-tenant caps, record each result
under its lease, then the next chunk. The mailboxes are spread over 250 mail domains (tenants).

Today's pool takes ~50 s per 1,000 mailboxes here, so by default the baseline runs on 1,000
mailboxes and is scaled to 5,000 (BENCH_FULL=1 runs all 5,000). The floor is the latency bound
at the configured concurrency: 9 replies of 100 ms per mailbox, CONCURRENCY mailboxes at once.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time

from django.conf import settings
from django.utils import timezone

from fleet import health
from fleet.mailbox_checks import check_mailboxes
from fleet.models import Mailbox, MailboxEvent, Workspace
from tests.bench.runner import Row

MAILBOXES = int(os.environ.get("BENCH_HEALTH_MAILBOXES", 5000))
DOMAINS = 250
DELAY = 0.1
# Replies that each wait DELAY: SMTP greeting, EHLO, STARTTLS, EHLO, AUTH, QUIT; IMAP greeting,
# LOGIN, LOGOUT.
REPLIES_PER_MAILBOX = 9
OLD_POOL = 20
# The mail servers' processes (each one asyncio loop): Exchange Online is many machines, and one
# Python loop doing every TLS handshake would measure the test server, not Fleet.
SERVER_PROCESSES = 2


def email(i: int) -> str:
    return f"box{i}@tenant{i % DOMAINS}.example"


def serve(count: int, delay: float, pipe, part: int, parts: int, ca) -> None:
    """A child process: mail servers (one asyncio loop) with their share of the bench accounts,
    until told to stop."""
    from sandbox.mailservers import MailServers

    with MailServers(reply_delay=delay, ca=ca) as servers:
        for i in range(part, count, parts):
            servers.add(email(i), f"pw-{i}")
        pipe.send((servers.host, servers.smtp_port, servers.imap_port, servers.ca_file))
        pipe.recv()  # stop


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run() -> list[Row]:
    sample = MAILBOXES if os.environ.get("BENCH_FULL") else min(1000, MAILBOXES)
    total = MAILBOXES + sample
    import trustme

    fork = multiprocessing.get_context("fork")
    ca = trustme.CA()  # one CA for every server process
    pipes, children = [], []
    for part in range(SERVER_PROCESSES):
        parent, child = fork.Pipe()
        process = fork.Process(
            target=serve, args=(total, DELAY, child, part, SERVER_PROCESSES, ca), daemon=True
        )
        process.start()
        pipes.append(parent)
        children.append(process)
    try:
        addresses = [pipe.recv() for pipe in pipes]
        ca_file = addresses[0][3]
        settings.MAIL_TLS_CA_FILE = ca_file
        settings.MAIL_TIMEOUT = 30
        sweep_ws = Workspace.objects.create(name="Bench sweep", slug="bench-sweep")
        old_ws = Workspace.objects.create(name="Bench pool", slug="bench-pool")
        Mailbox.objects.bulk_create(
            Mailbox(
                workspace=sweep_ws if i < MAILBOXES else old_ws,
                email=email(i),
                auth_method="app_password",
                password=f"pw-{i}",
                status="active",
                smtp_host=addresses[i % SERVER_PROCESSES][0],
                smtp_port=addresses[i % SERVER_PROCESSES][1],
                imap_host=addresses[i % SERVER_PROCESSES][0],
                imap_port=addresses[i % SERVER_PROCESSES][2],
            )
            for i in range(total)
        )
        # Fleet: every mailbox of the workspace due now, then one worker's chunks in turn.
        queued = Mailbox.objects.filter(workspace=sweep_ws).update(check_due_at=timezone.now())
        assert queued == MAILBOXES
        rss_before = peak_rss_mb()
        cpu_before = time.process_time()
        started = time.perf_counter()
        outcome: dict[str, int] = {}
        while True:
            chunk = health.run_due("bench-worker")
            if not chunk:
                break
            for key, n in chunk.items():
                outcome[key] = outcome.get(key, 0) + n
        fleet_time = time.perf_counter() - started
        fleet_cpu = time.process_time() - cpu_before
        fleet_rss = peak_rss_mb()
        if outcome != {"active": MAILBOXES}:
            from django.db.models import Count

            twice = (
                MailboxEvent.objects.filter(workspace=sweep_ws, kind="connection_test")
                .values("email")
                .annotate(n=Count("id"))
                .filter(n__gt=1)
            )
            for row in twice[:3]:
                print(row, list(MailboxEvent.objects.filter(email=row["email"]).values_list(
                    "created_at", "error_code", "message")))
        assert outcome == {"active": MAILBOXES}, outcome
        assert (
            MailboxEvent.objects.filter(workspace=sweep_ws, kind="connection_test").count()
            == MAILBOXES
        )

        # Today: the 20-thread pool over the same kind of mailboxes.
        old_ids = list(
            Mailbox.objects.filter(workspace=old_ws).order_by("pk").values_list("pk", flat=True)
        )
        started = time.perf_counter()
        old = check_mailboxes(old_ids[:sample], concurrency=OLD_POOL)
        baseline_time = (time.perf_counter() - started) * MAILBOXES / sample
        assert old == {"active": sample}, old
    finally:
        for pipe, process in zip(pipes, children, strict=True):
            pipe.send("stop")
            process.join(timeout=30)

    concurrency = settings.HEALTH_CHECK_CONCURRENCY
    floor_time = MAILBOXES / concurrency * REPLIES_PER_MAILBOX * DELAY
    label = f"today's {OLD_POOL}-thread pool" + (
        "" if sample == MAILBOXES else f", measured on {sample:,} x{MAILBOXES // sample}"
    )
    print(
        f"\n[bench_health] sweep {MAILBOXES / fleet_time:.0f} mailboxes/s "
        f"({fleet_time:.1f} s), {label}: {MAILBOXES / baseline_time:.0f}/s, floor "
        f"{MAILBOXES / floor_time:.0f}/s; worker peak RSS {fleet_rss:.0f} MB "
        f"(before the sweep {rss_before:.0f} MB), worker CPU {fleet_cpu:.0f} s over "
        f"{fleet_time:.0f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    scenario = (
        f"health sweep of {MAILBOXES:,} mailboxes, 100 ms per reply, {concurrency} at a time "
        f"(baseline: {label})"
    )
    return [
        Row(scenario, "wall time", round(fleet_time, 1), round(baseline_time, 1),
            floor=round(floor_time, 1), unit="s"),
        Row(scenario, "mailboxes/s (higher is better)", round(MAILBOXES / fleet_time),
            round(MAILBOXES / baseline_time), floor=round(MAILBOXES / floor_time), unit="/s"),
        Row(scenario, "worker peak RSS", round(fleet_rss), round(fleet_rss),
            floor=round(rss_before), unit="MB"),
    ]  # fmt: skip
