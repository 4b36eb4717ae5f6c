"""What each endpoint does: workspaces and webhooks, mailbox lists (filters, cursor pages, a fixed
number of queries), details without secrets, settings, warmup, credentials."""

import json

import pytest
from django_tasks_db.models import DBTaskResult

from fleet import errors
from fleet.models import Credential, Mailbox, MailboxEvent, Membership, Role, Tag, Workspace
from tests.conftest import issue_key


def test_workspace_lifecycle_with_a_platform_key(api, api_keys, personas):
    root = api_keys["root_platform"]
    made = api("post", "/api/v1/workspaces", root, data={"name": "Gamma Leads"})
    assert made.status_code == 201
    data = made.json()["data"]
    assert (data["name"], data["slug"], data["role"]) == ("Gamma Leads", "gamma-leads", "owner")
    gamma = Workspace.objects.get(pk=data["id"])
    assert Membership.objects.get(workspace=gamma).user == personas["root"]

    renamed = api("patch", f"/api/v1/workspaces/{gamma.pk}", root, data={"name": "Gamma"})
    assert (
        renamed.json()["data"]["name"] == "Gamma"
        and renamed.json()["data"]["slug"] == "gamma-leads"
    )

    hook = api(
        "post",
        f"/api/v1/workspaces/{gamma.pk}/webhook",
        root,
        data={"url": "https://hooks.example/fleet", "secret": "whsec-123"},
    )
    assert hook.status_code == 200
    assert hook.json()["data"] == {
        "url": "https://hooks.example/fleet",
        "secret_set": True,
        "enabled": True,
        "disabled_reason": "",
    }
    assert "whsec-123" not in hook.content.decode()
    assert "whsec-123" not in api("get", f"/api/v1/workspaces/{gamma.pk}", root).content.decode()
    gamma.refresh_from_db()
    assert gamma.webhook_secret == "whsec-123"  # stored (encrypted), never shown

    # A 410 turned deliveries off; a new URL turns them back on, keeping the secret.
    gamma.webhook_enabled, gamma.webhook_disabled_reason = False, "410 Gone"
    gamma.save()
    again = api(
        "post", f"/api/v1/workspaces/{gamma.pk}/webhook", root, data={"url": "https://h.example/2"}
    )
    assert again.json()["data"]["enabled"] is True
    gamma.refresh_from_db()
    assert gamma.webhook_secret == "whsec-123" and gamma.webhook_enabled

    off = api("post", f"/api/v1/workspaces/{gamma.pk}/webhook", root, data={"url": ""})
    assert off.json()["data"]["url"] == "" and off.json()["data"]["enabled"] is False

    gone = api("delete", f"/api/v1/workspaces/{gamma.pk}", root)
    assert gone.status_code == 200 and not Workspace.objects.filter(pk=gamma.pk).exists()


def test_owner_may_update_but_only_platform_key_deletes(api, api_keys, personas, ws_a):
    Membership.objects.filter(user=personas["bob"], workspace=ws_a).update(role=Role.OWNER)

    _, owner_ws_key = issue_key(name="o", user=personas["bob"], workspace=ws_a, role="owner")
    assert (
        api("patch", f"/api/v1/workspaces/{ws_a.pk}", owner_ws_key, data={"name": "A2"}).status_code
        == 200
    )
    refused = api("delete", f"/api/v1/workspaces/{ws_a.pk}", owner_ws_key)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "PLATFORM_KEY_REQUIRED"
    assert (
        api("delete", f"/api/v1/workspaces/{ws_a.pk}", api_keys["bob_platform"]).status_code == 200
    )


@pytest.fixture
def fleet_a(ws_a, mailboxes):
    """Twelve more mailboxes in A with a spread of states."""
    vip = Tag.objects.create(workspace=ws_a, name="VIP")
    for i in range(12):
        mailbox = Mailbox.objects.create(
            workspace=ws_a,
            email=f"m{i:02}@alpha.example",
            auth_method="oauth",
            status="error" if i % 3 == 0 else "active",
            error_code=errors.API_KEY_INVALID.code if i % 3 == 0 else "",
            warmup_status="paused" if i % 4 == 0 else "not_started",
            refresh_token=f"rt-secret-{i}",
            totp_secret="JBSWY3DPEHPK3PXP",
        )
        if i % 2 == 0:
            mailbox.tags.add(vip)
    return ws_a


def emails(response):
    assert response.status_code == 200, response.content
    return [m["email"] for m in response.json()["data"]]


def test_mailbox_filters(api, api_keys, fleet_a):
    key = api_keys["a_viewer"]
    assert len(emails(api("get", "/api/v1/mailboxes?status=error", key))) == 4
    assert len(emails(api("get", "/api/v1/mailboxes?tag=vip", key))) == 6  # case-insensitive
    assert len(emails(api("get", "/api/v1/mailboxes?warmup_status=paused", key))) == 3
    assert len(emails(api("get", "/api/v1/mailboxes?error_code=API_KEY_INVALID", key))) == 4
    both = emails(api("get", "/api/v1/mailboxes?status=error&tag=VIP&warmup_status=paused", key))
    assert both == ["m00@alpha.example"]  # the only i divisible by 3, 2 and 4


