"""Hostile input answers 4xx, never 5xx: each finding of the fault run is a case here, over
Django's test client (admin, consent pages) and over real HTTP to a live server (the API), plus
a hypothesis run that throws NUL bytes, unpaired surrogates and deep nesting at the API.

The request guard (fleet/request_guard.py) refuses NUL and surrogates in paths, query strings,
form fields and JSON strings and JSON nested deeper than REQUEST_MAX_JSON_DEPTH; the admin's
filters and custom views validate the rest of their parameters themselves.
"""

import json
import urllib.parse

import pytest
import requests
from django.contrib import admin
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.models import BulkAddRun, ConsentRequest, Credential, Mailbox
from fleet.request_guard import json_too_deep
from fleet.text import storable, unstorable

NUL = "\x00"
SURROGATE = "\ud800"


def deep(levels: int, leaf="x"):
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def raw_json(levels: int) -> str:
    """Nesting as text: json.dumps itself recurses, so very deep bodies are written by hand."""
    return '{"accounts": ' + "[" * levels + '"x"' + "]" * levels + "}"


def assert_api_refusal(response, code=None):
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    body = response.json()
    assert body["success"] is False and body["error"]["code"]
    if code:
        assert body["error"]["code"] == code, body


# --- the guard's two predicates ------------------------------------------------------------------
def test_unstorable_text():
    assert unstorable("plain ünïcødé 😀") is None
    assert unstorable("a\x00b") == "a NUL byte"
    assert unstorable("a\ud800b") == "an unpaired surrogate"
    assert unstorable("\udfff") == "an unpaired surrogate"


def test_json_depth_counts_brackets_outside_strings_only():
    assert not json_too_deep(json.dumps(deep(32)), 32)
    assert json_too_deep(json.dumps(deep(33)), 32)
    assert not json_too_deep(json.dumps({"a": "[[[[[[[[[[" * 10}), 3)
    assert not json_too_deep(json.dumps({"a": 'q\\"[[[[[[', "b": [1, [2]]}), 3)


# --- the API over a live server -------------------------------------------------------------------
API_QUERY_CASES = [
    ("/api/v1/mailboxes", "status", NUL),
    ("/api/v1/mailboxes", "tag", NUL),
    ("/api/v1/mailboxes", "cursor", NUL),
    ("/api/v1/mailboxes", "error_code", NUL),
    ("/api/v1/mailboxes/consent-request", "status", NUL),
    ("/api/v1/workspaces", "search", NUL),
    ("/api/v1/credentials", "workspace_id", NUL),
    ("/api/v1/mailboxes", NUL, "x"),  # NUL in a parameter's name
]

API_JSON_CASES = [
    # (method, path, body) — NUL / surrogates in strings and keys, deep nesting.
    (
        "post",
        "/api/v1/mailboxes/microsoft/bulk",
        {"accounts": [{"email": "a@b.example", "display_name": f"x{NUL}y"}]},
    ),
    (
        "post",
        "/api/v1/mailboxes/microsoft/bulk",
        {"accounts": [{"email": "a@b.example", "display_name": f"x{SURROGATE}y"}]},
    ),
    ("post", "/api/v1/mailboxes/microsoft/bulk", {"accounts": [{"email": f"a{NUL}@b.example"}]}),
    ("post", "/api/v1/mailboxes/microsoft/bulk", {f"acc{NUL}ounts": []}),
    ("post", "/api/v1/workspaces", {"name": f"evil{NUL}"}),
    ("post", "/api/v1/workspaces", {"name": f"evil{SURROGATE}"}),
    ("post", "/api/v1/mailboxes/consent-request/initiate", {"email": f"x{NUL}@a.example"}),
    ("post", "/api/v1/mailboxes/microsoft", {"email": "x@a.example", "first_name": SURROGATE}),
    ("post", "/api/v1/mailboxes/connect/outlook", {"tag": NUL}),
    ("post", "/api/v1/credentials", {"name": NUL, "kind": "graph_app_only"}),
    ("patch", "/api/v1/mailboxes/{uid}", {"display_name": f"n{NUL}"}),
    ("patch", "/api/v1/mailboxes/{uid}", {"tags": [f"t{SURROGATE}"]}),
    ("patch", "/api/v1/workspaces/{ws}", {"name": SURROGATE}),
    ("post", "/api/v1/workspaces/{ws}/webhook", {"url": f"https://example.com/{NUL}"}),
]

