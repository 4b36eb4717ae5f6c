"""Graph app-only bulk add against the Microsoft sandbox (HTTPS on loopback) and the sandbox DNS
server (UDP on loopback): every per-mailbox code, storms of 429/503, an expired secret, re-runs,
batching limits and token caching."""

from datetime import date, timedelta

import pytest
import requests

from fleet import bulk_add
from fleet.api.bulk import BulkAddResultSerializer
from fleet.bulk_add import Account, execute, start_run
from fleet.errors import FleetError
from fleet.microsoft import graph, identity
from fleet.microsoft.graph import GraphClient, GraphRequest
from fleet.models import BulkAddRun, Credential, Mailbox, MailboxEvent
from sandbox.dns import SandboxDNS, Zone


def seed(result) -> dict:
    """A result as Woodpecker's bulk-add API shows it (the API's representation, without Fleet's two fields)."""
    data = BulkAddResultSerializer(result).data
    return {k: v for k, v in data.items() if k not in ("mailbox_uid", "error_detail")}


ACME = "3f2b8c1e-5a9d-4e7b-9c3a-acme0000a001"
CLIENT_ID = "55555555-2222-4333-8444-555555555555"
SECRET = "bulk-secret"


@pytest.fixture(autouse=True)
def fresh_tokens():
    graph.forget_all_tokens()  # the sandbox signs with a new key after every reset
    yield
    graph.forget_all_tokens()


@pytest.fixture
def dns_zone(settings):
    """The sandbox DNS server: acme-outreach.com set up for Microsoft 365, acme-sales.example
    without DKIM, broken.example answering SERVFAIL."""
    zone = Zone()
    zone.add_microsoft_domain("acme-outreach.com")
    zone.add_dmarc("acme-outreach.com", "reject")
    zone.add_mx("acme-outreach.com")
    zone.add_mx("acme-sales.example", exchange=False)  # MX elsewhere, no DMARC
    zone.add_microsoft_domain("acme-sales.example", dkim=False)
    zone.servfail.add("broken.example")
    server = SandboxDNS(zone).start()
    settings.DNS_NAMESERVERS = ["127.0.0.1"]
    settings.DNS_PORT = server.port
    settings.DNS_TIMEOUT = 0.5
    yield zone
    server.stop()


@pytest.fixture
def tenant(sandbox, settings, dns_zone):
    """The Acme tenant with the bulk-add app consented and a few extra mailboxes."""
    settings.GRAPH_RETRY_BACKOFF = 0.01
    settings.GRAPH_MAX_ATTEMPTS = 4
    directory = sandbox.directory
    acme = directory.tenant(ACME)
    acme.domains += ["acme-sales.example", "broken.example"]
    directory.add_app(CLIENT_ID, SECRET, "Fleet bulk add (tests)")
    acme.consented_apps.add(CLIENT_ID)
    directory.add_user("tom@acme-sales.example", "Tom Sales")
    directory.add_user("bea@broken.example", "Bea Broken")
    return acme


@pytest.fixture
def graph_credential(tenant, ws_a):
    return Credential.objects.create(
        workspace=ws_a,
        name="Acme Graph",
        kind=Credential.Kind.GRAPH_APP_ONLY,
        tenant_id=ACME,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        secret_expires_at=date.today() + timedelta(days=300),
        status=Credential.Status.VALID,
    )


def run_list(credential, emails, user=None) -> BulkAddRun:
    accounts = [Account(e.lower(), n) for e, n in emails]
    run = start_run(credential.workspace, credential, accounts, user)
    return execute(run)


def by_email(run):
    return {r.email: r for r in run.results.all()}


EVERY_CODE = [
    ("ava@acme-outreach.com", "Ava S."),
    ("OLIVIA@acme-outreach.com", ""),
    ("sales@acme-outreach.com", "Sales desk"),  # an alias of olivia
    ("nobody@acme-outreach.com", ""),
    ("paul@acme-outreach.com", ""),  # no Exchange Online licence
    ("quinn@acme-outreach.com", ""),  # outside the application access policy
    ("lena@globex-sales.com", ""),  # another tenant: not visible to this app
    ("tom@acme-sales.example", ""),
    ("bea@broken.example", ""),
]


