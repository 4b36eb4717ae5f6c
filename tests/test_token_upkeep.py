"""Token upkeep that scales (issue 12 item 3; issue 11's keep-alive kill test), against the
sandbox's identity platform over real HTTPS: at most one token call per mailbox per simulated
day at rest, rotated refresh tokens saved, one token call for many concurrent callers, a revoked
grant → `reauth_required` with its event, and a keep-alive run whose `db_worker` is killed with
SIGKILL finished by a new worker."""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from fleet import tokens
from fleet.errors import FleetError
from fleet.microsoft import identity
from fleet.models import Mailbox, MailboxEvent
from tests.test_job_recovery import (
    REAPER,
    Fleet,
    after_kill,
    assert_dead_task_failed_with_a_note,
    start_workers,
    takeover_limit,
    wait_for,
)
from tests.test_tokens import sandbox_env

DAY = timedelta(days=1)
SCOPES = [*identity.OUTLOOK_SCOPES, "offline_access", "openid", "profile"]


def granted(sandbox, credential, count: int, prefix: str, **fields) -> list[Mailbox]:
    """`count` OAuth mailboxes of the credential's workspace, each with a refresh token the
    sandbox issued to its own directory user (as a consent would leave them)."""
    now = timezone.now()
    due = fields.pop("due", None)
    rows = []
    for n in range(count):
        email = f"{prefix}{n:03}@acme-outreach.com"
        sandbox.directory.add_user(email, f"{prefix.title()} {n}")
        token = secrets.token_urlsafe(48)
        sandbox.identity.put(
            sandbox.identity.refresh_tokens,
            token,
            {"username": email, "client_id": credential.client_id, "scopes": SCOPES},
        )
        rows.append(
            Mailbox(
                workspace=credential.workspace,
                email=email,
                auth_method=Mailbox.AuthMethod.OAUTH,
                credential=credential,
                refresh_token=token,
                refresh_token_used_at=now,
                token_keepalive_due_at=due or identity.next_keepalive(now),
                **{"status": Mailbox.Status.ACTIVE, **fields},
            )
        )
    Mailbox.objects.bulk_create(rows)
    return list(Mailbox.objects.filter(email__startswith=prefix).order_by("email"))


def a_day_passes() -> None:
    """Move every stored time a day into the past: what a day at rest does to the rows."""
    Mailbox.objects.update(
        token_expires_at=F("token_expires_at") - DAY,
        refresh_token_used_at=F("refresh_token_used_at") - DAY,
        token_keepalive_due_at=F("token_keepalive_due_at") - DAY,
    )


def keepalive_round() -> Counter:
    """One dispatch, and its keep-alive tasks run here (as a worker would run them)."""
    counts: Counter = Counter()
    tokens.dispatch()
    queued = set(
        Mailbox.objects.filter(token_lease_owner__startswith="queued-").values_list(
            "token_lease_owner", flat=True
        )
    )
    for owner in queued:
        counts.update(tokens.run(owner, owner=f"local-{uuid.uuid4().hex}"))
    return counts


@pytest.mark.django_db(transaction=True)
def test_at_rest_each_mailbox_costs_at_most_one_token_call_a_day(sandbox, oauth_app, settings):
    """Two weeks at rest: mailboxes swept daily refresh once a day when the sweep needs a token;
    mailboxes on a monthly cadence are kept alive once a week; nothing else calls Microsoft."""
    settings.TOKEN_KEEPALIVE_DAYS = 7
    swept = granted(sandbox, oauth_app, 10, "daily")
    resting = granted(sandbox, oauth_app, 10, "weekly")
    days = 14
    kept = Counter()
    for _ in range(days):
        a_day_passes()
        for mailbox in swept:  # the daily health sweep needs one token per mailbox
            identity.access_token_for(Mailbox.objects.get(pk=mailbox.pk))
        kept.update(keepalive_round())

    calls = sandbox.counts["refresh"]
    per_mailbox_day = calls / ((len(swept) + len(resting)) * days)
    print(f"\n[tokens] {calls} token calls, {per_mailbox_day:.2f} per mailbox per simulated day")
    assert per_mailbox_day <= 1
    # Swept mailboxes: one call a day each, and the sweep's refreshes push their keep-alive on.
    assert kept["refreshed"] == 2 * len(resting)  # 5.25 to 7 days apart: twice in 14 days
    assert calls == days * len(swept) + 2 * len(resting)
    # Every issued refresh token was redeemed once at most, and the saved ones still work.
    assert max(sandbox.identity.redemptions.values()) == 1
    for mailbox in Mailbox.objects.filter(pk__in=[m.pk for m in resting]):
        assert mailbox.refresh_token_used_at > timezone.now() - timedelta(days=7)
        assert mailbox.token_keepalive_due_at > timezone.now()
        assert not mailbox.token_lease_owner