API_DEEP_CASES = [
    ("post", "/api/v1/mailboxes/microsoft/bulk"),
    ("post", "/api/v1/workspaces"),
    ("post", "/api/v1/mailboxes/microsoft"),
    ("post", "/api/v1/mailboxes/consent-request/initiate"),
    ("post", "/api/v1/credentials"),
    ("patch", "/api/v1/mailboxes/{uid}"),
    ("patch", "/api/v1/workspaces/{ws}"),
    ("post", "/api/v1/workspaces/{ws}/webhook"),
]


CASES: dict[str, list[int]] = {}  # kind of case -> statuses seen, for the report line


def seen(kind: str, response) -> None:
    CASES.setdefault(kind, []).append(response.status_code)


@pytest.fixture
def hostile_api(api_keys, mailboxes, ws_a, settings):
    """`hostile_api(method, path, body=…|data=…|params=…|files=…)` through Django's test client
    as the root platform key; `raw` bytes go as they are."""
    from rest_framework.test import APIClient

    settings.API_RATE_LIMIT = "100000/min"
    key = api_keys["root_platform"]
    mailbox = mailboxes["a"]

    def call(method, path, *, body=None, data=None, params=None, files=None):
        client = APIClient()
        url = path.format(uid=mailbox.uid, ws=ws_a.pk)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        kwargs = {"HTTP_X_API_KEY": key}
        if body is not None:
            response = getattr(client, method)(
                url, data=body, content_type="application/json", **kwargs
            )
        elif files is not None:
            response = getattr(client, method)(
                url, data={**data, **files}, format="multipart", **kwargs
            )
        elif data is not None:
            encoded = urllib.parse.urlencode(data)
            response = getattr(client, method)(
                url, data=encoded, content_type="application/x-www-form-urlencoded", **kwargs
            )
        else:
            response = getattr(client, method)(url, **kwargs)
        seen("api", response)
        return response

    return call


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "name", "value"), API_QUERY_CASES)
def test_api_query_parameter_with_nul_is_refused(hostile_api, path, name, value):
    response = hostile_api("get", path, params={name: value})
    assert_api_refusal(response, "VALIDATION_ERROR")
    assert "NUL" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_api_query_parameter_with_broken_utf8_is_not_a_server_error(hostile_api):
    """Bytes of a UTF-16 surrogate in the query string: Django decodes them as U+FFFD."""
    response = hostile_api("get", "/api/v1/mailboxes?status=%ED%A0%80")
    assert response.status_code == 400 and response.json()["success"] is False


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "body"), API_JSON_CASES)
def test_api_json_string_with_nul_or_surrogate_is_refused(hostile_api, method, path, body):
    # ensure_ascii keeps the surrogate as the escape \ud800, as a hostile client sends it.
    response = hostile_api(method, path, body=json.dumps(body))
    assert_api_refusal(response, "VALIDATION_ERROR")
    error = response.json()["error"]
    assert ("NUL" in error["message"]) or ("surrogate" in error["message"])
    assert error["fields"]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), API_DEEP_CASES)
@pytest.mark.parametrize("levels", [33, 5000, 100_000])
def test_api_deeply_nested_json_is_malformed(hostile_api, method, path, levels):
    response = hostile_api(method, path, body=raw_json(levels))
    assert_api_refusal(response, "API_MALFORMED_REQUEST")
    assert "deeper than 32" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_api_json_within_the_depth_limit_reaches_the_view(hostile_api):
    """32 levels is allowed: the view's own validation answers (not the guard)."""
    response = hostile_api("post", "/api/v1/workspaces", body=raw_json(31))
    assert_api_refusal(response, "VALIDATION_ERROR")
    assert "deeper" not in response.json()["error"]["message"]