def test_cursor_pages_cover_everything_once(api, api_keys, fleet_a):
    key = api_keys["a_viewer"]
    seen, url = [], "/api/v1/mailboxes?limit=5"
    while url:
        response = api("get", url, key)
        seen += emails(response)
        url = response.json()["pagination"]["next"]
        assert len(seen) <= 13
    assert len(seen) == len(set(seen)) == 13
    # A mailbox added between pages does not shift the pages (ids only grow).
    first = api("get", "/api/v1/mailboxes?limit=5", key).json()
    Mailbox.objects.create(workspace=fleet_a, email="late@alpha.example", auth_method="oauth")
    second = api("get", first["pagination"]["next"], key)
    assert emails(second)[0] not in [m["email"] for m in first["data"]]


def test_mailbox_list_costs_a_fixed_number_of_queries(
    api, api_keys, fleet_a, django_assert_max_num_queries
):
    key = api_keys["a_viewer"]
    api("get", "/api/v1/mailboxes", key)  # last_used_at written on first use
    with django_assert_max_num_queries(6):
        assert len(emails(api("get", "/api/v1/mailboxes?limit=200", key))) == 13


def test_details_never_carry_a_secret(api, api_keys, fleet_a):
    mailbox = Mailbox.objects.get(email="m00@alpha.example")
    mailbox.password = "app-password-xyz"
    mailbox.access_token = "at-secret"
    mailbox.save()
    for response in (
        api("get", f"/api/v1/mailboxes/{mailbox.uid}", api_keys["a_viewer"]),
        api("get", "/api/v1/mailboxes", api_keys["a_viewer"]),
    ):
        text = response.content.decode()
        for secret in ("app-password-xyz", "at-secret", "rt-secret-0", "JBSWY3DPEHPK3PXP"):
            assert secret not in text
    data = api("get", f"/api/v1/mailboxes/{mailbox.uid}", api_keys["a_viewer"]).json()["data"]
    assert (data["password_set"], data["totp_secret_set"], data["oauth_connected"]) == (
        True,
        True,
        True,
    )
    assert data["error"] == {
        "code": "API_KEY_INVALID",
        "message": errors.API_KEY_INVALID.message,
        "hint": errors.API_KEY_INVALID.hint,
    }


def test_mailbox_update_and_delete(api, api_keys, mailboxes, personas):
    ann = mailboxes["a"]
    operator = api_keys["a_operator"]
    changed = api(
        "patch",
        f"/api/v1/mailboxes/{ann.uid}",
        operator,
        data={"display_name": "Ann Lee", "tags": ["Alpha-Tag", "new one"]},
    )
    assert changed.status_code == 200
    assert sorted(changed.json()["data"]["tags"]) == ["alpha-tag", "new one"]  # existing reused
    assert Tag.objects.filter(workspace=ann.workspace).count() == 2
    # Warmup settings are a manager's.
    refused = api(
        "patch", f"/api/v1/mailboxes/{ann.uid}", operator, data={"warmup_daily_volume": 50}
    )
    assert refused.status_code == 403
    allowed = api(
        "patch",
        f"/api/v1/mailboxes/{ann.uid}",
        api_keys["a_manager"],
        data={"warmup_daily_volume": 50},
    )
    assert allowed.json()["data"]["warmup_daily_volume"] == 50

    gone = api("delete", f"/api/v1/mailboxes/{ann.uid}", api_keys["a_manager"])
    assert gone.status_code == 200 and gone.json()["data"]["email"] == "ann@alpha.example"
    assert not Mailbox.objects.filter(pk=ann.pk).exists()
    note = MailboxEvent.objects.filter(email="ann@alpha.example", kind="note").first()  # newest
    assert note.message == "Mailbox deleted" and note.via == "api" and note.actor == personas["bob"]
    changed = MailboxEvent.objects.filter(email="ann@alpha.example", message__startswith="Changed")
    assert changed.count() == 2  # the two accepted updates, each recorded