def test_every_result_code(graph_credential, sandbox, personas):
    run = run_list(graph_credential, EVERY_CODE, personas["alice"])
    assert (run.status, run.outcome) == ("finished", "partly_connected")
    assert (run.total, run.processed, run.connected, run.failed) == (9, 9, 4, 5)
    results = by_email(run)
    codes = {email: r.error_code for email, r in results.items()}
    assert codes == {
        "ava@acme-outreach.com": "",
        "olivia@acme-outreach.com": "",
        "sales@acme-outreach.com": "WRONG_ALIAS",
        "nobody@acme-outreach.com": "MAILBOX_NOT_FOUND",
        "paul@acme-outreach.com": "MAILBOX_NOT_ENABLED",
        "quinn@acme-outreach.com": "ACCESS_DENIED",
        "lena@globex-sales.com": "MAILBOX_NOT_FOUND",
        "tom@acme-sales.example": "",
        "bea@broken.example": "",
    }
    assert results["sales@acme-outreach.com"].error_detail == (
        "primary address: olivia@acme-outreach.com"
    )
    # Deliverability, once per domain, from the DNS server.
    assert seed(results["ava@acme-outreach.com"])["deliverability"] == {
        "spf_correct": True,
        "dkim_correct": True,
        "dmarc_correct": True,
        "mx_correct": True,
    }
    tom = results["tom@acme-sales.example"]
    assert (tom.spf_correct, tom.dkim_correct, tom.dmarc_correct, tom.mx_correct) == (
        True,
        False,
        False,
        False,
    )
    ava = Mailbox.objects.get(email="ava@acme-outreach.com")
    assert (ava.dmarc_correct, ava.dmarc_policy, ava.mx_correct) == (True, "reject", True)
    bea = results["bea@broken.example"]
    assert (bea.success, bea.spf_correct, bea.error_detail) == (
        True,
        None,
        "SPF/DKIM/DMARC/MX unknown: DNS_LOOKUP_FAILED",
    )
    assert seed(results["paul@acme-outreach.com"]) == {
        "success": False,
        "id": None,
        "email": "paul@acme-outreach.com",
        "name": "Paul Reyes",
        "deliverability": None,
        "error": "MAILBOX_NOT_ENABLED",
    }

    # Mailboxes: created active, app-only, with Graph's id and the given or Graph's name.
    ava = Mailbox.objects.get(email="ava@acme-outreach.com")
    user = sandbox.directory.user("ava@acme-outreach.com")
    assert (ava.status, ava.auth_method, ava.graph_user_id, ava.credential_id) == (
        "active",
        "graph_app_only",
        user.oid,
        graph_credential.pk,
    )
    assert ava.display_name == "Ava S." and ava.spf_correct and ava.dkim_correct
    assert Mailbox.objects.get(email="olivia@acme-outreach.com").display_name == "Olivia Grant"
    assert seed(results["ava@acme-outreach.com"])["id"] == ava.pk
    assert set(Mailbox.objects.values_list("email", flat=True)) == {
        "ava@acme-outreach.com",
        "olivia@acme-outreach.com",
        "tom@acme-sales.example",
        "bea@broken.example",
    }
    event = MailboxEvent.objects.get(mailbox=ava)
    assert (event.from_status, event.to_status, event.actor) == (
        "pending",
        "active",
        personas["alice"],
    )
    # One chunk: lookups, then settings + alias searches: two $batch calls and one token.
    assert sandbox.counts["batch"] == 2 and sandbox.counts["token"] == 1
    # Permanent errors are not retried: each request once.
    assert sandbox.counts["graph"] == 9 + 9


def test_same_list_again_creates_no_duplicate(graph_credential):
    emails = [("ava@acme-outreach.com", "Ava"), ("rosa@acme-outreach.com", "")]
    first = run_list(graph_credential, emails)
    Mailbox.objects.filter(email="rosa@acme-outreach.com").update(
        status="error", error_code="REAUTH_REQUIRED"
    )
    second = run_list(graph_credential, [("Ava@Acme-Outreach.com", "Ava Stone"), emails[1]])
    assert first.outcome == second.outcome == "all_connected"
    assert Mailbox.objects.count() == 2
    assert by_email(first)["ava@acme-outreach.com"].mailbox_id == (
        by_email(second)["ava@acme-outreach.com"].mailbox_id
    )
    assert Mailbox.objects.get(email="ava@acme-outreach.com").display_name == "Ava Stone"
    assert Mailbox.objects.get(email="rosa@acme-outreach.com").status == "active"


