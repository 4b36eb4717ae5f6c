"""`POST /api/v1/mailboxes/move-to-oauth`, `GET /mailboxes/move-to-oauth/{uid}` and
`GET /mailboxes/move-plan`: the key-scope matrix, and a move run by a real `db_worker` process
against the Microsoft sandbox and its SMTP/IMAP servers."""

import time

import pytest

from fleet import move
from fleet.models import MoveRun
from tests.test_basic_auth_move import (  # noqa: F401  (fixtures)
    ALL_ROLES,
    app_password_mailbox,
    fresh_tokens,
    mail,
    verified,
)

DENIED, OUT_A = "PERMISSION_DENIED", "OUTSIDE_KEY_WORKSPACE"


def operations(ws_a, ws_b, run_a):
    return {
        "move_a": ("post", f"/api/v1/mailboxes/move-to-oauth?workspace_id={ws_a.pk}", {}),
        "move_b": ("post", f"/api/v1/mailboxes/move-to-oauth?workspace_id={ws_b.pk}", {}),
        "plan_a": ("get", f"/api/v1/mailboxes/move-plan?workspace_id={ws_a.pk}", None),
        "run_a": ("get", f"/api/v1/mailboxes/move-to-oauth/{run_a.uid}", None),
    }


MATRIX = {
    "root_platform": dict(move_a=202, move_b=202, plan_a=200, run_a=200),
    "bob_platform": dict(move_a=202, move_b=(403, DENIED), plan_a=200, run_a=200),
    "alice_platform": dict(move_a=202, move_b=404, plan_a=200, run_a=200),
    "olga_platform": dict(move_a=404, move_b=404, plan_a=404, run_a=404),
    "a_manager": dict(move_a=202, move_b=(403, OUT_A), plan_a=200, run_a=200),
    "a_operator": dict(move_a=202, move_b=(403, OUT_A), plan_a=200, run_a=200),
    "a_viewer": dict(move_a=(403, DENIED), move_b=(403, OUT_A), plan_a=200, run_a=200),
    "b_viewer": dict(move_a=(403, OUT_A), move_b=(403, DENIED), plan_a=(403, OUT_A), run_a=404),
    "revoked": dict.fromkeys(("move_a", "move_b", "plan_a", "run_a"), (401, "API_KEY_REVOKED")),
    "missing": dict.fromkeys(("move_a", "move_b", "plan_a", "run_a"), (401, "API_KEY_MISSING")),
}
CELLS = [(key, op) for key, row in MATRIX.items() for op in row]


@pytest.mark.parametrize("key_name,operation", CELLS)
def test_key_scope_matrix(key_name, operation, api, api_keys, mailboxes, ws_a, ws_b, personas):
    # A finished run of A to read (a new move of A is then another run).
    run_a = move.start_move(ws_a, personas["root"])
    MoveRun.objects.filter(pk=run_a.pk).update(status="finished")
    method, path, body = operations(ws_a, ws_b, run_a)[operation]
    expected = MATRIX[key_name][operation]
    status, code = expected if isinstance(expected, tuple) else (expected, None)
    key = None if key_name == "missing" else api_keys[key_name]

    response = api(method, path, key, data=body)

    assert response.status_code == status, response.content
    answer = response.json()
    assert answer["success"] is (status < 400)
    assert answer.get("error", {}).get("code") == (code or ("NOT_FOUND" if status == 404 else None))
    if operation.startswith("move_"):
        workspace = ws_a if operation == "move_a" else ws_b
        started = MoveRun.objects.filter(workspace=workspace).exclude(pk=run_a.pk).count()
        assert started == (1 if status == 202 else 0)
        if status == 202:
            assert answer["data"]["total"] == 1 and answer["data"]["status"] == "queued"
            assert response["Location"].endswith(answer["data"]["uid"])
    if operation == "plan_a" and status == 200:
        assert answer["data"]["total"] == 1  # ann, blocked: no OAuth app, no credential
        assert answer["data"]["domains"][0]["group"] == "blocked"


def test_bad_bodies_are_400_and_start_nothing(api, api_keys, mailboxes, ws_a):
    for body in ({"mailbox_uids": "x"}, {"mailbox_uids": []}, {"mailbox_uids": ["not-a-uid"]}):
        response = api("post", "/api/v1/mailboxes/move-to-oauth", api_keys["a_operator"], data=body)
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    other = api(
        "post",
        "/api/v1/mailboxes/move-to-oauth",
        api_keys["a_operator"],
        data={"mailbox_uids": [str(mailboxes["b"].uid)]},  # another workspace's: not moved
    )
    assert (
        other.status_code == 400 and "No app-password mailboxes" in other.json()["error"]["message"]
    )
    assert not MoveRun.objects.exists()


def test_a_move_through_the_api_run_by_a_real_worker(
    verified, oauth_app, mail, ws_a, api_keys, api, worker_env, worker
):
    ava = app_password_mailbox(ws_a, "ava@acme-outreach.com", mail)
    tara = app_password_mailbox(ws_a, "tara@acme-outreach.com", mail)
    hal = app_password_mailbox(ws_a, "hal.sales@outlook.com", mail)
    response = api("post", "/api/v1/mailboxes/move-to-oauth", api_keys["a_operator"], data={})
    assert response.status_code == 202, response.content
    poll = response.json()["data"]["poll_url"].split("testserver", 1)[1]
    for _ in range(150):
        data = api("get", poll, api_keys["a_viewer"]).json()["data"]
        if data["done"]:
            break
        time.sleep(0.2)
    assert data["status"] == "finished", data
    states = {i["email"]: (i["state"], (i["error"] or {}).get("code")) for i in data["items"]}
    assert states == {
        ava.email: ("moved", None),
        tara.email: ("failed", "APP_NOT_GRANTED_ON_MAILBOX"),
        hal.email: ("awaiting_consent", None),
    }
    consent_url = next(i["consent_url"] for i in data["items"] if i["email"] == hal.email)
    assert "/connect/" in consent_url  # the worker's FLEET_BASE_URL
    ava.refresh_from_db(), tara.refresh_from_db()
    assert ava.auth_method == "graph_app_only" and str(ava.password) == ""
    assert tara.auth_method == "app_password" and str(tara.password) == "app-pass-1"
