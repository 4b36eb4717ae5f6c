"""API keys: the scope matrix (platform vs workspace key vs revoked vs missing vs another
workspace's object), the two headers, hashing, last use, and the admin that issues them."""

import pytest
from django.urls import reverse

from fleet.models import ApiKey, Credential, Mailbox, Membership, Role, Workspace
from tests.conftest import issue_key

MISSING, GARBAGE = None, "sk_user_notAKeyAtAll0000000000000000000000000"


def operations(m, ws_a, ws_b):
    """name → (method, path, body). `m` are the `mailboxes` fixture's objects."""
    return {
        "get_a": ("get", f"/api/v1/mailboxes/{m['a'].uid}", None),
        "get_b": ("get", f"/api/v1/mailboxes/{m['b'].uid}", None),
        "patch_a": ("patch", f"/api/v1/mailboxes/{m['a'].uid}", {"display_name": "Ann"}),
        "delete_b": ("delete", f"/api/v1/mailboxes/{m['b'].uid}", None),
        "create_ws": ("post", "/api/v1/workspaces", {"name": "Gamma"}),
        "delete_ws_a": ("delete", f"/api/v1/workspaces/{ws_a.pk}", None),
        "get_ws_b": ("get", f"/api/v1/workspaces/{ws_b.pk}", None),
        "credential_a": (
            "post",
            f"/api/v1/credentials?workspace_id={ws_a.pk}",
            {"name": "app", "kind": "oauth_app", "client_id": "cid", "client_secret": "s3cret"},
        ),
    }


# key → {operation: status or (status, error code)}
OUT_A = "OUTSIDE_KEY_WORKSPACE"
PLATFORM = "PLATFORM_KEY_REQUIRED"
DENIED = "PERMISSION_DENIED"
MATRIX = {
    "root_platform": dict(
        get_a=200,
        get_b=200,
        patch_a=200,
        delete_b=200,
        create_ws=201,
        delete_ws_a=200,
        get_ws_b=200,
        credential_a=201,
    ),
    # bob: manager of A, viewer of B
    "bob_platform": dict(
        get_a=200,
        get_b=200,
        patch_a=200,
        delete_b=(403, DENIED),
        create_ws=(403, DENIED),
        delete_ws_a=(403, DENIED),
        get_ws_b=200,
        credential_a=201,
    ),
    # alice: operator of A
    "alice_platform": dict(
        get_a=200,
        get_b=404,
        patch_a=200,
        delete_b=404,
        create_ws=(403, DENIED),
        delete_ws_a=(403, DENIED),
        get_ws_b=404,
        credential_a=(403, DENIED),
    ),
    # olga: member of nothing
    "olga_platform": dict(
        get_a=404,
        get_b=404,
        patch_a=404,
        delete_b=404,
        create_ws=(403, DENIED),
        delete_ws_a=404,
        get_ws_b=404,
        credential_a=404,
    ),
    "a_manager": dict(
        get_a=200,
        get_b=404,
        patch_a=200,
        delete_b=404,
        create_ws=(403, PLATFORM),
        delete_ws_a=(403, PLATFORM),
        get_ws_b=(403, OUT_A),
        credential_a=201,
    ),
    "a_viewer": dict(
        get_a=200,
        get_b=404,
        patch_a=(403, DENIED),
        delete_b=404,
        create_ws=(403, PLATFORM),
        delete_ws_a=(403, PLATFORM),
        get_ws_b=(403, OUT_A),
        credential_a=(403, DENIED),
    ),
    "b_viewer": dict(
        get_a=404,
        get_b=200,
        patch_a=404,
        delete_b=(403, DENIED),
        create_ws=(403, PLATFORM),
        delete_ws_a=(403, PLATFORM),
        get_ws_b=200,
        credential_a=(403, OUT_A),
    ),
}
OPERATION_NAMES = [
    "get_a",
    "get_b",
    "patch_a",
    "delete_b",
    "create_ws",
    "delete_ws_a",
    "get_ws_b",
    "credential_a",
]
MATRIX["revoked"] = {op: (401, "API_KEY_REVOKED") for op in OPERATION_NAMES}
MATRIX["missing"] = {op: (401, "API_KEY_MISSING") for op in OPERATION_NAMES}
MATRIX["garbage"] = {op: (401, "API_KEY_INVALID") for op in OPERATION_NAMES}

CELLS = [(key, op) for key, row in MATRIX.items() for op in OPERATION_NAMES if op in row]


