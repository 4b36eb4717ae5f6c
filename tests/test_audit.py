"""The audit log (fleet/audit.py): one entry per state-changing operation, the same through the
admin and the API apart from `via` and the request's own details, never a secret, scoped like
every list, pruned after AUDIT_RETENTION_DAYS."""

import json
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from fleet import audit, consent, tasks
from fleet.models import ApiKey, AuditEntry, ConsentRequest, Mailbox, Membership
from tests.conftest import issue_key
from tests.test_mailbox_operations import make_mailbox, through_admin, through_api

PLANTED = "PLANTED-s3cret-value-7f3a"

# Each operation of the parity table from a state where it succeeds, and what it records.
SUCCEEDS_FROM = {
    "approve": ("pending_approval", "mailbox.approved"),
    "start_warmup": ("active", "mailbox.warmup_started"),
    "pause_warmup": ("active", "mailbox.warmup_paused"),
    "resume_warmup": ("active", "mailbox.warmup_resumed"),
    "disable": ("active", "mailbox.disabled"),
    "enable": ("disabled", "mailbox.enabled"),
    "delete": ("active", "mailbox.deleted"),
    "test_connection": ("active", "mailbox.test_queued"),
    "reveal_totp": ("active", "mailbox.totp_revealed"),
}
# What differs between the two paths by nature: where it came from and which object.
PER_REQUEST = {"id", "created_at", "via", "api_key_prefix", "request_id", "object_id",
               "object_pk", "object_repr"}


def entries_of(mailbox):
    return list(
        AuditEntry.objects.filter(object_type="mailbox", object_pk=mailbox.pk)
        .order_by("id")
        .values()
    )


def comparable(entry):
    return {k: v for k, v in entry.items() if k not in PER_REQUEST}


def all_entries_text() -> str:
    return json.dumps(list(AuditEntry.objects.values()), default=str)


@pytest.mark.parametrize("operation", list(SUCCEEDS_FROM))
def test_admin_and_api_record_the_same_entry(operation, ws_a, personas, client_for, api, api_keys):
    state, action = SUCCEEDS_FROM[operation]
    by_admin = make_mailbox(ws_a, state, operation, 1)
    by_api = make_mailbox(ws_a, state, operation, 2)

    assert through_admin(client_for(personas["bob"]), by_admin, operation) == set()
    assert through_api(api, api_keys["a_manager"], by_api, operation) == set()

    admin_entries, api_entries = entries_of(by_admin), entries_of(by_api)
    assert [comparable(e) for e in admin_entries] == [comparable(e) for e in api_entries]
    # One entry per operation; re-enabling also queues a test, which is its own entry.
    assert len(admin_entries) == (2 if operation == "enable" else 1)
    admin_entry, api_entry = admin_entries[0], api_entries[0]
    assert admin_entry["action"] == action
    assert admin_entry["actor_name"] == "bob" and admin_entry["workspace_id"] == ws_a.pk
    assert admin_entry["via"] == "admin" and api_entry["via"] == "api"
    assert admin_entry["api_key_prefix"] == ""
    key = ApiKey.objects.get(name="A manager")
    assert api_entry["api_key_prefix"] == key.prefix
    assert admin_entry["client_address"] == api_entry["client_address"] == "127.0.0.1"
    assert admin_entry["request_id"] and api_entry["request_id"]
    assert api_entry["object_id"] == str(by_api.uid)
    if action in ("mailbox.disabled", "mailbox.enabled"):
        before, after = ("active", "disabled") if operation == "disable" else ("disabled", "pending")
        assert admin_entry["changes"] == {"status": {"before": before, "after": after}}
    if operation == "pause_warmup":
        assert admin_entry["changes"] == {
            "warmup_status": {"before": "active", "after": "paused"}
        }
    assert action in audit.ACTIONS


@pytest.mark.parametrize("operation", ["start_warmup", "pause_warmup", "resume_warmup"])
@pytest.mark.parametrize("state", ["error", "disabled"])
def test_a_refused_operation_records_nothing(
    operation, state, ws_a, personas, client_for, api, api_keys
):
    by_admin = make_mailbox(ws_a, state, "start_warmup", 1)
    by_api = make_mailbox(ws_a, state, "start_warmup", 2)
    assert through_admin(client_for(personas["bob"]), by_admin, operation)
    assert through_api(api, api_keys["a_manager"], by_api, operation)
    assert not AuditEntry.objects.exists()


