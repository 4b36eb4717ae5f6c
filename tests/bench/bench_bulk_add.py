"""Issue 5, then issue 15: a Graph app-only bulk add of 500 mailboxes against the Microsoft
sandbox with 50 ms added to every reply, beside a naive client that makes one Graph request per
call, one after the other (same token, same HTTPS session, no database work), measured in the
same run, and beside the floor.

The list: 480 plain mailboxes, 10 aliases (an extra alias search each) and 10 without a licence.
Fleet needs two stages per account (user lookup, then mailbox settings or alias search): 1,000
Graph requests, so at least 50 `$batch` requests of 20; four in flight, one round trip each, the
floor is 50 / 4 x round trip (plus the token's own round trip, which Fleet needs first).

The sandbox runs in a process of its own (`serve_sandbox`): in Fleet's process its TLS and JSON
work would compete with Fleet's threads for the GIL and slow Fleet's figure down. Switches and
counts go over a pipe.

Where the time went (issue 15; cProfile and timestamps of every batch and write): the sandbox,
in Fleet's process, took ~12 ms of CPU per `$batch` (a token signature check and a scan of every
user's id, a uuid5 each, per inner request; every inner answer encoded twice) and held the GIL
Fleet's threads needed; each chunk of 20 waited for its own two stages on one of four threads;
and each chunk's write (13 statements, a commit) ran every 20 accounts. Now the sandbox runs in
its own process and answers a batch in ~4 ms, every account's next request joins one queue the
moment its answer is in and every free slot takes 20 queued requests of any stage
(`GraphClient.flow`), and the answers are read on a thread of their own while the task writes
the finished accounts. Then (timestamps again): the writes went by COPY (fleet/inserts.py), a
batch's worth at a time (groups of 100 had left up to 180 accounts to write after the last
answer), and a full garbage collection no longer stops the batches for ~100 ms (`gc.freeze()`).
What is left beside Graph's 13 rounds (12.5 rounds of work at four batches of 20): `start_run`
(~11 ms), the claim and the pending rows (~6 ms), the last group's write (20 to 30 ms) and, cold,
the token (discovery + token request).

`run()` returns rows for bin/bench (tests/bench/runner.py); run this module on its own
(`python -m tests.bench.bench_bulk_add`, settings as for bin/test) to print the table.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import statistics
import tempfile
import time
from datetime import date, timedelta

from django.conf import settings

from tests.bench.runner import Row

ACCOUNTS = 500
LATENCY = 0.05
TENANT = "3f2b8c1e-5a9d-4e7b-9c3a-acme0000a001"
CLIENT_ID = "bench000-0000-4000-8000-000000000005"
SECRET = "bench-secret"


def the_emails() -> list[tuple[str, str, dict]]:
    """(address, display name, how the sandbox's directory holds it) for every account."""
    rows = []
    for i in range(ACCOUNTS):
        email = f"bench{i:04d}@acme-outreach.com"
        if i % 50 == 7:  # an alias of another user
            rows.append((email, f"Bench {i}", {"alias_of": f"owner{i:04d}@acme-outreach.com"}))
        else:
            rows.append((email, f"Bench {i}", {"mailbox": i % 50 != 11}))
    return rows


def serve_sandbox(conn, cert_dir: str) -> None:
    """The sandbox (HTTPS identity + Graph, and DNS) in this process, seeded with the bench's
    directory; answers ("switches", dict), ("counts", None) and ("stop", None) over `conn`."""
    from sandbox.dns import SandboxDNS, Zone
    from sandbox.server import Sandbox

    zone = Zone()
    zone.add_microsoft_domain("acme-outreach.com")
    dns = SandboxDNS(zone).start()
    with Sandbox(cert_dir=cert_dir) as sandbox:
        sandbox.directory.add_app(CLIENT_ID, SECRET, "Bench")
        sandbox.directory.tenant(TENANT).consented_apps.add(CLIENT_ID)
        for email, name, how in the_emails():
            if "alias_of" in how:
                sandbox.directory.add_user(how["alias_of"], aliases=[email])
            else:
                sandbox.directory.add_user(email, name, mailbox=how["mailbox"])
        conn.send(
            {
                "base_url": sandbox.base_url,
                "graph_url": sandbox.graph_url,
                "ca_file": sandbox.ca_file,
                "dns_port": dns.port,
            }
        )
        while True:
            command, argument = conn.recv()
            if command == "stop":
                break
            with sandbox.lock:
                if command == "switches":
                    sandbox.switches.update(argument)
                    conn.send(None)
                elif command == "counts":
                    conn.send(dict(sandbox.counts))
    dns.stop()


class SandboxProcess:
    """The bench's sandbox in a process of its own (spawned: nothing of Django's state)."""

    def __init__(self, cert_dir: str):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve_sandbox, args=(child, cert_dir), daemon=True)

    def __enter__(self) -> SandboxProcess:
        self.process.start()
        if not self.conn.poll(60):
            raise RuntimeError("the sandbox process did not start")
        self.urls = self.conn.recv()
        return self

    def ask(self, command: str, argument=None):
        self.conn.send((command, argument))
        return self.conn.recv()

    def __exit__(self, *exc) -> None:
        self.conn.send(("stop", None))
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


def naive(credential, accounts: list) -> int:
    """One request per call, in sequence: lookup, then alias search or mailbox settings; through
    Fleet's HTTP chokepoint with one token and one HTTPS session, no retries."""
    from fleet.microsoft import graph
    from fleet.microsoft.graph import odata_string, user_path

    get = one_get(credential)
    requests = 0
    for account in accounts:
        requests += 1
        try:
            user = get(f"{user_path(account.email)}?$select=id,displayName,mail")
        except graph.MicrosoftError as error:
            if error.status != 404:
                continue
            requests += 1
            expression = f"proxyAddresses/any(x:x eq {odata_string('smtp:' + account.email)})"
            get(
                f"/users?$filter={expression}&$count=true",
                headers={"ConsistencyLevel": "eventual"},
            )
            continue
        requests += 1
        with contextlib.suppress(graph.MicrosoftError):  # unlicensed: counted all the same
            get(f"{user_path(user['id'])}/mailboxSettings")
    return requests