@pytest.mark.django_db(transaction=True)
def test_keepalive_saves_the_rotated_token_old_one_refused_new_one_works(sandbox, oauth_app):
    (ava,) = granted(sandbox, oauth_app, 1, "rotate", due=timezone.now() - timedelta(minutes=1))
    old = str(ava.refresh_token)
    assert keepalive_round() == {"refreshed": 1}
    ava.refresh_from_db()
    new = str(ava.refresh_token)
    assert new not in ("", old) and ava.access_token and not ava.token_lease_owner
    assert ava.token_expires_at > timezone.now() + timedelta(minutes=50)
    assert ava.refresh_token_used_at > timezone.now() - timedelta(minutes=1)
    app = identity.build_app(oauth_app)
    spent = app.acquire_token_by_refresh_token(old, identity.OUTLOOK_SCOPES)
    assert spent["error"] == "invalid_grant"  # the sandbox rotates strictly
    assert "access_token" in app.acquire_token_by_refresh_token(new, identity.OUTLOOK_SCOPES)


@pytest.mark.django_db(transaction=True)
def test_concurrent_callers_share_one_token_call(sandbox, oauth_app):
    (ava,) = granted(sandbox, oauth_app, 1, "shared")
    sandbox.switches.token_latency = 0.3  # the first refresh is still out when others ask
    callers = 12
    start = threading.Barrier(callers)
    answers: list[str] = []
    failures: list[BaseException] = []

    def caller(n: int) -> None:
        try:
            mailbox = Mailbox.objects.get(pk=ava.pk)  # its access token is missing: refresh
            start.wait()
            # Staggered over the refresh: some ask while it is out, some just as it is saved
            # (read stale, then find the lease free again), some after.
            time.sleep(n * 0.05)
            answers.append(identity.access_token_for(mailbox))
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert sandbox.counts["refresh"] == 1
    ava.refresh_from_db()
    assert answers == [str(ava.access_token)] * callers and not ava.token_lease_owner
    # Fresh now: the next caller gets the saved token without calling Microsoft.
    assert identity.access_token_for(ava) == answers[0] and sandbox.counts["refresh"] == 1


@pytest.mark.django_db(transaction=True)
def test_revoked_grant_needs_reauth_with_a_status_event_and_leaves_the_keepalive(
    sandbox, oauth_app
):
    due = timezone.now() - timedelta(minutes=1)
    boxes = granted(sandbox, oauth_app, 3, "revoke", due=due)
    sandbox.switches.revoked = {boxes[1].email}  # e.g. its password was reset
    assert keepalive_round() == {"refreshed": 2, "reauth_required": 1}
    revoked = Mailbox.objects.get(pk=boxes[1].pk)
    assert revoked.status == "reauth_required" and revoked.error_code == "REAUTH_REQUIRED"
    assert "AADSTS50173" in revoked.error_message
    assert revoked.token_keepalive_due_at is None and not revoked.token_lease_owner
    event = MailboxEvent.objects.get(mailbox=revoked, kind=MailboxEvent.Kind.STATUS)
    assert (event.from_status, event.to_status, event.error_code) == (
        "active",
        "reauth_required",
        "REAUTH_REQUIRED",
    )
    # Not asked again: the keep-alive has nothing left to do, a caller gets the error at once.
    calls = sandbox.counts["refresh"]
    assert keepalive_round() == {}
    with pytest.raises(FleetError) as failure:
        identity.access_token_for(revoked)
    assert failure.value.code == "REAUTH_REQUIRED" and sandbox.counts["refresh"] == calls
    assert MailboxEvent.objects.filter(mailbox=revoked).count() == 1


@pytest.mark.django_db(transaction=True)
def test_dispatch_claims_due_rows_in_chunks_and_once(sandbox, oauth_app, settings):
    settings.TOKEN_KEEPALIVE_CHUNK = 4
    granted(sandbox, oauth_app, 10, "due", due=timezone.now() - timedelta(minutes=5))
    later = granted(sandbox, oauth_app, 3, "later")
    disabled = granted(sandbox, oauth_app, 1, "off", due=timezone.now(), status="disabled")
    assert tokens.dispatch() == 10
    owners = Counter(
        Mailbox.objects.exclude(token_lease_owner="").values_list("token_lease_owner", flat=True)
    )
    assert sorted(owners.values()) == [2, 4, 4]  # three tasks queued
    queued = DBTaskResult.objects.filter(task_path="fleet.tasks.keep_tokens_alive")
    assert sorted(t.args_kwargs["args"][0] for t in queued) == sorted(owners)
    assert tokens.dispatch() == 0  # held: a second dispatcher (another host) takes none
    assert not Mailbox.objects.filter(pk__in=[m.pk for m in later]).exclude(token_lease_owner="")
    # A disabled mailbox leaves the due index instead of being read again every minute.
    assert Mailbox.objects.get(pk=disabled[0].pk).token_keepalive_due_at is None
    assert sandbox.counts["refresh"] == 0  # dispatching calls nobody


