"""The Graph bulk-add fixes of issue 13 against the Microsoft sandbox (HTTPS on loopback) and its
DNS server: a sign-in name (UPN) that is not the mail address, an OAuth mailbox kept, the last
pass for throttled accounts, one token call under a renewal race, and a run Graph refused for a
missing application permission reported as the credential's problem."""

import pytest

from fleet import errors
from fleet.api.bulk import BulkAddResultSerializer
from fleet.bulk_add import Account, execute, start_run
from fleet.microsoft.graph import GraphClient, GraphRequest
from fleet.models import BulkAddRun, Credential, Mailbox, MailboxEvent
from tests.test_bulk_add import (  # noqa: F401  (fixtures)
    CLIENT_ID,
    SECRET,
    by_email,
    dns_zone,
    fresh_tokens,
    graph_credential,
    run_list,
    tenant,
)

VICTOR = "victor.ng@acme-outreach.com"
VICTOR_UPN = "vng@acme-outreach.onmicrosoft.com"  # his sign-in name (sandbox/directory.json)


# --- UPN ≠ mail ------------------------------------------------------------------------------------
def test_a_sign_in_name_is_stored_under_the_mail_address_once(graph_credential, sandbox):
    victor = sandbox.directory.user(VICTOR)
    assert victor.user_principal_name == VICTOR_UPN  # the sandbox's user whose UPN differs
    victor.aliases.append("v.ng@acme-outreach.com")
    run = run_list(
        graph_credential,
        [(VICTOR_UPN, ""), (VICTOR, "Victor N."), ("v.ng@acme-outreach.com", "")],
    )
    assert (run.connected, run.failed) == (2, 1)
    mailbox = Mailbox.objects.get()  # one mailbox for the user, under his mail address
    assert (mailbox.email, mailbox.graph_user_id, mailbox.auth_method) == (
        VICTOR,
        victor.oid,
        "graph_app_only",
    )
    results = by_email(run)
    upn, mail, alias = results[VICTOR_UPN], results[VICTOR], results["v.ng@acme-outreach.com"]
    assert upn.success and upn.mailbox_id == mail.mailbox_id == mailbox.pk
    assert upn.error_detail == (
        f"{VICTOR_UPN} is the sign-in name (UPN) of {VICTOR}: the mailbox is stored under its "
        "mail address"
    )
    # Deliverability is the mail address's domain's, not the onmicrosoft.com one's.
    assert (upn.spf_correct, upn.dkim_correct, upn.dmarc_correct, upn.mx_correct) == (
        True,
        True,
        True,
        True,
    )
    assert (alias.error_code, alias.error_detail) == ("WRONG_ALIAS", f"primary address: {VICTOR}")


def test_the_upn_and_the_mail_address_in_separate_runs_make_one_mailbox(graph_credential, sandbox):
    first = run_list(graph_credential, [(VICTOR_UPN, "")])
    second = run_list(graph_credential, [(VICTOR, "")])
    assert first.connected == second.connected == 1
    assert Mailbox.objects.count() == 1
    assert by_email(first)[VICTOR_UPN].mailbox_id == by_email(second)[VICTOR].mailbox_id


def test_a_mailbox_is_matched_by_its_graph_user_id(graph_credential, sandbox, ws_a):
    # Stored under the UPN by an older Fleet: found again by Graph user id, not duplicated.
    old = Mailbox.objects.create(
        workspace=ws_a,
        email=VICTOR_UPN,
        auth_method="graph_app_only",
        graph_user_id=sandbox.directory.user(VICTOR).oid,
    )
    run = run_list(graph_credential, [(VICTOR, "Victor Ng")])
    assert run.connected == 1 and Mailbox.objects.count() == 1
    assert by_email(run)[VICTOR].mailbox_id == old.pk


def test_graph_finds_users_by_sign_in_name_not_mail(graph_credential, sandbox):
    answers = GraphClient(graph_credential).send(
        [GraphRequest("upn", f"/users/{VICTOR_UPN}"), GraphRequest("mail", f"/users/{VICTOR}")]
    )
    assert answers["upn"].ok and answers["upn"].body["mail"] == VICTOR
    assert answers["upn"].body["userPrincipalName"] == VICTOR_UPN
    assert answers["mail"].status == 404  # Graph's /users/{key} takes an id or a UPN


# --- an OAuth mailbox kept ----------------------------------------------------------------------
@pytest.fixture
def oauth_ava(ws_a):
    return Mailbox.objects.create(
        workspace=ws_a,
        email="ava@acme-outreach.com",
        auth_method="oauth",
        status="active",
        refresh_token="rt-of-ava",
        display_name="Ava (OAuth)",
    )