def test_storm_of_429_and_503_ends_in_success(graph_credential, sandbox):
    sandbox.switches.update(
        {"graph_throttle": 10, "graph_retry_after": 0, "graph_server_errors": 5}
    )
    emails = [(f"{n}@acme-outreach.com", "") for n in ("ava", "ben", "cara", "dan", "eve")]
    run = run_list(graph_credential, emails)
    assert run.outcome == "all_connected" and run.connected == 5
    statuses = [status for _, _, _, status in sandbox.graph_log]
    assert statuses.count(429) == 10 and statuses.count(503) == 5
    assert sandbox.counts["graph"] == 10 + 10 + 5  # 10 answered, 15 refused then retried


def test_inner_429_waits_for_its_retry_after(graph_credential, sandbox):
    sandbox.switches.update({"graph_throttle": 1, "graph_retry_after": 1})
    run = run_list(graph_credential, [("ava@acme-outreach.com", "")])
    assert run.outcome == "all_connected"
    (t1, _, _, first), (t2, _, _, second) = list(sandbox.graph_log)[:2]
    assert (first, second) == (429, 200)
    assert t2 - t1 >= 1.0  # not before Graph's Retry-After


@pytest.mark.parametrize(
    "switches, code, passes",
    [
        # Throttled accounts get one last pass (retry_throttled); outages do not.
        ({"graph_throttle": 1000, "graph_retry_after": 0}, "THROTTLED", 2),
        ({"graph_server_errors": 1000}, "GRAPH_UNAVAILABLE", 1),
    ],
)
def test_retries_run_out(graph_credential, sandbox, settings, switches, code, passes):
    settings.GRAPH_MAX_ATTEMPTS = 3
    sandbox.switches.update(switches)
    run = run_list(graph_credential, [("ava@acme-outreach.com", ""), ("ben@acme-outreach.com", "")])
    assert (run.status, run.outcome) == ("finished", "rejected")
    assert [r.error_code for r in run.results.all()] == [code, code]
    assert (run.processed, run.failed) == (2, 2)
    assert sandbox.counts["graph"] == 2 * 3 * passes  # bounded: three attempts each, per pass
    assert not Mailbox.objects.exists()


def test_expired_secret_fails_the_run_with_its_code(graph_credential, sandbox):
    sandbox.directory.apps[CLIENT_ID].expired_secrets.append(SECRET)
    sandbox.directory.apps[CLIENT_ID].client_secret = "the-new-one"
    run = run_list(graph_credential, [("ava@acme-outreach.com", ""), ("ben@acme-outreach.com", "")])
    assert (run.status, run.outcome, run.error_code) == (
        "failed",
        "rejected",
        "CLIENT_SECRET_EXPIRED",
    )
    assert [(r.done, r.error_code) for r in run.results.all()] == [
        (True, "CLIENT_SECRET_EXPIRED"),
        (True, "CLIENT_SECRET_EXPIRED"),
    ]
    assert (run.processed, run.failed) == (2, 2)
    graph_credential.refresh_from_db()
    assert (graph_credential.status, graph_credential.last_error) == (
        "invalid",
        "CLIENT_SECRET_EXPIRED",
    )
    assert sandbox.counts["graph"] == 0


def test_batches_hold_20_with_at_most_4_in_flight(graph_credential, sandbox):
    for n in range(90):
        sandbox.directory.add_user(f"user{n:03}@acme-outreach.com")
    sandbox.switches.update({"latency": 0.05})  # keeps batches open long enough to overlap
    run = run_list(graph_credential, [(f"user{n:03}@acme-outreach.com", "") for n in range(90)])
    assert run.connected == 90
    # 180 requests (two stages each), ≤20 to a batch: 9 full batches, or one partly filled
    # batch more when a stage comes back half full at the end; never more than four at once.
    assert sandbox.counts["batch"] in (9, 10)
    assert 1 < sandbox.counts["batch_in_flight_max"] <= 4


