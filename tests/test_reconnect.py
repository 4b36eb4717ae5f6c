"""Bulk reconnect (fleet/reconnect.py): "Reconnect all failing" from the mailbox list, the
workspace page and the dashboard; the links page with progress, CSV and e-mail; the API with the
key-scope matrix; and a whole reconnect through the Microsoft sandbox's consent pages."""

import csv
import io
import socket
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import mail
from django.urls import reverse

from fleet import consent, reconnect
from fleet.errors import FleetError
from fleet.models import ConsentRequest, Credential, Mailbox, ReconnectItem, ReconnectRun
from tests.browser import local_path, press

CHANGELIST = reverse("admin:fleet_mailbox_changelist")


def failing_box(workspace, email, **extra):
    return Mailbox.objects.create(
        workspace=workspace,
        email=email,
        auth_method="oauth",
        status="reauth_required",
        error_code="REAUTH_REQUIRED",
        refresh_token="revoked-refresh-token-value",
        **extra,
    )


def oauth_credential(workspace, client_id="11111111-2222-4333-8444-555555555555"):
    return Credential.objects.create(
        workspace=workspace,
        name="OAuth",
        kind=Credential.Kind.OAUTH_APP,
        tenant_id="common",
        client_id=client_id,
        client_secret="s3cret-value",
    )


@pytest.fixture
def fleet_a(ws_a, oauth_app):
    """Workspace A: two OAuth mailboxes needing consent (one already has an open request), and
    three that are not reconnected (an app-password one in error, an active OAuth one, a
    disabled OAuth one)."""
    ava = failing_box(ws_a, "ava@acme-outreach.com")
    ben = failing_box(ws_a, "ben@acme-outreach.com")
    earlier = consent.initiate(ws_a, mailbox_uid=ben.uid)  # an open link already
    Mailbox.objects.create(
        workspace=ws_a, email="cara@acme-outreach.com", auth_method="app_password", status="error"
    )
    Mailbox.objects.create(
        workspace=ws_a, email="dan@acme-outreach.com", auth_method="oauth", status="active"
    )
    Mailbox.objects.create(
        workspace=ws_a, email="eve@acme-outreach.com", auth_method="oauth", status="disabled"
    )
    return {"ava": ava, "ben": ben, "earlier": earlier}


def test_bulk_reconnect_through_the_sandbox_back_to_active(
    sandbox, fleet_a, ws_a, personas, client_for
):
    operator = client_for(personas["alice"])
    listed = operator.get(CHANGELIST, {"workspace__id__exact": ws_a.pk})
    assert b'id="tool-reconnect-failing"' in listed.content

    answer = operator.post(
        reverse("admin:fleet_mailbox_reconnect_failing") + f"?workspace__id__exact={ws_a.pk}"
    )
    run = ReconnectRun.objects.get()
    assert answer.status_code == 302
    assert answer["Location"] == reverse("admin:fleet_reconnectrun_change", args=[run.pk])
    assert run.total == 2 and run.created_by == personas["alice"]
    items = {i.email: i for i in run.items.select_related("consent_request")}
    assert set(items) == {"ava@acme-outreach.com", "ben@acme-outreach.com"}
    # ben's open request is reused: one link per mailbox, never a second.
    assert items["ben@acme-outreach.com"].consent_request == fleet_a["earlier"]
    assert items["ben@acme-outreach.com"].reused and not items["ava@acme-outreach.com"].reused
    assert ConsentRequest.objects.filter(mailbox=fleet_a["ben"]).count() == 1

    page = operator.get(answer["Location"]).content.decode()
    assert "0 of 2 reconnected" in page
    for item in items.values():
        assert item.consent_request.consent_url in page

    # Each owner opens their link: Microsoft's sign-in with the address filled in, then back.
    for email, item in items.items():
        start = operator.get(local_path(item.consent_request.consent_url))
        authorize = start["Location"]
        assert parse_qs(urlsplit(authorize).query)["login_hint"] == [email]
        assert operator.get(local_path(press(authorize, email))).status_code == 200

    for box in (fleet_a["ava"], fleet_a["ben"]):
        box.refresh_from_db()
        assert box.status == "active" and not box.error_code
    assert reconnect.progress(run).reconnected == 2
    page = operator.get(answer["Location"]).content.decode()
    assert "2 of 2 reconnected" in page
    assert not ConsentRequest.objects.filter(
        pk__in=[i.consent_request_id for i in items.values()], status__in=["queued", "pending"]
    ).exists()


