"""Issue 5: a Graph app-only bulk add of 500 mailboxes against the Microsoft sandbox with 50 ms
added to every reply, beside a naive client that makes one Graph request per call, one after
the other (same token, same HTTPS session, no database work), measured in the same run, and
beside the floor ceil(500/20) / 4 x round trip (every account in a batch of 20, four batches in
flight, one round trip each).

The list: 480 plain mailboxes, 10 aliases (an extra alias search each) and 10 without a licence.
Fleet needs two stages per account (user lookup, then mailbox settings or alias search), so two
batches per chunk of 20: expect about twice the floor.

`run()` returns rows for bin/bench (tests/bench/runner.py once on main); run this module on its
own (`python -m tests.bench.bench_bulk_add`, settings as for bin/test) to print the table.
"""

from __future__ import annotations

import contextlib
import math
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


def the_list(sandbox) -> list:
    from fleet.bulk_add import Account

    accounts = []
    for i in range(ACCOUNTS):
        email = f"bench{i:04d}@acme-outreach.com"
        if i % 50 == 7:  # an alias of another user
            sandbox.directory.add_user(f"owner{i:04d}@acme-outreach.com", aliases=[email])
        else:
            sandbox.directory.add_user(email, f"Bench {i}", mailbox=i % 50 != 11)
        accounts.append(Account(email, f"Bench {i}"))
    return accounts


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
    from fleet.bulk_add import execute, start_run
    from fleet.microsoft import graph
    from fleet.models import Credential, Workspace
    from sandbox.dns import SandboxDNS, Zone
    from sandbox.server import Sandbox

    zone = Zone()
    zone.add_microsoft_domain("acme-outreach.com")
    dns = SandboxDNS(zone).start()
    settings.DNS_NAMESERVERS, settings.DNS_PORT, settings.DNS_TIMEOUT = ["127.0.0.1"], dns.port, 2
    with tempfile.TemporaryDirectory() as certs, Sandbox(cert_dir=certs) as sandbox:
        settings.MICROSOFT_AUTHORITY_HOST = sandbox.base_url
        settings.MICROSOFT_GRAPH_URL = sandbox.graph_url
        settings.MICROSOFT_CA_BUNDLE = sandbox.ca_file
        sandbox.directory.add_app(CLIENT_ID, SECRET, "Bench")
        sandbox.directory.tenant(TENANT).consented_apps.add(CLIENT_ID)
        accounts = the_list(sandbox)
        workspace = Workspace.objects.create(name="Bench bulk add", slug="bench-bulk-add")
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
        sandbox.switches.update({"latency": LATENCY})

        # The round trip of one Graph reply, as the floor counts it.
        get = one_get(credential)
        trips = []
        for _ in range(10):
            started = time.perf_counter()
            get("/users/bench0000@acme-outreach.com")
            trips.append(time.perf_counter() - started)
        round_trip = statistics.median(trips)

        graph._tokens.clear()  # Fleet's run starts without a cached token, as in a fresh worker
        before = sandbox.counts["http"]
        started = time.perf_counter()
        run = execute(start_run(workspace, credential, accounts))
        fleet_time = time.perf_counter() - started
        fleet_requests = sandbox.counts["http"] - before
        assert run.processed == ACCOUNTS and run.connected == 480, (run.connected, run.failed)

        before = sandbox.counts["http"]
        started = time.perf_counter()
        naive_requests = naive(credential, accounts)
        naive_time = time.perf_counter() - started
        assert sandbox.counts["http"] - before == naive_requests
    dns.stop()

    batches = math.ceil(ACCOUNTS / 20)
    scenario = f"bulk add {ACCOUNTS} mailboxes, {LATENCY * 1000:.0f} ms per Graph reply"
    return [
        Row(scenario, "HTTP requests to Microsoft", fleet_requests, naive_requests, batches),
        Row(scenario, "wall time", fleet_time, naive_time, batches / 4 * round_trip, "s"),
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