@pytest.mark.parametrize("key_name,operation", CELLS)
def test_key_scope_matrix(key_name, operation, api, api_keys, mailboxes, ws_a, ws_b):
    key = {"missing": MISSING, "garbage": GARBAGE, **api_keys}[key_name]
    method, path, body = operations(mailboxes, ws_a, ws_b)[operation]
    expected = MATRIX[key_name][operation]
    status, code = expected if isinstance(expected, tuple) else (expected, None)
    if status == 404:
        code = "NOT_FOUND"

    response = api(method, path, key, data=body)

    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is (status < 400)
    if code:
        assert body["error"]["code"] == code
    # What the answer implies actually happened (or did not).
    if operation == "delete_b":
        assert Mailbox.objects.filter(pk=mailboxes["b"].pk).exists() is (status != 200)
    if operation == "delete_ws_a":
        assert Workspace.objects.filter(pk=ws_a.pk).exists() is (status != 200)
    if operation == "create_ws":
        assert Workspace.objects.filter(name="Gamma").exists() is (status == 201)
    if operation == "credential_a":
        assert Credential.objects.filter(workspace=ws_a).exists() is (status == 201)
    if operation == "patch_a":
        mailboxes["a"].refresh_from_db()
        assert (mailboxes["a"].display_name == "Ann") is (status == 200)


@pytest.mark.parametrize(
    "key_name,visible",
    [
        ("root_platform", {"ann@alpha.example", "ben@beta.example"}),
        ("bob_platform", {"ann@alpha.example", "ben@beta.example"}),
        ("alice_platform", {"ann@alpha.example"}),
        ("olga_platform", set()),
        ("a_viewer", {"ann@alpha.example"}),
        ("b_viewer", {"ben@beta.example"}),
    ],
)
def test_lists_show_only_what_the_key_reaches(key_name, visible, api, api_keys, mailboxes):
    response = api("get", "/api/v1/mailboxes", api_keys[key_name])
    assert response.status_code == 200
    assert {m["email"] for m in response.json()["data"]} == visible
    workspaces = api("get", "/api/v1/workspaces", api_keys[key_name]).json()["data"]
    assert {w["slug"] for w in workspaces} == {e.split("@")[1].split(".")[0] for e in visible}