def test_the_csv_lists_links_and_states_but_no_secret(fleet_a, ws_a, personas, client_for):
    run = reconnect.start(ws_a, actor=personas["alice"])
    viewer_of_a = client_for(personas["bob"])
    answer = viewer_of_a.get(reverse("admin:fleet_reconnectrun_csv", args=[run.pk]))
    assert answer.status_code == 200
    body = b"".join(answer.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["email", "consent_url", "mailbox_status", "consent_status", "expires_at", "uid"]
    assert {r[0] for r in rows[1:]} == {"ava@acme-outreach.com", "ben@acme-outreach.com"}
    assert all(r[1].startswith("http://testserver/") for r in rows[1:])
    assert "revoked-refresh-token-value" not in body and "s3cret" not in body


def test_links_are_emailed_to_a_valid_address_only(fleet_a, ws_a, personas, client_for):
    run = reconnect.start(ws_a, actor=personas["alice"])
    operator = client_for(personas["alice"])
    send = reverse("admin:fleet_reconnectrun_send", args=[run.pk])

    refused = operator.post(send, {"address": "not-an-address"})
    assert refused.status_code == 400 and "Enter a valid email address" in refused.content.decode()
    assert mail.outbox == []

    operator.post(send, {"address": "it@client.example"})
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["it@client.example"]
    for item in run.items.select_related("consent_request"):
        assert item.consent_request.consent_url in mail.outbox[0].body
    assert "revoked-refresh-token-value" not in mail.outbox[0].body
    assert set(run.items.values_list("emailed_to", flat=True)) == {"it@client.example"}

    one = run.items.get(email="ava@acme-outreach.com")
    operator.post(send, {"address": "ava.private@client.example", "item": one.pk})
    assert len(mail.outbox) == 2 and mail.outbox[1].subject.startswith("Reconnect ava@")
    assert "ben@acme-outreach.com" not in mail.outbox[1].body

    notes = fleet_a["ava"].events.filter(kind="note", message__contains="e-mailed to")
    assert [n.message for n in notes] == [
        "Reconnect link e-mailed to ava.private@client.example",
        "Reconnect link e-mailed to it@client.example",
    ]
    assert notes[0].actor == personas["alice"] and notes[0].via == "admin"

    # A mailbox reconnected meanwhile is left out; none left: a clear refusal, no e-mail.
    Mailbox.objects.filter(workspace=ws_a, status="reauth_required").update(status="active")
    with pytest.raises(FleetError) as nothing:
        reconnect.send_links(run, "it@client.example")
    assert nothing.value.code == "NOTHING_TO_RECONNECT" and len(mail.outbox) == 2


def test_a_mail_server_that_refuses_is_said_and_nothing_is_recorded(
    fleet_a, ws_a, personas, client_for, settings
):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    run = reconnect.start(ws_a, actor=personas["alice"])
    answer = client_for(personas["alice"]).post(
        reverse("admin:fleet_reconnectrun_send", args=[run.pk]),
        {"address": "it@client.example"},
        follow=True,
    )
    page = answer.content.decode()
    assert answer.status_code == 200 and "The e-mail was not sent" in page
    assert "outgoing mail settings" in page  # the code's hint
    assert not run.items.exclude(emailed_to="").exists()
    assert not fleet_a["ava"].events.filter(kind="note").exists()


def test_roles_buttons_and_scoping(fleet_a, ws_a, ws_b, personas, client_for):
    oauth_credential(ws_b, client_id="99999999-2222-4333-8444-555555555555")
    other = failing_box(ws_b, "zed@beta.example")
    # Bob manages A and views B: the workspace page offers the button in A only.
    manager = client_for(personas["bob"])
    page_a = manager.get(reverse("admin:fleet_workspace_change", args=[ws_a.pk]))
    page_b = manager.get(reverse("admin:fleet_workspace_change", args=[ws_b.pk]))
    assert b'id="tool-reconnect_failing"' in page_a.content
    assert b'id="tool-reconnect_failing"' not in page_b.content
    forged = manager.post(
        reverse("admin:fleet_workspace_do", args=[ws_b.pk, "reconnect_failing"])
    )
    assert forged.status_code == 403 and not ReconnectRun.objects.exists()

    # The list's action on both workspaces' rows: only A's (where bob operates) get a link.
    manager.post(
        CHANGELIST,
        {
            "action": "reconnect_all_failing",
            "_selected_action": [fleet_a["ava"].pk, other.pk],
        },
    )
    run = ReconnectRun.objects.get()
    assert run.workspace == ws_a
    assert list(run.items.values_list("email", flat=True)) == ["ava@acme-outreach.com"]
    assert not ConsentRequest.objects.filter(mailbox=other).exists()

    # A viewer sees the links page but no e-mail form; the forged POST is a 403.
    run_b = reconnect.start(ws_b, actor=personas["root"])
    viewer = client_for(personas["bob"])
    page = viewer.get(reverse("admin:fleet_reconnectrun_change", args=[run_b.pk]))
    assert page.status_code == 200 and b'id="send-all"' not in page.content
    assert b"zed@beta.example" in page.content
    denied = viewer.post(
        reverse("admin:fleet_reconnectrun_send", args=[run_b.pk]), {"address": "x@y.example"}
    )
    assert denied.status_code == 403 and mail.outbox == []
    # The outsider sees neither run.
    outsider = client_for(personas["olga"])
    assert outsider.get(reverse("admin:fleet_reconnectrun_change", args=[run.pk])).status_code == 404

    # The button is offered while there is something to reconnect, then no more.
    Mailbox.objects.filter(workspace=ws_a).exclude(status="disabled").update(status="active")
    page_a = client_for(personas["bob"]).get(reverse("admin:fleet_workspace_change", args=[ws_a.pk]))
    assert b'id="tool-reconnect_failing"' not in page_a.content


def test_nothing_is_written_when_nothing_can_be_reconnected(ws_a, ws_b, personas):
    failing_box(ws_b, "zed@beta.example")  # no OAuth app in B
    with pytest.raises(FleetError) as missing:
        reconnect.start(ws_b)
    assert missing.value.code == "MICROSOFT_OAUTH_NOT_CONFIGURED"
    with pytest.raises(FleetError) as none:
        reconnect.start(ws_a)
    assert none.value.code == "NOTHING_TO_RECONNECT"
    assert not ReconnectRun.objects.exists() and not ConsentRequest.objects.exists()


def test_a_second_run_reuses_every_open_link(fleet_a, ws_a):
    first = reconnect.start(ws_a)
    second = reconnect.start(ws_a)
    links = lambda run: set(run.items.values_list("consent_request_id", flat=True))  # noqa: E731
    assert links(first) == links(second)
    assert second.items.filter(reused=True).count() == 2
    assert ConsentRequest.objects.filter(workspace=ws_a).count() == 2


def test_the_runs_list_shows_progress(fleet_a, ws_a, personas, client_for):
    reconnect.start(ws_a, actor=personas["alice"])
    fleet_a["ava"].set_status("active")
    page = client_for(personas["bob"]).get(reverse("admin:fleet_reconnectrun_changelist"))
    assert page.status_code == 200 and "1 of 2" in page.content.decode()
    outsider = client_for(personas["olga"]).get(reverse("admin:fleet_reconnectrun_changelist"))
    assert "1 of 2" not in outsider.content.decode()


def test_the_dashboard_button_starts_a_run(fleet_a, ws_a, personas, client_for):
    operator = client_for(personas["alice"])
    answer = operator.post(
        reverse("admin:fleet_mailbox_reconnect_reauth"), {"workspace": ws_a.pk}
    )
    run = ReconnectRun.objects.get()
    assert answer["Location"] == reverse("admin:fleet_reconnectrun_change", args=[run.pk])
    assert run.total == 2


def test_large_selections_cost_a_few_statements_per_chunk(ws_a, oauth_app, django_assert_max_num_queries):
    Mailbox.objects.bulk_create(
        Mailbox(
            workspace=ws_a,
            email=f"user{i}@acme-outreach.com",
            auth_method="oauth",
            status="reauth_required",
        )
        for i in range(1200)
    )
    # 3 chunks of 500: per chunk a read of the mailboxes, of their open requests, two INSERTs
    # (PostgreSQL: 16 statements; SQLite splits an INSERT at 999 variables: 48). Never one or
    # two per mailbox (2,400).
    with django_assert_max_num_queries(60):
        run = reconnect.start(ws_a)
    assert run.total == 1200 and ReconnectItem.objects.filter(run=run).count() == 1200
    assert ConsentRequest.objects.filter(workspace=ws_a, consent_url__contains="/connect/").count() == 1200


# --- API -------------------------------------------------------------------------------------
DENIED, OUT_A = "PERMISSION_DENIED", "OUTSIDE_KEY_WORKSPACE"


@pytest.fixture
def api_fleet(ws_a, ws_b):
    oauth_credential(ws_a)
    oauth_credential(ws_b, client_id="99999999-2222-4333-8444-555555555555")
    return {"a": failing_box(ws_a, "ava@alpha.example"), "b": failing_box(ws_b, "ben@beta.example")}


def operations(ws_a, ws_b, run_a):
    return {
        "reconnect_a": ("post", f"/api/v1/mailboxes/reconnect?workspace_id={ws_a.pk}", {}),
        "reconnect_b": ("post", f"/api/v1/mailboxes/reconnect?workspace_id={ws_b.pk}", {}),
        "run_a": ("get", f"/api/v1/mailboxes/reconnect/{run_a.uid}", None),
    }


MATRIX = {
    "root_platform": dict(reconnect_a=201, reconnect_b=201, run_a=200),
    "bob_platform": dict(reconnect_a=201, reconnect_b=(403, DENIED), run_a=200),
    "alice_platform": dict(reconnect_a=201, reconnect_b=404, run_a=200),
    "olga_platform": dict(reconnect_a=404, reconnect_b=404, run_a=404),
    "a_manager": dict(reconnect_a=201, reconnect_b=(403, OUT_A), run_a=200),
    "a_operator": dict(reconnect_a=201, reconnect_b=(403, OUT_A), run_a=200),
    "a_viewer": dict(reconnect_a=(403, DENIED), reconnect_b=(403, OUT_A), run_a=200),
    "b_viewer": dict(reconnect_a=(403, OUT_A), reconnect_b=(403, DENIED), run_a=404),
    "revoked": dict.fromkeys(("reconnect_a", "reconnect_b", "run_a"), (401, "API_KEY_REVOKED")),
    "missing": dict.fromkeys(("reconnect_a", "reconnect_b", "run_a"), (401, "API_KEY_MISSING")),
}
CELLS = [(key, op) for key, row in MATRIX.items() for op in row]


@pytest.mark.parametrize("key_name,operation", CELLS)
def test_key_scope_matrix(key_name, operation, api, api_keys, api_fleet, ws_a, ws_b, personas):
    run_a = reconnect.start(ws_a, actor=personas["root"])
    method, path, body = operations(ws_a, ws_b, run_a)[operation]
    expected = MATRIX[key_name][operation]
    status, code = expected if isinstance(expected, tuple) else (expected, None)
    key = None if key_name == "missing" else api_keys[key_name]

    response = api(method, path, key, data=body)

    assert response.status_code == status, response.content
    answer = response.json()
    assert answer["success"] is (status < 400)
    if code:
        assert answer["error"]["code"] == code
    if status < 400:
        data = answer["data"]
        mine = api_fleet["a"] if operation != "reconnect_b" else api_fleet["b"]
        assert [c["email"] for c in data["consent_requests"]] == [mine.email]
        assert data["consent_requests"][0]["consent_url"].startswith("http")
    runs = ReconnectRun.objects.count()
    assert runs == 1 + (status == 201)


def test_api_filters_and_answers(api, api_keys, api_fleet, ws_a):
    second = failing_box(ws_a, "bea@other.example")
    url = f"/api/v1/mailboxes/reconnect?workspace_id={ws_a.pk}"
    made = api("post", url, api_keys["a_operator"], data={"domain": "other.example"})
    assert made.status_code == 201, made.content
    data = made.json()["data"]
    assert [c["email"] for c in data["consent_requests"]] == ["bea@other.example"]
    assert data["consent_requests"][0]["mailbox_uid"] == str(second.uid)
    assert made["Location"].endswith(data["uid"])
    assert "refresh" not in made.content.decode()

    again = api("post", url, api_keys["a_operator"], data={"mailbox_uids": [str(second.uid)]})
    assert again.json()["data"]["consent_requests"][0]["reused"] is True

    none = api("post", url, api_keys["a_operator"], data={"tag": "no-such-tag"})
    assert none.status_code == 200 and none.json()["data"]["consent_requests"] == []

    bad = api("post", url, api_keys["a_operator"], data={"mailbox_uids": ["not-a-uid"]})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
    assert ReconnectRun.objects.count() == 2