def test_the_request_id_the_caller_sent_is_kept(ws_a, api, api_keys):
    mailbox = make_mailbox(ws_a, "active", "disable", 1)
    response = api(
        "post", f"/api/v1/mailboxes/{mailbox.uid}/disable", api_keys["a_manager"],
        headers={"X-Request-Id": "trace-42"},
    )
    assert response.status_code == 200
    assert AuditEntry.objects.get(action="mailbox.disabled").request_id == "trace-42"


def test_an_update_shows_each_field_before_and_after(ws_a, api, api_keys):
    mailbox = make_mailbox(ws_a, "active", "update", 1)
    response = api(
        "patch", f"/api/v1/mailboxes/{mailbox.uid}", api_keys["a_manager"],
        data={"display_name": "Sales", "warmup_daily_volume": 60, "tags": ["q4"]},
    )
    assert response.status_code == 200, response.content
    updated, tagged = AuditEntry.objects.order_by("id")
    assert updated.action == "mailbox.updated"
    assert updated.changes == {
        "display_name": {"before": "", "after": "Sales"},
        "warmup_daily_volume": {"before": 20, "after": 60},
    }
    assert tagged.action == "mailbox.tags_set"
    assert tagged.changes == {"tags": {"before": [], "after": ["q4"]}}


# --- Secrets ----------------------------------------------------------------------------------
def test_no_entry_ever_holds_a_secret(ws_a, personas, client_for, api, api_keys):
    """The planted value goes in through every path that takes a secret; the log says
    "changed" and never the value."""
    root = client_for(personas["root"])
    # A mailbox's password and TOTP secret by an import (API) …
    csv = f"email,password,name,totpsecret\nann@alpha.example,{PLANTED},Ann,\n".encode()
    response = api(
        "post", "/api/v1/mailboxes/import/outlook", api_keys["a_manager"],
        data={"file": SimpleUploadedFile("boxes.csv", csv, "text/csv")}, format="multipart",
    )
    assert response.status_code == 200, response.content
    ann = Mailbox.objects.get(email="ann@alpha.example")
    # … a password changed in the admin's mailbox form …
    page = root.get(reverse("admin:fleet_mailbox_change", args=[ann.pk]))
    form = page.context["adminform"].form
    data = {
        name: ("" if value is None else value)
        for name, value in form.initial.items()
        if name in form.fields and not isinstance(value, (list, tuple))
    }
    data.update({"password": PLANTED + "-2", "_save": "Save"})
    data = {k: v for k, v in data.items() if k != "tags"}
    response = root.post(reverse("admin:fleet_mailbox_change", args=[ann.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    # … a credential's client secret (API) …
    response = api(
        "post", "/api/v1/credentials", api_keys["a_manager"],
        data={
            "name": "App", "kind": "graph_app_only", "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "11111111-2222-4333-8444-555555555555", "client_secret": PLANTED + "-3",
            "secret_expires_at": "2027-06-30",
        },
    )
    assert response.status_code == 201, response.content
    # … a webhook signing secret (API, platform key of an owner) …
    response = api(
        "post", f"/api/v1/workspaces/{ws_a.pk}/webhook", api_keys["root_platform"],
        data={"url": "", "secret": PLANTED + "-4"},
    )
    assert response.status_code == 200, response.content
    # … and an API key made in the admin (its raw key is shown once, never logged).
    response = root.post(
        reverse("admin:fleet_apikey_add"),
        {"name": "CRM", "kind": "workspace", "workspace": ws_a.pk, "role": "viewer"},
    )
    assert response.status_code == 200
    raw_key = response.context["raw_key"]

    text = all_entries_text()
    assert PLANTED not in text and raw_key not in text
    assert ApiKey.objects.get(name="CRM").hashed_key not in text
    changed = {
        (e.action, name)
        for e in AuditEntry.objects.all()
        for name, value in e.changes.items()
        if value == audit.CHANGED
    }
    assert {
        ("mailbox.created", "password"),
        ("mailbox.updated", "password"),
        ("credential.created", "client_secret"),
        ("workspace.webhook_updated", "webhook_secret"),
    } <= changed
    assert AuditEntry.objects.filter(action="apikey.created", via="admin").exists()


def test_a_secret_passed_in_changes_by_mistake_is_still_hidden(ws_a):
    mailbox = make_mailbox(ws_a, "active", "x", 1)
    entry = audit.record(
        "mailbox.updated", mailbox, actor=None, via="task",
        changes={"password": {"before": "", "after": PLANTED}, "display_name": "x"},
    )
    assert entry.changes["password"] == audit.CHANGED
    assert PLANTED not in all_entries_text()


# --- Bulk operations: one INSERT for many -----------------------------------------------------
def test_an_import_writes_its_entries_in_a_few_inserts(ws_a, api, api_keys):
    rows = "".join(f"box{n}@alpha.example,pw-{n}\n" for n in range(40))
    csv = ("email,password\n" + rows).encode()
    with CaptureQueriesContext(connection) as queries:
        response = api(
            "post", "/api/v1/mailboxes/import/outlook", api_keys["a_operator"],
            data={"file": SimpleUploadedFile("boxes.csv", csv, "text/csv")}, format="multipart",
        )
    assert response.status_code == 200, response.content
    # An INSERT, or on PostgreSQL a COPY (fleet/inserts.py): one statement either way.
    inserts = [
        q for q in queries.captured_queries
        if q["sql"].startswith(('INSERT INTO "fleet_auditentry"', 'COPY "fleet_auditentry"'))
    ]
    # The batch and its 40 new mailboxes; their tests are part of the import (no entries).
    assert len(inserts) == 2
    assert AuditEntry.objects.filter(action="mailbox.created", via="api").count() == 40
    assert AuditEntry.objects.filter(action="importbatch.created").count() == 1
    assert not AuditEntry.objects.filter(action="mailbox.test_queued").exists()


# --- Tasks and people without a request -------------------------------------------------------
def test_work_of_the_system_is_recorded_as_system(ws_a, oauth_app):
    request = consent.initiate(ws_a, new_mailbox=True, request_data={"email": "x@alpha.example"})
    ConsentRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now())
    assert consent.expire_stale() == 1
    entry = AuditEntry.objects.get(action="consentrequest.expired")
    assert (entry.actor_id, entry.actor_name, entry.via) == (None, "system", "task")
    assert entry.client_address == entry.request_id == entry.api_key_prefix == ""
    assert entry.changes == {"status": {"before": "queued", "after": "expired"}}


def test_admin_form_saves_are_recorded(ws_a, ws_b, personas, client_for):
    root = client_for(personas["root"])
    response = root.post(
        reverse("admin:fleet_membership_add"),
        {"workspace": ws_b.pk, "username": "olga", "role": "viewer"},
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="membership.created")
    assert entry.workspace_id == ws_b.pk and entry.via == "admin" and entry.actor_name == "root"
    assert entry.changes["role"] == {"before": None, "after": "viewer"}
    assert entry.changes["user_id"]["after"] == personas["olga"].pk

    membership = Membership.objects.get(user=personas["olga"])
    response = root.post(
        reverse("admin:fleet_membership_change", args=[membership.pk]),
        {"workspace": ws_b.pk, "username": "olga", "role": "operator"},
    )
    assert response.status_code == 302
    assert AuditEntry.objects.get(action="membership.updated").changes == {
        "role": {"before": "viewer", "after": "operator"}
    }
    response = root.post(
        reverse("admin:fleet_membership_delete", args=[membership.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert AuditEntry.objects.filter(action="membership.deleted", object_pk=membership.pk).exists()


def test_revoking_a_key_is_recorded(personas, client_for, ws_a):
    key, _ = issue_key(name="CRM", user=personas["bob"], workspace=ws_a, role="viewer")
    response = client_for(personas["bob"]).post(
        reverse("admin:fleet_apikey_changelist"),
        {"action": "revoke", "_selected_action": [key.pk]},
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="apikey.revoked")
    assert entry.object_pk == key.pk and entry.workspace_id == ws_a.pk
    assert entry.changes["revoked_at"]["before"] is None


# --- Reading it: scoped, filtered, paginated --------------------------------------------------
@pytest.fixture
def two_logs(ws_a, ws_b, personas):
    """Three entries in A, two in B."""
    a = make_mailbox(ws_a, "active", "x", 1)
    b = Mailbox.objects.create(workspace=ws_b, email="b@beta.example", auth_method="app_password")
    for action in ("mailbox.disabled", "mailbox.enabled", "mailbox.deleted"):
        audit.record(action, a, actor=personas["bob"], via="admin")
    for action in ("mailbox.disabled", "mailbox.enabled"):
        audit.record(action, b, actor=personas["root"], via="api")
    return {"a": a, "b": b}


def shown_actions(response) -> list[tuple[str, str]]:
    return [(e.workspace.slug, e.action) for e in response.context["cl"].result_list]


def test_admin_list_shows_only_the_users_workspaces(two_logs, personas, client_for):
    url = reverse("admin:fleet_auditentry_changelist")
    alice = client_for(personas["alice"]).get(url)
    assert alice.status_code == 200
    assert {slug for slug, _ in shown_actions(alice)} == {"alpha"}
    assert len(shown_actions(alice)) == 3
    bob = client_for(personas["bob"]).get(url)  # manager of A, viewer of B
    assert len(shown_actions(bob)) == 5
    # Another workspace's entry is a 404, not a page.
    b_entry = AuditEntry.objects.filter(workspace__slug="beta").first()
    page = client_for(personas["alice"]).get(
        reverse("admin:fleet_auditentry_change", args=[b_entry.pk])
    )
    assert page.status_code == 404
    # A member of nothing gets no list at all.
    assert client_for(personas["olga"]).get(url).status_code == 403


def test_admin_list_is_read_only_and_links_to_the_object(two_logs, personas, client_for):
    client = client_for(personas["bob"])
    entry = AuditEntry.objects.filter(workspace__slug="alpha").first()
    page = client.get(reverse("admin:fleet_auditentry_change", args=[entry.pk]))
    assert page.status_code == 200
    assert reverse("admin:fleet_mailbox_change", args=[two_logs["a"].pk]) in page.text
    assert client.get(reverse("admin:fleet_auditentry_add")).status_code == 403
    assert client.post(
        reverse("admin:fleet_auditentry_delete", args=[entry.pk]), {"post": "yes"}
    ).status_code in (403, 404)
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


@pytest.mark.parametrize(
    "query, expected",
    [
        ("action=mailbox.disabled", [("beta", "mailbox.disabled"), ("alpha", "mailbox.disabled")]),
        ("via=api", [("beta", "mailbox.enabled"), ("beta", "mailbox.disabled")]),
        ("actor=system", []),
        ("object_type=workspace", []),
        ("when=24h", None),  # all five
        ("when=2001-01-01", []),
        ("when=not-a-day", []),
    ],
)
def test_admin_filters(two_logs, personas, client_for, query, expected):
    response = client_for(personas["root"]).get(
        reverse("admin:fleet_auditentry_changelist") + "?" + query
    )
    assert response.status_code == 200
    shown = shown_actions(response)
    assert shown == expected if expected is not None else len(shown) == 5


def test_admin_filter_by_workspace_and_actor(two_logs, ws_a, personas, client_for):
    url = reverse("admin:fleet_auditentry_changelist")
    client = client_for(personas["root"])
    assert {s for s, _ in shown_actions(client.get(f"{url}?workspace__id__exact={ws_a.pk}"))} == {
        "alpha"
    }
    shown = shown_actions(client.get(f"{url}?actor={personas['root'].pk}"))
    assert {s for s, _ in shown} == {"beta"} and len(shown) == 2


def test_admin_list_never_counts_past_its_cap(two_logs, personas, client_for, monkeypatch):
    from fleet.admin.audit import CappedPaginator

    monkeypatch.setattr(CappedPaginator, "cap", 2)
    response = client_for(personas["root"]).get(reverse("admin:fleet_auditentry_changelist"))
    assert "more than 2 entries" in response.text
    response = client_for(personas["alice"]).get(
        reverse("admin:fleet_auditentry_changelist") + "?action=mailbox.deleted"
    )
    assert "1 entry" in response.text


def test_admin_list_queries_do_not_grow_with_the_page(ws_a, personas, client_for):
    """One page of 50 costs what a page of 2 costs: no query per row (actor, workspace)."""
    mailbox = make_mailbox(ws_a, "active", "x", 1)
    client = client_for(personas["bob"])
    url = reverse("admin:fleet_auditentry_changelist")

    def queries_for_page():
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        return len(queries)

    for _ in range(2):
        audit.record("mailbox.updated", mailbox, actor=personas["alice"], via="admin")
    few = queries_for_page()
    for _ in range(60):
        audit.record("mailbox.updated", mailbox, actor=personas["bob"], via="api")
    assert queries_for_page() == few


def test_seed_audit_writes_the_entries_it_says(ws_a, personas):
    from io import StringIO

    from django.core.management import call_command

    call_command("seed_audit", entries=300, stdout=StringIO())
    assert AuditEntry.objects.count() == 300
    assert AuditEntry.objects.filter(actor_name="system").exists()
    assert AuditEntry.objects.filter(workspace=ws_a).exclude(actor=None).exists()


def api_actions(response):
    assert response.status_code == 200, response.content
    return [(e["workspace_id"], e["action"]) for e in response.json()["data"]]


def test_api_reads_only_what_the_key_reaches(two_logs, ws_a, ws_b, api, api_keys):
    url = "/api/v1/audit-log"
    assert {w for w, _ in api_actions(api("get", url, api_keys["a_viewer"]))} == {ws_a.pk}
    assert {w for w, _ in api_actions(api("get", url, api_keys["b_viewer"]))} == {ws_b.pk}
    # A platform key: every workspace of its user (bob: A and B).
    assert len(api_actions(api("get", url, api_keys["bob_platform"]))) == 5
    assert api_actions(api("get", url, api_keys["olga_platform"])) == []
    # Naming another workspace finds nothing rather than its entries.
    assert api_actions(api("get", f"{url}?workspace_id={ws_b.pk}", api_keys["a_viewer"])) == []
    assert api_actions(api("get", f"{url}?workspace_id={ws_b.pk}", api_keys["alice_platform"])) == []


def test_api_entry_shape_and_filters(two_logs, ws_a, api, api_keys):
    url = "/api/v1/audit-log"
    key = api_keys["bob_platform"]
    [entry] = api("get", f"{url}?action=mailbox.deleted", key).json()["data"]
    assert entry["actor"] == "bob" and entry["via"] == "admin"
    assert entry["object_type"] == "mailbox" and entry["object_id"] == str(two_logs["a"].uid)
    assert set(entry) >= {"created_at", "client_address", "request_id", "api_key_prefix", "changes"}
    assert len(api_actions(api("get", f"{url}?actor=bob", key))) == 3
    assert api_actions(api("get", f"{url}?actor=system", key)) == []
    assert len(api_actions(api("get", f"{url}?via=api", key))) == 2
    assert len(api_actions(api("get", f"{url}?object_id={two_logs['a'].uid}", key))) == 3
    since = (timezone.now() - timedelta(hours=1)).isoformat()
    assert len(api_actions(api("get", url, key, data={"since": since}))) == 5
    assert api_actions(api("get", url, key, data={"until": since})) == []


@pytest.mark.parametrize(
    "query",
    ["action=mailbox.exploded", "via=fax", "since=yesterday", "cursor=garbage", "limit=0",
     "workspace_id=-1", "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z"],
)
def test_api_bad_filters_are_clear_400s(two_logs, api, api_keys, query):
    response = api("get", f"/api/v1/audit-log?{query}", api_keys["bob_platform"])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_api_cursor_walks_every_entry_once_newest_first(two_logs, api, api_keys):
    seen, url = [], "/api/v1/audit-log?limit=2"
    while url:
        body = api("get", url, api_keys["bob_platform"]).json()
        seen += [e["id"] for e in body["data"]]
        url = body["pagination"]["next"]
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 5


# --- Retention --------------------------------------------------------------------------------
def test_pruning_deletes_only_entries_past_retention_in_batches(two_logs, settings):
    settings.AUDIT_RETENTION_DAYS = 365
    old = list(AuditEntry.objects.order_by("id").values_list("pk", flat=True)[:3])
    AuditEntry.objects.filter(pk__in=old).update(created_at=timezone.now() - timedelta(days=400))
    with CaptureQueriesContext(connection) as queries:
        assert audit.prune(batch=2) == 3
    deletes = [q for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 2  # 2 + 1, never one statement for everything
    assert not AuditEntry.objects.filter(pk__in=old).exists()
    assert AuditEntry.objects.count() == 2
    assert audit.prune() == 0


def test_retention_zero_keeps_everything(two_logs, settings):
    settings.AUDIT_RETENTION_DAYS = 0
    AuditEntry.objects.update(created_at=timezone.now() - timedelta(days=4000))
    assert audit.prune() == 0 and AuditEntry.objects.count() == 5


def test_pruning_is_a_periodic_task(two_logs, settings):
    assert tasks.prune_audit_log in tasks.PERIODIC
    settings.AUDIT_RETENTION_DAYS = 30
    AuditEntry.objects.filter(action="mailbox.deleted").update(
        created_at=timezone.now() - timedelta(days=31)
    )
    assert tasks.prune_audit_log.call() == 1


def test_a_deleted_workspace_keeps_its_log_for_superusers(two_logs, ws_b, personas, client_for):
    gone = ws_b.pk
    ws_b.delete()
    assert AuditEntry.objects.filter(workspace_id=gone).count() == 2
    shown = client_for(personas["bob"]).get(reverse("admin:fleet_auditentry_changelist"))
    assert len(shown.context["cl"].result_list) == 3


def test_admin_workspace_form_records_webhook_secret_as_changed_and_new_members(
    ws_a, personas, client_for, dns_on_loopback
):
    dns_on_loopback.zone.records["hooks.example.com"] = [("A", "93.184.216.34")]
    root = client_for(personas["root"])
    url = reverse("admin:fleet_workspace_change", args=[ws_a.pk])
    response = root.post(
        url,
        {
            "name": "Alpha",
            "slug": "alpha",
            "health_check_interval": "24:00:00",
            "webhook_url": "https://hooks.example.com/fleet",
            "webhook_secret": PLANTED,
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
            "memberships-0-workspace": ws_a.pk,
            "memberships-0-username": "olga",
            "memberships-0-role": "viewer",
            "_save": "Save",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    updated = AuditEntry.objects.get(action="workspace.updated")
    assert updated.changes["webhook_secret"] == audit.CHANGED
    assert updated.changes["webhook_url"] == {
        "before": "", "after": "https://hooks.example.com/fleet"
    }
    member = AuditEntry.objects.get(action="membership.created")
    assert member.workspace_id == ws_a.pk and member.changes["role"]["after"] == "viewer"
    assert PLANTED not in all_entries_text()


def test_admin_search_finds_an_object_or_a_request_exactly(two_logs, personas, client_for):
    url = reverse("admin:fleet_auditentry_changelist")
    client = client_for(personas["root"])
    uid = str(two_logs["a"].uid)
    assert len(shown_actions(client.get(url, {"q": uid}))) == 3
    assert shown_actions(client.get(url, {"q": uid.upper()})) == []  # exact, as indexed
    entry = AuditEntry.objects.filter(object_id=str(two_logs["b"].uid)).first()
    AuditEntry.objects.filter(pk=entry.pk).update(request_id="trace-7")
    assert shown_actions(client.get(url, {"q": "trace-7"})) == [("beta", entry.action)]


def test_the_pages_read_an_index_not_the_table(two_logs, personas):
    """EXPLAIN (sequential scans off, as on ten million rows): the manager's newest-first page,
    an object's entries and a request's read an index of the log."""
    from tests.conftest import on_postgres

    if not on_postgres():
        pytest.skip("PostgreSQL's plans")
    queries = [
        AuditEntry.objects.restrict(personas["bob"]).order_by("-created_at", "-id")[:50],
        AuditEntry.objects.filter(object_id=str(two_logs["a"].uid)).order_by("-created_at")[:50],
        AuditEntry.objects.filter(request_id="trace-7")[:50],
        AuditEntry.objects.filter(action="apikey.revoked").order_by("-created_at")[:50],
    ]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for queryset in queries:
            sql, params = queryset.query.sql_with_params()
            cursor.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Index" in plan and "fleet_auditentry" in plan, plan
            assert "Seq Scan on fleet_auditentry" not in plan, plan