def test_four_batches_in_flight_while_stages_overlap(graph_credential, sandbox):
    """Every account's next request joins one queue as soon as its answer is in, and a free slot
    takes up to 20 queued requests of any stage: one chunk's mailbox settings go out while other
    chunks' lookups are in flight, the four slots are used, and every batch is full."""
    emails = [f"user{n:03}@acme-outreach.com" for n in range(200)]
    for email in emails:
        sandbox.directory.add_user(email)
    sandbox.switches.update({"latency": 0.05})  # keeps batches open long enough to overlap
    run = run_list(graph_credential, [(email, "") for email in emails])
    assert run.connected == 200
    assert sandbox.counts["batch"] == 2 * 200 // 20  # lookups and settings, 20 to a batch
    assert sandbox.counts["batch_in_flight_max"] == 4

    def stages(urls) -> set[str]:
        return {"settings" if url.endswith("/mailboxSettings") else "lookup" for url in urls}

    batches = list(sandbox.batch_log)
    assert all(len(urls) == 20 for _, _, urls in batches)
    # The batches the sandbox was answering at each moment a batch arrived.
    moments = [[b for b in batches if b[0] <= started < b[1]] for started, _, _ in batches]
    both = {"lookup", "settings"}
    mixed = [m for m in moments if set().union(*(stages(urls) for _, _, urls in m)) == both]
    assert any(len(m) == 4 for m in mixed), [len(m) for m in mixed]