def test_workspace_key_naming_another_workspace_is_403(api, api_keys, ws_b):
    response = api(
        "post",
        f"/api/v1/credentials?workspace_id={ws_b.pk}",
        api_keys["a_manager"],
        data={"name": "x", "kind": "oauth_app", "client_id": "c", "client_secret": "s"},
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "OUTSIDE_KEY_WORKSPACE"
    listing = api("get", f"/api/v1/mailboxes?workspace_id={ws_b.pk}", api_keys["a_manager"])
    assert listing.status_code == 200 and listing.json()["data"] == []


def test_workspace_key_is_capped_by_its_creators_current_role(api, api_keys, mailboxes, personas):
    """bob made `a_manager`; once bob is only a viewer of A, the key can no longer write, and
    once bob leaves A it reaches nothing."""
    uid = mailboxes["a"].uid
    membership = Membership.objects.get(user=personas["bob"], workspace__slug="alpha")
    membership.role = Role.VIEWER
    membership.save()
    patch = api("patch", f"/api/v1/mailboxes/{uid}", api_keys["a_manager"], data={"tags": []})
    assert patch.status_code == 403
    membership.delete()
    assert api("get", f"/api/v1/mailboxes/{uid}", api_keys["a_manager"]).status_code == 404


def test_deactivated_users_keys_stop_working(api, api_keys, personas):
    personas["bob"].is_active = False
    personas["bob"].save()
    response = api("get", "/api/v1/mailboxes", api_keys["bob_platform"])
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "API_KEY_INVALID"


def test_key_is_accepted_as_bearer_and_x_api_key_wins(api, api_keys, mailboxes):
    bearer = api(
        "get",
        "/api/v1/mailboxes",
        headers={"Authorization": f"Bearer {api_keys['alice_platform']}"},
    )
    assert bearer.status_code == 200
    assert [m["email"] for m in bearer.json()["data"]] == ["ann@alpha.example"]
    # Seed 000 sends both headers; a placeholder left in Authorization does not matter.
    both = api(
        "get",
        "/api/v1/mailboxes",
        api_keys["b_viewer"],
        headers={"Authorization": "Bearer YOUR_API_TOKEN"},
    )
    assert [m["email"] for m in both.json()["data"]] == ["ben@beta.example"]
    wrong_scheme = api(
        "get", "/api/v1/mailboxes", headers={"Authorization": f"Basic {api_keys['bob_platform']}"}
    )
    assert wrong_scheme.status_code == 401
    assert wrong_scheme["WWW-Authenticate"].startswith("Bearer")


def test_keys_are_stored_hashed_and_last_use_is_recorded(api, personas):
    key, raw = issue_key(name="crm", user=personas["alice"])
    assert raw.startswith("sk_user_") and len(raw) == len("sk_user_") + 40
    stored = ApiKey.objects.filter(pk=key.pk).values().get()
    assert raw not in {str(v) for v in stored.values()}
    assert stored["hashed_key"] == ApiKey.hash(raw) and stored["prefix"] == raw[:14]
    assert stored["last_used_at"] is None
    assert api("get", "/api/v1/mailboxes", raw).status_code == 200
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_workspace_keys_look_different(personas, ws_a):
    _, raw = issue_key(name="w", user=personas["bob"], workspace=ws_a, role=Role.VIEWER)
    assert raw.startswith("sk_") and not raw.startswith("sk_user_")


def test_revoked_key_is_refused_at_once(api, personas):
    key, raw = issue_key(name="crm", user=personas["bob"])
    assert api("get", "/api/v1/workspaces", raw).status_code == 200
    key.revoke()
    response = api("get", "/api/v1/workspaces", raw)
    assert response.status_code == 401
    assert response.json() == {
        "success": False,
        "error": {"code": "API_KEY_REVOKED", "message": "This API key was revoked"},
    }


# --- Admin -------------------------------------------------------------------------------------

ADD = "admin:fleet_apikey_add"


def test_admin_shows_a_new_key_once(client_for, personas, api):
    client = client_for(personas["alice"])
    page = client.post(reverse(ADD), {"name": "crm", "kind": "platform", "role": ""})
    assert page.status_code == 200
    raw = page.context["raw_key"]
    assert raw.startswith("sk_user_") and raw in page.content.decode()
    assert "no-store" in page["Cache-Control"]
    key = ApiKey.objects.get(name="crm")
    assert key.user == personas["alice"] and key.hashed_key == ApiKey.hash(raw)
    # It works, and no later page shows it again.
    assert api("get", "/api/v1/mailboxes", raw).status_code == 200
    for url in (
        reverse("admin:fleet_apikey_changelist"),
        reverse("admin:fleet_apikey_change", args=[key.pk]),
    ):
        html = client.get(url).content.decode()
        assert key.prefix in html and raw not in html


def test_admin_workspace_key_needs_manager_role_and_no_more_than_it(client_for, personas, ws_a):
    alice = client_for(personas["alice"])  # operator of A
    page = alice.post(
        reverse(ADD), {"name": "w", "kind": "workspace", "workspace": ws_a.pk, "role": "viewer"}
    )
    assert page.status_code == 200 and "workspace" in page.context["adminform"].form.errors
    assert not ApiKey.objects.exists()

    bob = client_for(personas["bob"])  # manager of A
    too_much = bob.post(
        reverse(ADD), {"name": "w", "kind": "workspace", "workspace": ws_a.pk, "role": "owner"}
    )
    assert "role" in too_much.context["adminform"].form.errors
    made = bob.post(
        reverse(ADD), {"name": "w", "kind": "workspace", "workspace": ws_a.pk, "role": "manager"}
    )
    assert made.context["raw_key"].startswith("sk_")
    key = ApiKey.objects.get()
    assert (key.kind, key.workspace, key.role, key.user) == (
        "workspace",
        ws_a,
        "manager",
        personas["bob"],
    )


def test_admin_scopes_keys_and_revokes(client_for, personas, ws_a, api):
    alice_key, alice_raw = issue_key(name="alice's", user=personas["alice"])
    ws_key, ws_raw = issue_key(name="A key", user=personas["bob"], workspace=ws_a, role=Role.VIEWER)
    changelist = reverse("admin:fleet_apikey_changelist")
    # Bob (manager of A) sees A's workspace key, not alice's own platform key.
    html = client_for(personas["bob"]).get(changelist).content.decode()
    assert "A key" in html and "alice&#x27;s" not in html
    assert (
        client_for(personas["bob"])
        .get(reverse("admin:fleet_apikey_change", args=[alice_key.pk]))
        .status_code
        == 404
    )
    # Alice (operator of A) sees her own key only.
    html = client_for(personas["alice"]).get(changelist).content.decode()
    assert "alice&#x27;s" in html and "A key" not in html
    # Bob revokes the workspace key; the revoke of alice's key (not his) does nothing.
    client_for(personas["bob"]).post(
        changelist,
        {"action": "revoke", "_selected_action": [ws_key.pk, alice_key.pk]},
    )
    assert api("get", "/api/v1/mailboxes", ws_raw).status_code == 401
    assert api("get", "/api/v1/mailboxes", alice_raw).status_code == 200