# --- kill -9 of a worker in the middle of a keep-alive run ---------------------------------------
@pytest.mark.skipif(
    "postgres" not in os.environ.get("DATABASE_URL", ""),
    reason="kill -9 recovery is shown on PostgreSQL (DATABASE_URL=postgres://…)",
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["restart", "survivor"])
def test_keepalive_killed_mid_run_is_finished_by_a_new_worker(
    sandbox, oauth_app, settings, monkeypatch, mode
):
    from tests.test_job_recovery import LEASE

    settings.JOB_LEASE_SECONDS = LEASE
    concurrency, total, latency = 4, 60, 0.25
    sandbox_env(sandbox, monkeypatch)
    monkeypatch.setenv("TOKEN_REFRESH_CONCURRENCY", str(concurrency))
    monkeypatch.setenv("TOKEN_KEEPALIVE_CHUNK", str(total))
    boxes = granted(sandbox, oauth_app, total, "kill", due=timezone.now() - timedelta(minutes=1))
    started = max(b.refresh_token_used_at for b in boxes)
    sandbox.switches.token_latency = latency  # the run takes total * latency / concurrency
    # As at Microsoft, a used refresh token stays valid: a redemption that was on the wire when
    # its worker died may be tried again (its answer, the rotated token, never arrived).
    sandbox.switches.keep_used_refresh_tokens = True

    fleet = Fleet()
    try:
        start_workers(fleet, mode)  # one worker (a new one after the kill), or two at once
        fleet.reaper()  # the dispatch and the reaper, every REAPER seconds
        wait_for(lambda: sandbox.counts["refresh"] >= 3 * concurrency, 60, "refreshes to begin")
        holder = (
            Mailbox.objects.exclude(token_lease_owner="")
            .exclude(token_lease_owner__startswith="queued-")
            .values_list("token_lease_owner", flat=True)
            .first()
        )
        assert holder, "no keep-alive task holds the mailboxes"
        killed = fleet.kill(DBTaskResult.objects.get(id=holder).worker_ids[-1])
        at_kill = sandbox.counts["refresh"]
        left = Mailbox.objects.filter(token_lease_owner=holder).count()
        assert 0 < left < total, "the run ended before the kill: nothing was shown"
        after_kill(fleet, mode)

        def done() -> bool:
            kept = Mailbox.objects.filter(
                pk__in=[b.pk for b in boxes],
                refresh_token_used_at__gt=started,
                token_keepalive_due_at__gt=timezone.now() + timedelta(days=5),
            )
            return kept.count() == total

        wait_for(done, 90, "the keep-alive to finish")
        finished = time.monotonic() - killed
        limit = takeover_limit(mode, killed) + left * latency / concurrency + REAPER
    finally:
        fleet.stop()
    print(
        f"\n[recovery] token keep-alive ({mode}): {left} of {total} mailboxes left at kill -9, all "
        f"refreshed {finished:.1f} s after it (lease {LEASE:.0f} s + reaper {REAPER:.0f} s)"
    )
    assert finished < limit, f"finished {finished:.1f} s after the kill"
    assert_dead_task_failed_with_a_note(holder)
    rows = Mailbox.objects.filter(pk__in=[b.pk for b in boxes])
    assert set(rows.values_list("status", flat=True)) == {"active"}
    assert not rows.exclude(token_lease_owner="").exists()
    soon = [
        (r.email, r.token_keepalive_due_at, r.refresh_token_used_at)
        for r in rows
        if r.token_keepalive_due_at <= timezone.now() + timedelta(days=5)
    ]
    assert not soon, soon
    # Each mailbox's refresh token was redeemed once, except those whose answer was still on the
    # wire at the kill (at most one per thread of the dead worker), which were tried once more.
    issued = {str(b.refresh_token) for b in boxes}
    redeemed = {t: n for t, n in sandbox.identity.redemptions.items() if t in issued}
    assert set(redeemed) == issued
    twice = [t for t, n in redeemed.items() if n > 1]
    print(f"[recovery] {len(twice)} refresh tokens were on the wire at the kill and sent again")
    assert max(redeemed.values()) <= 2 and len(twice) <= concurrency
    assert sandbox.counts["refresh"] - at_kill <= left + concurrency
    # Tokens saved after a redemption are never redeemed again.
    saved = {str(r.refresh_token) for r in rows}
    assert not [t for t in saved if sandbox.identity.redemptions[t]]
