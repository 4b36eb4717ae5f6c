"""Issue 12 item 3: token upkeep that scales, against the sandbox's identity platform over HTTPS.

(a) Microsoft token calls per OAuth mailbox per simulated day at rest: Fleet (tokens when a test
    needs one, a keep-alive every TOKEN_KEEPALIVE_DAYS otherwise) over two simulated weeks,
    beside today's design (every 5 minutes, refresh each access token expiring within 15
    minutes) simulated over one day in the same run, both with real token calls to the sandbox.
(b) The time to keep 100,000 OAuth mailboxes alive on one worker with the sandbox answering in
    150 ms per reply: a sample of SAMPLE mailboxes through the keep-alive tasks at
    TOKEN_REFRESH_CONCURRENCY, extrapolated to 100,000 (said in the row); the baseline is today's
    loop, one refresh after another, measured on BASELINE_SAMPLE and extrapolated the same way;
    the floor is 100,000 x 0.15 s / concurrency.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from tests.bench.runner import Row

CLIENT_ID = "11111111-2222-4333-8444-555555555555"
SECRET = "bench-secret-value"
FLEET = 100_000
LATENCY = 0.15
SAMPLE = int(os.environ.get("BENCH_TOKENS_SAMPLE", "3000"))
BASELINE_SAMPLE = 60
SIMULATED_DAYS = 14
AT_REST = 40  # mailboxes per population in (a)
OLD_TICK = timedelta(minutes=5)
OLD_AHEAD = timedelta(minutes=15)


def old_design_day(sandbox, mailboxes) -> float:
    """Today's rule over one simulated day: every 5 minutes, refresh every access token that
    expires within 15 minutes (each refresh is a real token call; the clock is simulated, and
    each new token expires `expires_in` after the tick that fetched it)."""
    from fleet.microsoft import identity

    app = identity.build_app(mailboxes[0].credential)
    start = timezone.now()
    state = {m.pk: [str(m.refresh_token), None] for m in mailboxes}  # token, expires (simulated)
    before = sandbox.counts["refresh"]
    for tick in range(int(timedelta(days=1) / OLD_TICK)):
        now = start + tick * OLD_TICK
        for entry in state.values():
            if entry[1] is None or entry[1] <= now + OLD_AHEAD:
                answer = app.acquire_token_by_refresh_token(entry[0], identity.OUTLOOK_SCOPES)
                assert "access_token" in answer, answer
                entry[0] = answer["refresh_token"]
                entry[1] = now + timedelta(seconds=int(answer["expires_in"]))
    return (sandbox.counts["refresh"] - before) / len(mailboxes)


def run() -> list[Row]:
    from fleet import tokens
    from fleet.microsoft import identity
    from fleet.models import Credential, Mailbox, Workspace
    from sandbox.server import Sandbox
    from tests.test_token_upkeep import a_day_passes, granted, keepalive_round

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as certs, Sandbox(cert_dir=certs) as sandbox:
        settings.MICROSOFT_AUTHORITY_HOST = sandbox.base_url
        settings.MICROSOFT_GRAPH_URL = sandbox.graph_url
        settings.MICROSOFT_CA_BUNDLE = sandbox.ca_file
        sandbox.directory.add_app(CLIENT_ID, SECRET, "Bench")
        workspace = Workspace.objects.create(name="Bench tokens", slug="bench-tokens")
        credential = Credential.objects.create(
            workspace=workspace,
            name="Bench OAuth",
            kind=Credential.Kind.OAUTH_APP,
            tenant_id="common",
            client_id=CLIENT_ID,
            client_secret=SECRET,
        )

        # (a) at rest -------------------------------------------------------------------------
        swept = granted(sandbox, credential, AT_REST, "daily")
        granted(sandbox, credential, AT_REST, "weekly")  # kept alive only
        calls = Counter()
        for _ in range(SIMULATED_DAYS):
            a_day_passes()
            before = sandbox.counts["refresh"]
            for mailbox in swept:  # the daily health sweep needs a token for each
                identity.access_token_for(Mailbox.objects.get(pk=mailbox.pk))
            calls["daily"] += sandbox.counts["refresh"] - before
            before = sandbox.counts["refresh"]
            keepalive_round()
            calls["weekly"] += sandbox.counts["refresh"] - before
        assert max(sandbox.identity.redemptions.values()) == 1
        daily = calls["daily"] / (AT_REST * SIMULATED_DAYS)
        weekly = calls["weekly"] / (AT_REST * SIMULATED_DAYS)
        both = (calls["daily"] + calls["weekly"]) / (2 * AT_REST * SIMULATED_DAYS)
        old = old_design_day(sandbox, granted(sandbox, credential, 20, "old"))
        scenario = (
            f"(a) token calls per OAuth mailbox per day at rest, {SIMULATED_DAYS} simulated "
            "days (baseline: today's 5-minute/15-minute refresh, one simulated day)"
        )
        keep_days = settings.TOKEN_KEEPALIVE_DAYS
        rows += [
            Row(scenario + ", swept daily", "calls/mailbox/day", round(daily, 2), old, 1),
            Row(
                scenario + f", cadence longer than {keep_days:g} days (keep-alive only)",
                "calls/mailbox/day",
                round(weekly, 2),
                old,
                round(1 / keep_days, 2),
            ),
            Row(scenario + ", half and half", "calls/mailbox/day", round(both, 2), old),
        ]
        Mailbox.objects.filter(workspace=workspace).delete()

        # (b) keeping 100,000 alive on one worker -------------------------------------------
        sandbox.switches.latency = LATENCY  # every reply, discovery included
        concurrency = settings.TOKEN_REFRESH_CONCURRENCY
        due = timezone.now() - timedelta(minutes=1)
        granted(sandbox, credential, SAMPLE, "keep", due=due)
        before, http_before = sandbox.counts["refresh"], sandbox.counts["http"]
        started, cpu = time.perf_counter(), time.process_time()
        counts = Counter()
        while True:  # the dispatcher's chunks, run one after another as one worker would
            handed = tokens.dispatch()
            counts.update(keepalive_round() if handed else {})
            if not handed:
                break
        fleet_time = time.perf_counter() - started
        cpu = time.process_time() - cpu
        assert counts == {"refreshed": SAMPLE}, counts
        assert sandbox.counts["refresh"] - before == SAMPLE
        replies = sandbox.counts["http"] - http_before

        baseline = granted(sandbox, credential, BASELINE_SAMPLE, "loop")
        app = identity.build_app(credential)  # today's loop: one msal application, one by one
        started = time.perf_counter()
        for mailbox in baseline:
            answer = app.acquire_token_by_refresh_token(
                str(mailbox.refresh_token), identity.OUTLOOK_SCOPES
            )
            assert "access_token" in answer, answer
            Mailbox.objects.filter(pk=mailbox.pk).update(
                refresh_token=answer["refresh_token"], access_token=answer["access_token"]
            )
        baseline_time = time.perf_counter() - started
        sandbox.switches.latency = 0

    per_second = SAMPLE / fleet_time
    print(
        f"   keep-alive: {SAMPLE} mailboxes in {fleet_time:.1f} s ({per_second:.0f}/s at "
        f"{concurrency} at a time, {replies} HTTP replies, {cpu / SAMPLE * 1000:.1f} ms CPU each); today's loop: {BASELINE_SAMPLE} in {baseline_time:.1f} s"
    )
    rows.append(
        Row(
            f"(b) keep {FLEET:,} OAuth mailboxes alive on one worker, {LATENCY * 1000:.0f} ms per "
            f"reply, {concurrency} at a time (measured on {SAMPLE:,}, extrapolated; baseline: "
            f"today's one-by-one loop, measured on {BASELINE_SAMPLE})",
            "wall time",
            round(fleet_time * FLEET / SAMPLE / 60, 1),
            round(baseline_time * FLEET / BASELINE_SAMPLE / 60, 1),
            floor=round(FLEET * LATENCY / concurrency / 60, 1),
            unit="min",
        )
    )
    return rows


if __name__ == "__main__":
    import sys

    from tests.bench.runner import main

    sys.exit(main(["bench_tokens"]))