def test_an_oauth_mailbox_is_kept_and_reported(graph_credential, oauth_ava, personas):
    run = run_list(
        graph_credential,
        [("ava@acme-outreach.com", "Ava"), ("ben@acme-outreach.com", "")],
        personas["alice"],
    )
    assert (run.outcome, run.connected, run.failed) == ("partly_connected", 1, 1)
    ava = by_email(run)["ava@acme-outreach.com"]
    assert (ava.success, ava.error_code, ava.mailbox_id) == (
        False,
        "ALREADY_CONNECTED",
        oauth_ava.pk,
    )
    assert BulkAddResultSerializer(ava).data["error"] == "ALREADY_CONNECTED"
    kept = Mailbox.objects.get(pk=oauth_ava.pk)
    assert (kept.auth_method, kept.refresh_token, kept.credential_id, kept.display_name) == (
        "oauth",
        "rt-of-ava",
        None,
        "Ava (OAuth)",
    )
    entry = errors.get("ALREADY_CONNECTED")
    assert entry.message and "convert" in entry.hint


def test_convert_switches_an_oauth_mailbox(graph_credential, oauth_ava, personas):
    accounts = [Account("ava@acme-outreach.com", "Ava")]
    run = start_run(
        graph_credential.workspace, graph_credential, accounts, personas["alice"], convert=True
    )
    run = execute(run)
    assert (run.convert, run.outcome, run.connected) == (True, "all_connected", 1)
    ava = Mailbox.objects.get(pk=oauth_ava.pk)
    assert (ava.auth_method, ava.credential_id) == ("graph_app_only", graph_credential.pk)
    assert "switched from OAuth" in by_email(run)["ava@acme-outreach.com"].error_detail
    assert MailboxEvent.objects.filter(
        mailbox=ava, kind="note", message__contains="Switched from OAuth"
    ).exists()


# --- the last pass for throttled accounts --------------------------------------------------------
def test_throttled_accounts_get_a_last_pass_after_retry_after(graph_credential, sandbox, settings):
    settings.GRAPH_MAX_ATTEMPTS = 3
    # Both lookups answered 429 three times: their retries run out, both THROTTLED after the
    # first pass; the last pass waits Graph's Retry-After (1 s) and connects them.
    sandbox.switches.update({"graph_throttle": 6, "graph_retry_after": 1})
    run = run_list(graph_credential, [("ava@acme-outreach.com", ""), ("ben@acme-outreach.com", "")])
    assert (run.outcome, run.processed, run.connected, run.failed) == ("all_connected", 2, 2, 0)
    log = list(sandbox.graph_log)
    statuses = [status for _, _, _, status in log]
    assert statuses[:6] == [429] * 6 and 429 not in statuses[6:]
    last_429, first_after = log[5][0], log[6][0]
    assert first_after - last_429 >= 1.0  # not before the Retry-After


def test_the_last_pass_waits_at_most_graph_max_retry_after(graph_credential, sandbox, settings):
    settings.GRAPH_MAX_ATTEMPTS = 2
    settings.GRAPH_MAX_RETRY_AFTER = 0.2
    sandbox.switches.update({"graph_throttle": 2, "graph_retry_after": 120})
    run = run_list(graph_credential, [("ava@acme-outreach.com", "")])
    assert run.outcome == "all_connected"
    log = list(sandbox.graph_log)
    assert [s for _, _, _, s in log[:2]] == [429, 429]
    # Two minutes asked for; capped at 0.2 s (and the retry inside the first pass too).
    assert log[2][0] - log[1][0] < 5


def test_no_account_ends_throttled_under_30_percent_429s(graph_credential, sandbox, settings):
    settings.GRAPH_MAX_ATTEMPTS = 5  # the default
    for n in range(100):
        sandbox.directory.add_user(f"user{n:03}@acme-outreach.com")
    sandbox.switches.update({"graph_throttle_rate": 0.3, "graph_retry_after": 0})
    run = run_list(graph_credential, [(f"user{n:03}@acme-outreach.com", "") for n in range(100)])
    statuses = [status for _, _, _, status in sandbox.graph_log]
    assert 0.2 < statuses.count(429) / len(statuses) < 0.4  # the sandbox did throttle
    assert not run.results.filter(error_code="THROTTLED").exists()
    assert (run.outcome, run.connected) == ("all_connected", 100)


# --- single-flight token renewal -----------------------------------------------------------------
def test_four_chunks_with_a_rejected_token_make_one_token_call(graph_credential, sandbox):
    for n in range(80):
        sandbox.directory.add_user(f"user{n:03}@acme-outreach.com")
    GraphClient(graph_credential).token()  # cached
    assert sandbox.counts["token"] == 1
    sandbox.identity.key = b"another-key-0123456789abcdef0123"  # the cached token is now refused
    sandbox.switches.update({"latency": 0.05})  # the four chunks' first batches overlap
    run = run_list(graph_credential, [(f"user{n:03}@acme-outreach.com", "") for n in range(80)])
    assert run.connected == 80
    assert sandbox.counts["batch_in_flight_max"] > 1
    assert sandbox.counts["token"] == 2  # one renewal for four chunks, not four


