"""`POST /api/v1/mailboxes/microsoft/bulk` (Woodpecker's bulk-add API) and its poll URL.

Seed 004's own request example (its Python client: headers, body) is replayed with `requests`
against a live Fleet while a real `db_worker` process runs the bulk add against the Microsoft
sandbox's Graph (HTTPS on loopback) and the sandbox DNS server (UDP on loopback). Every answer of
the new operations is also checked against the OpenAPI schema with schemathesis' response checks.
"""

import time
from pathlib import Path

import pytest
import requests
from django_tasks_db.models import DBTaskResult
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fleet.bulk_add import Account, start_run
from fleet.models import BulkAddRun, Credential, Mailbox, Membership, Role
from tests import test_bulk_add as graph_sandbox
from tests.conftest import issue_key, make_user
from tests.test_api_fuzz import schema
from tests.test_bulk_add_start import graph_credential_of

ROOT = Path(__file__).resolve().parent.parent
BULK = "/api/v1/mailboxes/microsoft/bulk"
SEED_KEYS = {"success", "id", "email", "name", "deliverability", "error"}

# The sandbox tenant, DNS zone and Graph credential of the bulk add's own tests.
dns_zone = graph_sandbox.dns_zone
tenant = graph_sandbox.tenant
graph_credential = graph_sandbox.graph_credential
fresh_tokens = graph_sandbox.fresh_tokens


def seed_004_payload(credential_id):
    """Seed 004's request body, verbatim but for the credential id."""
    return {
        "auth_type": "APP_ONLY",
        "credential_id": credential_id,
        "accounts": [
            {
                "mailbox_email": "jim@example.com",
                "display_name": "Jimothy H",
            },
            {
                "mailbox_email": "michael@example.com",
                "display_name": "Michael Scarn",
            },
        ],
    }


def seed_004_request(url, key, payload):
    """Seed 004's Python example: `x-api-key` + `Content-Type` headers, `json=` body."""
    headers = {
        "x-api-key": key,
        "Content-Type": "application/json",
    }
    return requests.post(url, headers=headers, json=payload, timeout=60)


RESPONSE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def conforms(response, method="POST", path=BULK, **case):
    """The response is one the OpenAPI schema documents for that operation (status, content
    type, headers, body)."""
    operation = schema[path][method]
    operation.Case(**case).validate_response(response, checks=RESPONSE_CHECKS)


# --- With a real worker ---------------------------------------------------------------------------


@pytest.fixture
def seed_directory(tenant, sandbox, dns_zone):
    """Seed 004's two mailboxes, jim@ and michael@example.com, in the Acme tenant, and their
    domain's SPF/DKIM in the sandbox DNS."""
    tenant.domains.append("example.com")
    sandbox.directory.add_user("jim@example.com", "Jim Halpert")
    sandbox.directory.add_user("michael@example.com", "Michael Scott")
    dns_zone.add_microsoft_domain("example.com")
    dns_zone.add_dmarc("example.com", "quarantine")
    dns_zone.add_mx("example.com")
    return sandbox.directory