def test_the_sandbox_refuses_batches_over_20(graph_credential, sandbox, settings):
    client = GraphClient(graph_credential)
    too_many = [GraphRequest(str(n), "/users/ava@acme-outreach.com") for n in range(21)]
    with pytest.raises(ValueError):
        client.send(too_many)
    answer = requests.post(
        f"{sandbox.graph_url}/$batch",
        json={"requests": [{"id": r.id, "method": "GET", "url": r.url} for r in too_many]},
        headers={"Authorization": f"Bearer {client.token()}"},
        verify=settings.MICROSOFT_CA_BUNDLE,
        timeout=5,
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "BadRequest"


def test_alias_search_is_an_advanced_query(graph_credential, sandbox, settings):
    token = GraphClient(graph_credential).token()
    url = f"{sandbox.graph_url}/users"
    params = {"$filter": "proxyAddresses/any(x:x eq 'smtp:sales@acme-outreach.com')"}
    session = requests.Session()
    kwargs = {"verify": settings.MICROSOFT_CA_BUNDLE, "timeout": 5}
    plain = session.get(url, params=params, headers={"Authorization": f"Bearer {token}"}, **kwargs)
    assert plain.status_code == 400 and plain.json()["error"]["code"] == "Request_UnsupportedQuery"
    advanced = session.get(
        url,
        params={**params, "$count": "true"},
        headers={"Authorization": f"Bearer {token}", "ConsistencyLevel": "eventual"},
        **kwargs,
    )
    assert advanced.json()["@odata.count"] == 1
    assert advanced.json()["value"][0]["mail"] == "olivia@acme-outreach.com"
    anonymous = session.get(url, params=params, **kwargs)
    assert anonymous.status_code == 401


def test_tokens_are_cached_per_credential(graph_credential, sandbox):
    assert GraphClient(graph_credential).token() == GraphClient(graph_credential).token()
    assert sandbox.counts["token"] == 1
    graph.forget_token(graph_credential)
    GraphClient(graph_credential).token()
    assert sandbox.counts["token"] == 2
    # A revoked token (the sandbox forgot its key) is renewed once, not counted as an attempt.
    sandbox.identity.key = b"another-key-0123456789abcdef0123"
    answer = GraphClient(graph_credential).send([GraphRequest("1", "/users/ava@acme-outreach.com")])
    assert answer["1"].ok and answer["1"].body["mail"] == "ava@acme-outreach.com"
    assert sandbox.counts["token"] == 3


def test_a_token_is_shared_encrypted_with_other_processes_and_forgotten_for_them(
    graph_credential, sandbox
):
    from django.core.cache import cache

    token = GraphClient(graph_credential).token()
    assert sandbox.counts["token"] == 1
    # The entry names neither tenant nor client, and holds the token only encrypted.
    key = graph._shared_key(graph._token_key(graph_credential))
    kept = cache.get(key)
    assert kept and token not in repr(kept) and ACME not in key and CLIENT_ID not in key
    # A new process (nothing kept in memory: no token, no discovery answer) asks nobody.
    graph._tokens.clear()
    identity.forget_discovery()
    http_before = sandbox.counts["http"]
    assert GraphClient(graph_credential).token() == token
    assert sandbox.counts["token"] == 1 and sandbox.counts["http"] == http_before
    # Forgotten here (a revoked secret …) is forgotten for the others too.
    graph.forget_token(graph_credential)
    assert cache.get(key) is None
    graph._tokens.clear()
    GraphClient(graph_credential).token()
    assert sandbox.counts["token"] == 2
    # A token the sandbox refuses (401) is dropped from the shared cache as well, once.
    sandbox.identity.key = b"another-key-0123456789abcdef0123"
    answer = GraphClient(graph_credential).send([GraphRequest("1", "/users/ava@acme-outreach.com")])
    assert answer["1"].ok and sandbox.counts["token"] == 3
    renewed = cache.get(key)
    graph._tokens.clear()
    assert GraphClient(graph_credential).token() == graph.secrets.decrypt(renewed["token"])


def test_discovery_is_asked_once_per_process_and_tenant(graph_credential, sandbox):
    def asked() -> int:
        return sandbox.counts["discovery"]

    for _ in range(3):
        graph.forget_token(graph_credential)  # a token call each time, a discovery only once
        GraphClient(graph_credential).token()
    assert sandbox.counts["token"] == 3
    assert asked() == 1
    identity.forget_discovery()
    graph.forget_token(graph_credential)
    GraphClient(graph_credential).token()
    assert asked() == 2


def test_operator_of_another_workspace_cannot_start(graph_credential, ws_b, personas):
    other = Credential.objects.create(
        workspace=ws_b,
        name="Beta Graph",
        kind=Credential.Kind.GRAPH_APP_ONLY,
        tenant_id=ACME,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        secret_expires_at=date.today() + timedelta(days=300),
        status=Credential.Status.VALID,
    )
    accounts = [Account("ava@acme-outreach.com")]
    with pytest.raises(FleetError) as denied:
        start_run(ws_b, other, accounts, personas["alice"])
    assert denied.value.code == "PERMISSION_DENIED"
    with pytest.raises(FleetError) as foreign:  # A's run with B's credential
        start_run(graph_credential.workspace, other, accounts, personas["alice"])
    assert foreign.value.code == "INVALID_CREDENTIAL_ID"
    with pytest.raises(FleetError) as named:
        bulk_add.resolve_credential(graph_credential.workspace, other.pk)
    assert named.value.code == "INVALID_CREDENTIAL_ID"
    assert not BulkAddRun.objects.exists()


def test_queries_grow_per_chunk_not_per_account(graph_credential, sandbox):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for n in range(80):
        sandbox.directory.add_user(f"user{n:03}@acme-outreach.com")

    def queries_for(emails) -> int:
        run = start_run(graph_credential.workspace, graph_credential, [Account(e) for e in emails])
        with CaptureQueriesContext(connection) as queries:
            assert execute(run).connected == len(emails)
        return len(queries)

    one_chunk = queries_for([f"user{n:03}@acme-outreach.com" for n in range(20)])
    three_chunks = queries_for([f"user{n:03}@acme-outreach.com" for n in range(20, 80)])
    # 40 more mailboxes cost two more chunks' statements (about a dozen each, savepoints
    # included), where writing per account would add more than 40 x 3.
    assert three_chunks - one_chunk <= 2 * 15


def test_a_run_whose_lease_expired_is_queued_again(
    ws_a, graph_credential, django_capture_on_commit_callbacks
):
    """The reaper's part, in-process (tests/test_job_recovery.py kills real workers)."""
    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from fleet.tasks import run_bulk_add

    run = start_run(
        ws_a, graph_credential, [Account("ava@acme-outreach.com"), Account("x@acme-outreach.com")]
    )
    held = timezone.now() + timedelta(seconds=90)
    BulkAddRun.objects.filter(pk=run.pk).update(
        status="running", started_at=timezone.now(), lease_owner="dead-task", lease_expires_at=held
    )
    with django_capture_on_commit_callbacks(execute=True):  # commits, as in a worker
        assert bulk_add.reclaim_expired(timezone.now()) == 0  # still within its lease
        assert bulk_add.reclaim_expired(held + timedelta(seconds=1)) == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert bulk_add.reclaim_expired(held + timedelta(seconds=1)) == 0  # taken back once
    # One new task (start_run's own waits for a commit this test never makes).
    assert DBTaskResult.objects.filter(task_path=run_bulk_add.module_path).count() == 1
    run.refresh_from_db()
    assert (run.status, run.lease_owner, run.lease_reclaims) == ("queued", "", 1)
    run = execute(run)  # what the new task does: the accounts not yet done
    assert (run.status, run.processed, run.connected) == ("finished", 2, 1)