@pytest.mark.django_db
def test_api_form_field_with_nul_is_refused(hostile_api):
    response = hostile_api(
        "post", "/api/v1/mailboxes/microsoft", data={"email": "x@a.example", "first_name": NUL}
    )
    assert_api_refusal(response, "VALIDATION_ERROR")
    error = response.json()["error"]
    assert error["fields"] == {"first_name": [error["message"]]}


@pytest.mark.django_db
def test_api_multipart_field_with_nul_is_refused(hostile_api):
    upload = hostile_api(
        "post",
        "/api/v1/mailboxes/import/outlook",
        files={"file": SimpleUploadedFile("a.csv", b"email,password\n", "text/csv")},
        data={"tag": f"t{NUL}"},
    )
    assert_api_refusal(upload, "VALIDATION_ERROR")
    assert upload.json()["error"]["fields"].keys() == {"tag"}


@pytest.mark.django_db
def test_api_nul_in_the_path_is_refused(hostile_api):
    assert_api_refusal(hostile_api("get", "/api/v1/mailboxes/%00"))


@pytest.mark.django_db(transaction=True)
def test_every_api_case_over_real_http(live_server, api_keys, mailboxes, ws_a, settings):
    """The same cases as raw HTTP to a live server (what a client's bytes really become)."""
    settings.API_RATE_LIMIT = "100000/min"
    headers = {"X-Api-Key": api_keys["root_platform"]}
    statuses = []

    def url(path):
        return live_server.url + path.format(uid=mailboxes["a"].uid, ws=ws_a.pk)

    with requests.Session() as http:
        for path, name, value in API_QUERY_CASES:
            statuses.append(http.get(url(path), params={name: value}, headers=headers, timeout=30))
        statuses.append(
            http.get(url("/api/v1/mailboxes?status=%ED%A0%80"), headers=headers, timeout=30)
        )
        statuses.append(http.get(url("/api/v1/mailboxes/%00"), headers=headers, timeout=30))
        json_headers = {**headers, "Content-Type": "application/json"}
        for method, path, body in API_JSON_CASES:
            statuses.append(
                http.request(
                    method, url(path), data=json.dumps(body), headers=json_headers, timeout=30
                )
            )
        for method, path in API_DEEP_CASES:
            for levels in (33, 5000, 100_000):
                statuses.append(
                    http.request(
                        method, url(path), data=raw_json(levels), headers=json_headers, timeout=30
                    )
                )
        # Invalid UTF-8 (a surrogate's bytes) as a raw JSON body.
        statuses.append(
            http.post(
                url("/api/v1/workspaces"),
                data=b'{"name": "\xed\xa0\x80"}',
                headers=json_headers,
                timeout=30,
            )
        )
    for response in statuses:
        CASES.setdefault("live", []).append(response.status_code)
        assert_api_refusal(response)
    assert (
        len(statuses)
        == len(API_QUERY_CASES) + 2 + len(API_JSON_CASES) + 3 * len(API_DEEP_CASES) + 1
    )


# --- the admin over Django's test client ----------------------------------------------------------
def changelists():
    return sorted(
        f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"
        for model in admin.site._registry
    )


@pytest.fixture
def root_client(client, personas, mailboxes):
    """The test client as a superuser; every answer is counted for the report."""
    client.force_login(personas["root"])
    for name in ("get", "post"):
        send = getattr(client, name)

        def recorded(*args, _send=send, **kwargs):
            response = _send(*args, **kwargs)
            seen("admin", response)
            return response

        setattr(client, name, recorded)
    return client


ADMIN_QUERIES = [
    "created_at__year=99999",
    "created_at__year=-1&created_at__month=13",
    "created_at__year=2024&created_at__month=99&created_at__day=99",
    "q=%00",
    "q=x%00y",
    "status__exact=%00",
    "workspace__id__exact=%00",
    "workspace__id__exact=notanumber",
    "o=%00",
    "p=%00",
    "e=%00",
    "id__in=%00",
]