@pytest.mark.django_db(transaction=True)
def test_seed_004_replayed_201_then_207(
    seed_directory, graph_credential, worker_env, worker, live_server, api_keys, ws_a
):
    url = f"{live_server.url}{BULK}"
    payload = seed_004_payload(graph_credential.pk)

    # All submitted mailboxes connected: 201.
    response = seed_004_request(url, api_keys["a_operator"], payload)
    assert response.status_code == 201, response.text
    conforms(response, body=payload)
    body = response.json()
    assert body["success"] is True
    jim, michael = (
        Mailbox.objects.get(workspace=ws_a, email=f"{name}@example.com")
        for name in ("jim", "michael")
    )
    assert [{k: item[k] for k in SEED_KEYS} for item in body["data"]] == [
        {
            "success": True,
            "id": jim.pk,
            "email": "jim@example.com",
            "name": "Jimothy H",
            "deliverability": {
                "spf_correct": True,
                "dkim_correct": True,
                "dmarc_correct": True,
                "mx_correct": True,
            },
            "error": None,
        },
        {
            "success": True,
            "id": michael.pk,
            "email": "michael@example.com",
            "name": "Michael Scarn",
            "deliverability": {
                "spf_correct": True,
                "dkim_correct": True,
                "dmarc_correct": True,
                "mx_correct": True,
            },
            "error": None,
        },
    ]
    assert body["data"][0]["mailbox_uid"] == str(jim.uid)
    assert (jim.status, jim.auth_method, jim.display_name) == (
        "active",
        "graph_app_only",
        "Jimothy H",
    )
    run = body["run"]
    assert (run["status"], run["outcome"], run["done"]) == ("finished", "all_connected", True)
    assert (run["total"], run["connected"], run["failed"]) == (2, 2, 0)
    assert response.headers["Location"] == run["poll_url"]
    # The worker process ran it, not the request thread.
    task = DBTaskResult.objects.get(task_path="fleet.tasks.run_bulk_add")
    assert task.status == "SUCCESSFUL" and task.worker_ids

    # michael@ becomes an alias of jim@: 207, as in the seed's example.
    del seed_directory.users["michael@example.com"]
    seed_directory.user("jim@example.com").aliases.append("michael@example.com")
    response = seed_004_request(url, api_keys["a_operator"], payload)
    assert response.status_code == 207, response.text
    conforms(response, body=payload)
    body = response.json()
    assert [{k: item[k] for k in SEED_KEYS} for item in body["data"]] == [
        {
            "success": True,
            "id": jim.pk,  # the same mailbox again, not a second one
            "email": "jim@example.com",
            "name": "Jimothy H",
            "deliverability": {
                "spf_correct": True,
                "dkim_correct": True,
                "dmarc_correct": True,
                "mx_correct": True,
            },
            "error": None,
        },
        {
            "success": False,
            "id": None,
            "email": "michael@example.com",
            "name": "Michael Scarn",
            "deliverability": None,
            "error": "WRONG_ALIAS",
        },
    ]
    assert body["data"][1]["error_detail"] == "primary address: jim@example.com"
    assert body["data"][1]["mailbox_uid"] is None
    assert (body["run"]["outcome"], body["run"]["failed"]) == ("partly_connected", 1)
    assert Mailbox.objects.filter(workspace=ws_a).count() == 2

    # The poll URL answers the same results, 200.
    poll = requests.get(
        body["run"]["poll_url"], headers={"x-api-key": api_keys["a_viewer"]}, timeout=30
    )
    assert poll.status_code == 200
    conforms(poll, "GET", f"{BULK}/{{run_uid}}", path_parameters={"run_uid": body["run"]["uid"]})
    assert poll.json()["data"] == body["data"] and poll.json()["run"]["done"] is True


@pytest.mark.django_db(transaction=True)
def test_long_run_answers_202_then_the_poll_url_shows_progress_and_results(
    seed_directory, graph_credential, worker_env, worker, live_server, api_keys, settings
):
    settings.API_BULK_WAIT_SECONDS = 0  # any run outlasts the wait
    payload = seed_004_payload(None)  # omitted: the workspace's only valid Graph credential
    del payload["credential_id"]
    payload["accounts"].append({"mailbox_email": "nobody@example.com"})
    response = seed_004_request(f"{live_server.url}{BULK}", api_keys["a_operator"], payload)
    assert response.status_code == 202, response.text
    conforms(response, body=payload)
    body = response.json()
    assert body["data"] == []  # nothing done yet
    run = body["run"]
    assert (run["status"], run["outcome"], run["done"], run["total"]) == ("queued", None, False, 3)
    assert run["credential_id"] == graph_credential.pk
    assert response.headers["Location"] == run["poll_url"]
    assert run["poll_url"] == f"{live_server.url}{BULK}/{run['uid']}"

    headers = {"Authorization": f"Bearer {api_keys['a_viewer']}"}
    for _ in range(150):  # the worker finishes within seconds; give up after ~30 s
        poll = requests.get(run["poll_url"], headers=headers, timeout=30)
        assert poll.status_code == 200, poll.text
        if poll.json()["run"]["done"]:
            break
        time.sleep(0.2)
    conforms(poll, "GET", f"{BULK}/{{run_uid}}", path_parameters={"run_uid": run["uid"]})
    done = poll.json()
    assert (done["run"]["status"], done["run"]["outcome"]) == ("finished", "partly_connected")
    assert (done["run"]["processed"], done["run"]["connected"]) == (3, 2)
    assert [(r["email"], r["success"], r["error"]) for r in done["data"]] == [
        ("jim@example.com", True, None),
        ("michael@example.com", True, None),
        ("nobody@example.com", False, "MAILBOX_NOT_FOUND"),
    ]