def one_get(credential):
    """`get(path, headers=None)`: one Graph GET, the decoded body or MicrosoftError."""
    from fleet.microsoft.graph import app_token
    from fleet.microsoft.http import MicrosoftSession, request_json

    session, token = MicrosoftSession(), app_token(credential)

    def get(path: str, headers: dict[str, str] | None = None):
        return request_json(
            "GET",
            settings.MICROSOFT_GRAPH_URL + path,
            access_token=token,
            session=session,
            headers=headers or {},
        )

    return get


def run() -> list[Row]:
    # Imported here: `python -m tests.bench.bench_bulk_add` sets Django up first.
    from fleet.bulk_add import Account, execute, start_run
    from fleet.microsoft import graph
    from fleet.models import Credential, Workspace

    with tempfile.TemporaryDirectory() as certs, SandboxProcess(certs) as sandbox:
        urls = sandbox.urls
        settings.DNS_NAMESERVERS, settings.DNS_PORT, settings.DNS_TIMEOUT = (
            ["127.0.0.1"],
            urls["dns_port"],
            2,
        )
        settings.MICROSOFT_AUTHORITY_HOST = urls["base_url"]
        settings.MICROSOFT_GRAPH_URL = urls["graph_url"]
        settings.MICROSOFT_CA_BUNDLE = urls["ca_file"]
        accounts = [Account(email, name) for email, name, _ in the_emails()]
        sandbox.ask("switches", {"latency": LATENCY})

        def fleet_run(n: int, shared: bool) -> tuple[float, int, Credential]:
            """One bulk add into a workspace of its own, by a worker process that has nothing in
            memory (no token, no discovery answer): with `shared`, the token another process
            fetched (the credential's verification) is in Django's cache; without, nowhere."""
            workspace = Workspace.objects.create(name=f"Bench bulk add {n}", slug=f"bench-{n}")
            credential = Credential.objects.create(
                workspace=workspace,
                name="Bench",
                kind=Credential.Kind.GRAPH_APP_ONLY,
                tenant_id=TENANT,
                client_id=CLIENT_ID,
                client_secret=SECRET,
                secret_expires_at=date.today() + timedelta(days=365),
                status=Credential.Status.VALID,
            )
            graph.forget_token(credential)  # a token of an earlier run's sandbox, same pk
            graph.app_token(credential)  # as the admin's "Verify" does
            if not shared:
                graph.forget_token(credential)
            graph.forget_all_tokens()  # this process's memory: a fresh worker
            before = sandbox.ask("counts")
            started = time.perf_counter()
            run = execute(start_run(workspace, credential, accounts))
            elapsed = time.perf_counter() - started
            after = sandbox.ask("counts")
            assert run.processed == ACCOUNTS and run.connected == 480, (run.connected, run.failed)
            assert after["batch_in_flight_max"] == 4, after  # the four slots were used
            return elapsed, after["http"] - before.get("http", 0), credential

        # The round trip of one Graph reply, as the floor counts it.
        _, _, credential = fleet_run(0, True)  # warms up both sides (imports, TLS, the database)
        get = one_get(credential)
        trips = []
        for _ in range(10):
            started = time.perf_counter()
            get("/users/bench0000@acme-outreach.com")
            trips.append(time.perf_counter() - started)
        round_trip = statistics.median(trips)

        shared_runs = [fleet_run(n, True) for n in range(1, 4)]
        cold_runs = [fleet_run(n, False) for n in range(4, 7)]
        fleet_time = statistics.median(t for t, _, _ in shared_runs)
        cold_time = statistics.median(t for t, _, _ in cold_runs)
        fleet_requests = max(r for _, r, _ in shared_runs)
        cold_requests = max(r for _, r, _ in cold_runs)

        before = sandbox.ask("counts")["http"]
        started = time.perf_counter()
        naive_requests = naive(credential, accounts)
        naive_time = time.perf_counter() - started
        assert sandbox.ask("counts")["http"] - before == naive_requests

    batches = 2 * math.ceil(ACCOUNTS / 20)  # two stages of 20 per $batch
    scenario = f"bulk add {ACCOUNTS} mailboxes, {LATENCY * 1000:.0f} ms per Graph reply"
    floor = batches / 4 * round_trip
    cold = f"{scenario}, no token anywhere (discovery + token first)"
    return [
        Row(scenario, "HTTP requests to Microsoft", fleet_requests, naive_requests, batches),
        Row(scenario, "wall time", fleet_time, naive_time, floor, "s"),
        Row(cold, "HTTP requests to Microsoft", cold_requests, naive_requests, batches + 2),
        Row(cold, "wall time", cold_time, naive_time, floor + 2 * round_trip, "s"),
    ]


def markdown(rows: list[Row]) -> str:
    def fmt(value, unit):
        if value is None:
            return "—"
        text = f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
        return f"{text} {unit}".strip()

    lines = [
        "| scenario | metric | Fleet | naive baseline | baseline ÷ Fleet | floor |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.metric} | {fmt(r.fleet, r.unit)} | {fmt(r.baseline, r.unit)} "
            f"| {r.ratio} | {fmt(r.floor, r.unit)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    setup_test_environment()
    databases = setup_databases(verbosity=0, interactive=False)
    try:
        print(markdown(run()))
    finally:
        teardown_databases(databases, verbosity=0)