def test_a_token_lost_mid_run_ends_every_unfinished_account_with_its_code(
    graph_credential, sandbox
):
    GraphClient(graph_credential).token()  # cached, as in a run under way
    sandbox.identity.key = b"another-key-0123456789abcdef0123"  # the cached token is refused
    app = sandbox.directory.apps[CLIENT_ID]
    app.expired_secrets.append(SECRET)  # and no new one can be had
    app.client_secret = "the-new-one"
    run = run_list(graph_credential, [("ava@acme-outreach.com", ""), ("ben@acme-outreach.com", "")])
    results = list(run.results.order_by("position"))
    assert [(r.done, r.error_code) for r in results] == [(True, "CLIENT_SECRET_EXPIRED")] * 2
    assert (run.processed, run.connected, run.failed) == (2, 0, 2)
    assert sandbox.counts["batch"] == 1  # nothing more was sent once the token was lost
    assert not Mailbox.objects.exists()


# --- a missing application permission is the credential's problem --------------------------------
@pytest.mark.parametrize(
    "roles, missing",
    [(["MailboxSettings.Read"], "User.Read.All"), (["User.Read.All"], "MailboxSettings.Read")],
)
def test_every_account_refused_fails_the_run_as_a_credential_problem(
    graph_credential, sandbox, roles, missing
):
    sandbox.directory.apps[CLIENT_ID].roles = roles
    emails = [(f"{n}@acme-outreach.com", "") for n in ("ava", "ben", "cara")]
    run = run_list(graph_credential, emails)
    assert (run.status, run.outcome, run.error_code) == (
        "failed",
        "rejected",
        "APP_PERMISSION_MISSING",
    )
    assert f"application permission {missing}:" in run.error_message
    assert set(run.results.values_list("error_code", flat=True)) == {"APP_PERMISSION_MISSING"}
    assert (run.processed, run.failed) == (3, 3)
    graph_credential.refresh_from_db()
    assert (graph_credential.status, graph_credential.last_error) == (
        "invalid",
        "APP_PERMISSION_MISSING",
    )
    assert graph_credential.permissions[missing] is False
    assert not Mailbox.objects.exists()


def test_an_access_policy_refusal_stays_the_mailboxes(graph_credential, sandbox):
    # quinn is outside the application access policy (ErrorAccessDenied): a mailbox problem.
    run = run_list(graph_credential, [("quinn@acme-outreach.com", "")])
    assert (run.status, run.error_code) == ("finished", "")
    assert by_email(run)["quinn@acme-outreach.com"].error_code == "ACCESS_DENIED"
    graph_credential.refresh_from_db()
    assert graph_credential.status == Credential.Status.VALID
    assert BulkAddRun.objects.get().status == "finished"


def test_the_api_takes_convert_as_a_json_boolean(graph_credential, api, api_keys, settings):
    settings.API_BULK_WAIT_SECONDS = 0  # the worker is not running: 202 at once
    path = "/api/v1/mailboxes/microsoft/bulk"
    accounts = [{"mailbox_email": "ava@acme-outreach.com"}]
    for wrong in ("yes", 1, None):
        refused = api(
            "post", path, api_keys["a_operator"], data={"accounts": accounts, "convert": wrong}
        )
        assert refused.status_code == 400, refused.content
        assert "convert" in refused.json()["error"]["fields"]
    assert not BulkAddRun.objects.exists()
    started = api(
        "post", path, api_keys["a_operator"], data={"accounts": accounts, "convert": True}
    )
    assert started.status_code == 202, started.content
    plain = api("post", path, api_keys["a_operator"], data={"accounts": accounts})
    assert plain.status_code == 202
    assert list(BulkAddRun.objects.order_by("created_at").values_list("convert", flat=True)) == [
        True,
        False,
    ]


def test_the_admin_form_offers_convert(graph_credential, ws_a, personas, client_for):
    from django.urls import reverse

    client = client_for(personas["alice"])
    start = reverse("admin:fleet_bulkaddrun_start")
    form = client.get(start).content.decode()
    assert 'name="convert"' in form and "ALREADY_CONNECTED" in form
    for ticked in (True, False):
        data = {"workspace": ws_a.pk, "accounts": "ava@acme-outreach.com"}
        answer = client.post(start, {**data, **({"convert": "on"} if ticked else {})})
        assert answer.status_code == 302
    assert list(BulkAddRun.objects.order_by("created_at").values_list("convert", flat=True)) == [
        True,
        False,
    ]