# --- Refused before anything runs (live server, no worker) ------------------------------------


@pytest.mark.django_db(transaction=True)
def test_bodies_refused_with_400(live_server, api_keys, ws_a, settings):
    settings.API_BULK_WAIT_SECONDS = 0
    graph_credential_of(ws_a)
    url = f"{live_server.url}{BULK}"
    key = api_keys["a_operator"]

    not_json = requests.post(
        url,
        headers={"x-api-key": key, "Content-Type": "application/json"},
        data='{"accounts": [',
        timeout=30,
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"] == {
        "code": "API_MALFORMED_REQUEST",
        "message": "Invalid or empty JSON request body",
    }
    conforms(not_json)
    for empty in ("", "{}", "null"):
        answer = requests.post(
            url,
            headers={"x-api-key": key, "Content-Type": "application/json"},
            data=empty,
            timeout=30,
        )
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "API_MALFORMED_REQUEST"
    form = requests.post(url, headers={"x-api-key": key}, data={"accounts": "x"}, timeout=30)
    assert form.status_code == 415

    bad_accounts = [
        {"mailbox_email": "not-an-address", "display_name": "X"},
        {"mailbox_email": "jim@example.com"},
        {"mailbox_email": "JIM@example.com"},
        {"display_name": "No address"},
        {"mailbox_email": "pam@example.com", "display_name": "P" * 256},
        {"mailbox_email": 42},
        "michael@example.com",
        {"mailbox_email": "ok@example.com", "display_name": "Fine"},
    ]
    response = seed_004_request(url, key, {"auth_type": "APP_ONLY", "accounts": bad_accounts})
    assert response.status_code == 400
    conforms(response, body={"accounts": bad_accounts})
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["fields"]["accounts"] == [  # every problem at once
        "account 1: 'not-an-address' is not a valid email address",
        "account 3: JIM@example.com is a duplicate of account 2",
        "account 4: missing mailbox_email",
        "account 5: the display name of pam@example.com is longer than 255 characters",
        "account 6: mailbox_email must be a string",
        "account 7: missing mailbox_email",
    ]
    assert error["message"].startswith("accounts: account 1:")

    for body, field, message in [
        (
            {"auth_type": "DELEGATED", "accounts": [{"mailbox_email": "a@example.com"}]},
            "auth_type",
            '"DELEGATED" is not a valid choice.',
        ),
        ({"auth_type": "APP_ONLY"}, "accounts", "This field is required."),
        ({"accounts": []}, "accounts", "No accounts given: add at least one mailbox address."),
        ({"accounts": "jim@example.com"}, "accounts", None),
        (
            {"accounts": [{"mailbox_email": f"u{i}@example.com"} for i in range(501)]},
            "accounts",
            "Maximum 500 mailboxes per bulk add (501 given).",
        ),
        (
            {"credential_id": "5", "accounts": [{"mailbox_email": "a@example.com"}]},
            "credential_id",
            None,
        ),
        ([{"mailbox_email": "a@example.com"}], "non_field_errors", None),
    ]:
        answer = seed_004_request(url, key, body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
        assert field in answer.json()["error"]["fields"], answer.text
        if message:
            assert answer.json()["error"]["fields"][field] == [message]
    # A bad list with no usable credential is still a 400: the body is checked first.
    assert seed_004_request(url, key, {"credential_id": 999, "accounts": []}).status_code == 400
    assert not BulkAddRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_invalid_credential_id_is_422_in_both_shapes(live_server, api_keys, ws_a, ws_b):
    url = f"{live_server.url}{BULK}"
    key = api_keys["a_operator"]
    first = graph_credential_of(ws_a, name="First")
    second = graph_credential_of(ws_a, name="Second")
    oauth_app = Credential.objects.create(workspace=ws_a, name="OAuth", kind="oauth_app")
    revoked = graph_credential_of(ws_a, name="Revoked", status=Credential.Status.INVALID)
    other = graph_credential_of(ws_b, name="Other workspace")

    cases = [
        None,  # none given, with two valid ones
        other.pk,  # another workspace's
        oauth_app.pk,  # not a Graph credential
        revoked.pk,  # known to be invalid
        2**62,  # no such credential
    ]
    for credential_id in cases:
        payload = seed_004_payload(credential_id)
        if credential_id is None:
            del payload["credential_id"]
        response = seed_004_request(url, key, payload)
        assert response.status_code == 422, (credential_id, response.text)
        conforms(response, body=payload)
        body = response.json()
        assert body["message"] == "INVALID_CREDENTIAL_ID"  # Woodpecker's own body
        assert body["success"] is False
        assert body["error"]["code"] == "INVALID_CREDENTIAL_ID"
    # And with no valid one at all.
    Credential.objects.filter(pk__in=[first.pk, second.pk]).update(status="invalid")
    payload = seed_004_payload(None)
    del payload["credential_id"]
    response = seed_004_request(url, key, payload)
    assert response.status_code == 422
    assert "no valid Microsoft Graph credential" in response.json()["error"]["message"]
    assert not BulkAddRun.objects.exists()


# --- Key scoping (test client) -------------------------------------------------------------------


@pytest.fixture
def b_operator_key(ws_b, personas):
    """A workspace key of workspace B with the operator role (its creator operates B)."""
    bea = make_user("bea")
    Membership.objects.create(user=bea, workspace=ws_b, role=Role.OPERATOR)
    return issue_key(name="B operator", user=bea, workspace=ws_b, role=Role.OPERATOR)[1]


def test_key_scoping(api, api_keys, b_operator_key, ws_a, ws_b, personas):
    credential_a = graph_credential_of(ws_a)
    credential_b = graph_credential_of(ws_b)
    body = seed_004_payload(credential_a.pk)

    def post(key, path=BULK):
        return api("post", path, key, data=body)

    assert post(None).status_code == 401
    revoked = post(api_keys["revoked"])
    assert (revoked.status_code, revoked.json()["error"]["code"]) == (401, "API_KEY_REVOKED")
    viewer = post(api_keys["a_viewer"])
    assert (viewer.status_code, viewer.json()["error"]["code"]) == (403, "PERMISSION_DENIED")
    # A workspace key of another workspace: naming workspace A is 403; in its own workspace,
    # A's credential is not one of its credentials.
    outside = post(b_operator_key, f"{BULK}?workspace_id={ws_a.pk}")
    assert (outside.status_code, outside.json()["error"]["code"]) == (403, "OUTSIDE_KEY_WORKSPACE")
    foreign = post(b_operator_key)
    assert (foreign.status_code, foreign.json()["message"]) == (422, "INVALID_CREDENTIAL_ID")
    # An outsider's platform key operates nowhere; bob (viewer of B) may not act in B.
    assert post(api_keys["olga_platform"], f"{BULK}?workspace_id={ws_a.pk}").status_code == 404
    assert post(api_keys["olga_platform"]).status_code == 403
    assert post(api_keys["bob_platform"], f"{BULK}?workspace_id={ws_b.pk}").status_code == 403
    assert not BulkAddRun.objects.exists()

    # Reading a run: viewers of its workspace; anyone else gets 404, as for an unknown run.
    run = start_run(ws_a, credential_a, [Account("jim@example.com", "Jim")], personas["bob"])
    other_run = start_run(ws_b, credential_b, [Account("x@example.com")], None)
    path = f"{BULK}/{run.uid}"
    seen = api("get", path, api_keys["a_viewer"])
    assert seen.status_code == 200
    assert seen.json()["run"]["uid"] == str(run.uid) and seen.json()["data"] == []
    assert api("get", path, api_keys["bob_platform"]).status_code == 200
    for key in (b_operator_key, api_keys["b_viewer"], api_keys["olga_platform"]):
        hidden = api("get", path, key)
        assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "NOT_FOUND")
    assert api("get", f"{BULK}/{other_run.uid}", api_keys["a_manager"]).status_code == 404
    assert api("get", path, api_keys["revoked"]).status_code == 401
    assert api("get", path, None).status_code == 401