@pytest.mark.django_db
@pytest.mark.parametrize("query", ADMIN_QUERIES)
@pytest.mark.parametrize("changelist", changelists())
def test_admin_lists_survive_hostile_parameters(root_client, changelist, query):
    response = root_client.get(f"{reverse(changelist)}?{query}")
    assert response.status_code < 500
    if "%00" in query:
        assert response.status_code == 400
        assert "NUL byte" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("term", ["%00", "a%00", "%ED%A0%80"])
def test_admin_autocomplete_term(root_client, term):
    url = reverse("admin:autocomplete")
    response = root_client.get(
        f"{url}?term={term}&app_label=fleet&model_name=mailbox&field_name=workspace"
    )
    assert response.status_code < 500
    if "%00" in term:
        assert response.status_code == 400


@pytest.mark.django_db
def test_bulk_add_results_code_filter(root_client, ws_a):
    credential = Credential.objects.create(
        workspace=ws_a, name="g", kind="graph_app_only", client_id="c", client_secret="s"
    )
    run = BulkAddRun.objects.create(workspace=ws_a, credential=credential, total=0)
    url = reverse("admin:fleet_bulkaddrun_change", args=[run.pk])
    assert root_client.get(f"{url}?code=MAILBOX_NOT_FOUND").status_code == 200
    refused = root_client.get(f"{url}?code=%00")
    assert refused.status_code == 400 and "NUL byte" in refused.content.decode()
    assert root_client.get(f"{url}?code=%00&format=csv").status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("uid", ["not-a-uuid", "%00", "1", "'; drop table x; --"])
def test_consent_links_csv_with_a_bad_uid(root_client, ws_a, uid):
    cr = ConsentRequest.objects.create(
        workspace=ws_a, kind="external", consent_url="https://x.example/c"
    )
    url = reverse("admin:fleet_consentrequest_links_csv")
    response = root_client.get(
        f"{url}?uid={urllib.parse.quote(uid) if uid != '%00' else uid}&uid={cr.uid}"
    )
    assert response.status_code < 500
    if uid != "%00":
        assert response.status_code == 200 and str(cr.uid) in response.content.decode()


@pytest.mark.django_db
def test_admin_form_field_with_nul_is_refused_and_nothing_saved(root_client, ws_a):
    url = reverse("admin:fleet_tag_add")
    response = root_client.post(url, {"workspace": ws_a.pk, "name": f"evil{NUL}"})
    assert response.status_code == 400 and "NUL byte" in response.content.decode()
    assert not ws_a.tags.filter(name__startswith="evil").exists()


@pytest.mark.django_db
def test_admin_changelist_action_with_nul_selection(root_client, mailboxes):
    url = reverse("admin:fleet_mailbox_changelist")
    response = root_client.post(
        url, {"action": "delete_selected", "_selected_action": [NUL], "index": "0"}
    )
    assert response.status_code == 400
    assert Mailbox.objects.filter(pk=mailboxes["a"].pk).exists()


# --- the hypothesis run ------------------------------------------------------------------------
HOSTILE_TEXT = st.one_of(
    st.text(min_size=0, max_size=20),
    st.text(
        alphabet=st.sampled_from(["a", "é", NUL, SURROGATE, "\udc00", "😀", "[", '"', "\\"]),
        max_size=12,
    ),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), HOSTILE_TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(HOSTILE_TEXT, inner, max_size=3)
    ),
    max_leaves=12,
)
FUZZED_WRITES = [
    ("post", "/api/v1/mailboxes/microsoft/bulk"),
    ("post", "/api/v1/workspaces"),
    ("post", "/api/v1/mailboxes/microsoft"),
    ("post", "/api/v1/mailboxes/consent-request/initiate"),
    ("patch", "/api/v1/mailboxes/{uid}"),
]