def test_warmup_rules(api, api_keys, mailboxes):
    ann = mailboxes["a"]  # pending: its connection was never tested
    start = api("post", f"/api/v1/mailboxes/{ann.uid}/warmup/start", api_keys["a_manager"])
    assert start.status_code == 409
    assert start.json()["error"]["code"] == "MAILBOX_NOT_APPROVED"
    ann.set_status(Mailbox.Status.ACTIVE)
    assert (
        api("post", f"/api/v1/mailboxes/{ann.uid}/warmup/start", api_keys["a_operator"]).status_code
        == 403
    )
    resume = api("post", f"/api/v1/mailboxes/{ann.uid}/warmup/resume", api_keys["a_manager"])
    assert resume.status_code == 400  # not paused
    bad = api(
        "post",
        f"/api/v1/mailboxes/{ann.uid}/warmup/start",
        api_keys["a_manager"],
        data={"daily_volume": 2001},
    )
    assert bad.status_code == 400 and bad.json()["error"]["fields"]["daily_volume"]
    ok = api(
        "post",
        f"/api/v1/mailboxes/{ann.uid}/warmup/start",
        api_keys["a_manager"],
        data={"daily_volume": 10},
    )
    assert ok.json()["data"]["warmup_status"] == "active"
    assert ok.json()["data"]["warmup_daily_volume"] == 10
    assert ann.events.filter(kind="note", message__startswith="Warmup not_started").exists()


def test_credentials_are_created_encrypted_and_listed_without_secrets(api, api_keys, ws_a):
    made = api(
        "post",
        "/api/v1/credentials",
        api_keys["a_manager"],
        data={
            "name": "Graph",
            "kind": "graph_app_only",
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "abc",
            "client_secret": "very-secret-value",
            "secret_expires_at": "2030-01-31",
        },
    )
    assert made.status_code == 201
    assert "very-secret-value" not in made.content.decode()
    credential = Credential.objects.get()
    assert credential.client_secret == "very-secret-value"
    listed = api("get", "/api/v1/credentials", api_keys["a_viewer"])
    assert "very-secret-value" not in listed.content.decode()
    assert listed.json()["data"][0]["client_secret_set"] is True
    assert listed.json()["data"][0]["secret_expires_at"] == "2030-01-31"
    assert api("get", "/api/v1/credentials", api_keys["b_viewer"]).json()["data"] == []


def test_credential_verify_is_queued_like_the_admin(
    api, api_keys, ws_a, django_capture_on_commit_callbacks
):
    graph = Credential.objects.create(
        workspace=ws_a, name="g", kind="graph_app_only", client_id="c", client_secret="s"
    )
    oauth = Credential.objects.create(
        workspace=ws_a, name="o", kind="oauth_app", client_id="c", client_secret="s"
    )
    assert (
        api("post", f"/api/v1/credentials/{graph.pk}/verify", api_keys["a_viewer"]).status_code
        == 403
    )
    with django_capture_on_commit_callbacks(execute=True):
        queued = api("post", f"/api/v1/credentials/{graph.pk}/verify", api_keys["a_manager"])
    assert queued.status_code == 202 and queued.json()["data"]["id"] == graph.pk
    task = DBTaskResult.objects.get()
    assert task.task_path.endswith("verify_credential")
    assert json.loads(json.dumps(task.args_kwargs))["args"] == [graph.pk]
    assert (
        api("post", f"/api/v1/credentials/{oauth.pk}/verify", api_keys["a_manager"]).status_code
        == 400
    )
    assert api("get", f"/api/v1/credentials/{graph.pk}", api_keys["b_viewer"]).status_code == 404


def test_totp_code_is_shown_and_recorded(api, api_keys, mailboxes, personas):
    import pyotp

    ann = mailboxes["a"]
    assert (
        api("post", f"/api/v1/mailboxes/{ann.uid}/totp", api_keys["a_operator"]).status_code == 404
    )
    ann.totp_secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    ann.save()
    assert api("post", f"/api/v1/mailboxes/{ann.uid}/totp", api_keys["a_viewer"]).status_code == 403
    response = api("post", f"/api/v1/mailboxes/{ann.uid}/totp", api_keys["a_operator"])
    assert response.status_code == 200
    data = response.json()["data"]
    assert pyotp.TOTP("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").verify(data["code"], valid_window=1)
    assert 1 <= data["valid_for"] <= 30
    assert "JBSWY3DPEHPK3PXP" not in response.content.decode()
    event = ann.events.get(kind="totp_reveal")
    assert event.actor == personas["bob"]


def test_connection_test_is_queued_like_the_admin(
    api, api_keys, mailboxes, django_capture_on_commit_callbacks
):
    ann = mailboxes["a"]
    assert api("post", f"/api/v1/mailboxes/{ann.uid}/test", api_keys["a_viewer"]).status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        queued = api("post", f"/api/v1/mailboxes/{ann.uid}/test", api_keys["a_operator"])
    assert queued.status_code == 202 and queued.json()["data"] == {
        "uid": str(ann.uid),
        "queued": True,
    }
    task = DBTaskResult.objects.get()
    assert task.task_path.endswith("test_due_mailboxes")
    due = Mailbox.objects.filter(check_due_at__isnull=False)
    assert list(due.values_list("pk", flat=True)) == [ann.pk]
    ann.set_status(Mailbox.Status.DISABLED)
    assert (
        api("post", f"/api/v1/mailboxes/{ann.uid}/test", api_keys["a_operator"]).status_code == 400
    )