@pytest.mark.django_db
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    target=st.sampled_from(FUZZED_WRITES),
    body=st.one_of(
        JSON_VALUES,
        st.fixed_dictionaries(
            {
                "accounts": st.lists(
                    st.fixed_dictionaries({"email": HOSTILE_TEXT, "display_name": HOSTILE_TEXT}),
                    max_size=3,
                )
            }
        ),
        st.integers(min_value=20, max_value=3000).map(deep),
    ),
    query=HOSTILE_TEXT,
)
def test_hypothesis_hostile_bodies_and_queries_never_5xx(api, fuzz_keys, target, body, query):
    method, path = target
    path = path.format(uid=fuzz_keys["uid"])
    try:
        payload = json.dumps(body)
    except RecursionError:
        payload = raw_json(3000)
    from rest_framework.test import APIClient

    client = APIClient()
    response = getattr(client, method)(
        f"{path}?{urllib.parse.urlencode({'workspace_id': query}, encoding='utf-8', errors='surrogatepass')}",
        data=payload,
        content_type="application/json",
        HTTP_X_API_KEY=fuzz_keys["key"],
    )
    seen("hypothesis", response)
    assert response.status_code < 500, (response.status_code, response.content[:300])
    assert response.json()["success"] is False or response.status_code < 300


@pytest.fixture
def fuzz_keys(api_keys, mailboxes, settings):
    settings.API_RATE_LIMIT = "100000/min"
    settings.API_BULK_WAIT_SECONDS = 0
    return {"key": api_keys["a_operator"], "uid": mailboxes["a"].uid}


# --- the OAuth callback --------------------------------------------------------------------------
@pytest.fixture
def ava(ws_a):
    return Mailbox.objects.create(
        workspace=ws_a, email="ava@acme-outreach.com", auth_method="oauth", display_name="Ava"
    )


def signed_in_callback(client, mailbox, button="accept"):
    """A consent request, its link opened and the sandbox's sign-in pressed: the callback URL
    Microsoft sends the browser to (not yet opened)."""
    from fleet import consent
    from tests.browser import local_path, press

    request = consent.initiate(mailbox.workspace, mailbox_uid=mailbox.uid)
    authorize = client.get(reverse("consent_start", args=[request.uid]))["Location"]
    return request, local_path(press(authorize, mailbox.email, button))


@pytest.mark.parametrize("param", ["code", "state", "session_state", "extra"])
def test_callback_with_nul_is_refused_and_the_request_stays_open(
    sandbox, oauth_app, ava, client, param
):
    request, callback = signed_in_callback(client, ava)
    page = client.get(
        f"{callback}&{param}=x%00y" if param != "state" else callback.replace("state=", "state=%00")
    )
    seen("callback", page)
    assert page.status_code == 400 and "NUL byte" in page.content.decode()
    request.refresh_from_db()
    assert request.status == "pending"  # never `processing`
    if param != "state":
        # The browser's real answer still completes the connection.
        assert client.get(callback).status_code == 200
        request.refresh_from_db()
        assert request.status == "completed"


def test_callback_error_description_that_cannot_be_stored_fails_the_request(
    sandbox, oauth_app, ava, client
):
    """Past the guard (consent.complete is a service any caller may use): Microsoft's quoted
    error_description with NUL and a surrogate ends the request FAILED, never `processing`."""
    from urllib.parse import parse_qsl, urlsplit

    from fleet import consent

    request, callback = signed_in_callback(client, ava, "deny")
    params = dict(parse_qsl(urlsplit(callback).query))
    params["error_description"] = f"denied{NUL} by {SURROGATE} policy"
    outcome = consent.complete(params)
    assert outcome.error is not None
    request.refresh_from_db()
    assert request.status == "failed" and request.error_code == outcome.error.code
    assert unstorable(request.error_message) is None


def test_storable_drops_what_cannot_be_stored():
    assert storable(f"a{NUL}b{SURROGATE}c😀") == "ab\ufffdc😀"


def test_report_hostile_case_counts():
    """Runs last in file order: one line with the counts (cases and 5xx) for the report."""
    statuses = [s for values in CASES.values() for s in values]
    by_kind = ", ".join(f"{kind} {len(values)}" for kind, values in sorted(CASES.items()))
    fives = sum(s >= 500 for s in statuses)
    print(f"\nhostile cases: {len(statuses)} requests ({by_kind}), 5xx: {fives}")
    assert all(s < 500 for s in statuses)
