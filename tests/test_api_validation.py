"""Every validation error of the API: status 400, code VALIDATION_ERROR, a message naming the
field, and nothing written."""

import pytest

from fleet.models import Credential, Mailbox, Tag, Workspace


def assert_invalid(response, field=None, text=None):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "VALIDATION_ERROR"
    if field:
        assert body["error"]["message"].startswith(f"{field}: ")
        assert field in body["error"]["fields"]
    if text:
        assert text in body["error"]["message"]


@pytest.mark.parametrize(
    "body,field,text",
    [
        ({}, "name", "required"),
        ({"name": ""}, "name", "blank"),
        ({"name": "x" * 201}, "name", "200"),
        ({"name": "Gamma", "slug": "not a slug"}, "slug", "slug"),
        ({"name": "Gamma", "slug": "alpha"}, "slug", "already exists"),
        ({"name": "!!!"}, "slug", "Give a slug"),
        ({"name": "Bad\x00name"}, "name", "NUL byte"),  # the request guard
    ],
)
def test_workspace_create_errors(body, field, text, api, api_keys, ws_a):
    before = Workspace.objects.count()
    assert_invalid(
        api("post", "/api/v1/workspaces", api_keys["root_platform"], data=body), field, text
    )
    assert Workspace.objects.count() == before


@pytest.mark.parametrize(
    "body,field,text",
    [
        ({"slug": "beta"}, "slug", "already exists"),
        ({"name": ""}, "name", "blank"),
        ({"slug": "a b"}, "slug", "slug"),
    ],
)
def test_workspace_update_errors(body, field, text, api, api_keys, ws_a, ws_b):
    response = api("patch", f"/api/v1/workspaces/{ws_a.pk}", api_keys["root_platform"], data=body)
    assert_invalid(response, field, text)
    ws_a.refresh_from_db()
    assert (ws_a.name, ws_a.slug) == ("Alpha", "alpha")


@pytest.mark.parametrize(
    "body,field,text",
    [
        ({}, "url", "required"),
        ({"url": "not a url", "secret": "s"}, "url", "valid URL"),
        ({"url": "https://hooks.example/" + "x" * 500, "secret": "s"}, "url", "500"),
        ({"url": "https://hooks.example/fleet"}, "secret", "signing secret"),
    ],
)
def test_webhook_errors(body, field, text, api, api_keys, ws_a):
    response = api(
        "post", f"/api/v1/workspaces/{ws_a.pk}/webhook", api_keys["root_platform"], data=body
    )
    assert_invalid(response, field, text)
    ws_a.refresh_from_db()
    assert ws_a.webhook_url == ""


@pytest.mark.parametrize(
    "body,field,text",
    [
        ({"warmup_daily_volume": 2001}, "warmup_daily_volume", "2000"),
        ({"warmup_daily_volume": -1}, "warmup_daily_volume", "0"),
        ({"warmup_daily_volume": "many"}, "warmup_daily_volume", "integer"),
        ({"warmup_response_rate": 101}, "warmup_response_rate", "100"),
        ({"warmup_response_rate": -5}, "warmup_response_rate", "0"),
        ({"display_name": "x" * 256}, "display_name", "255"),
        ({"tags": "vip"}, "tags", "list"),
        ({"tags": ["x" * 65]}, "tags", "64"),
        ({"tags": [""]}, "tags", "blank"),
        ({"tags": [f"t{i}" for i in range(51)]}, "tags", "50"),
    ],
)
def test_mailbox_update_errors(body, field, text, api, api_keys, mailboxes):
    mailbox = mailboxes["a"]
    response = api("patch", f"/api/v1/mailboxes/{mailbox.uid}", api_keys["a_manager"], data=body)
    assert_invalid(response, field, text)
    mailbox.refresh_from_db()
    assert (mailbox.warmup_daily_volume, mailbox.warmup_response_rate, mailbox.display_name) == (
        20,
        30,
        "",
    )
    assert list(mailbox.tags.values_list("name", flat=True)) == ["alpha-tag"]
    assert Tag.objects.count() == 2


@pytest.mark.parametrize(
    "query,field",
    [
        ("status=sleeping", "status"),
        ("warmup_status=hot", "warmup_status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("workspace_id=abc", "workspace_id"),
        ("workspace_id=0", "workspace_id"),
        ("workspace_id=99999999999999999999999", "workspace_id"),
        ("cursor=not-a-cursor", "cursor"),
        ("tag=" + "x" * 65, "tag"),
    ],
)
def test_mailbox_list_filter_errors(query, field, api, api_keys, mailboxes):
    assert_invalid(api("get", f"/api/v1/mailboxes?{query}", api_keys["root_platform"]), field)


VALID_CREDENTIAL = {
    "name": "Tenant app",
    "kind": "graph_app_only",
    "tenant_id": "contoso.onmicrosoft.com",
    "client_id": "11111111-2222-3333-4444-555555555555",
    "client_secret": "s3cret~value",
    "secret_expires_at": "2027-06-30",
}


@pytest.mark.parametrize(
    "change,field,text",
    [
        ({"name": None}, "name", "required"),
        ({"kind": None}, "kind", "required"),
        ({"kind": "saml"}, "kind", "valid choice"),
        ({"client_id": None}, "client_id", "required"),
        ({"client_secret": None}, "client_secret", "required"),
        ({"client_secret": ""}, "client_secret", "blank"),
        ({"redirect_uri": "nope"}, "redirect_uri", "valid URL"),
        ({"secret_expires_at": "next year"}, "secret_expires_at", "format"),
        ({"tenant_id": "t" * 101}, "tenant_id", "100"),
    ],
)
def test_credential_create_errors(change, field, text, api, api_keys, ws_a):
    body = {k: v for k, v in {**VALID_CREDENTIAL, **change}.items() if v is not None}
    response = api("post", "/api/v1/credentials", api_keys["a_manager"], data=body)
    assert_invalid(response, field, text)
    assert not Credential.objects.exists()


def test_credential_list_filter_errors(api, api_keys):
    assert_invalid(api("get", "/api/v1/credentials?kind=saml", api_keys["a_viewer"]), "kind")
    assert_invalid(api("get", "/api/v1/credentials?status=good", api_keys["a_viewer"]), "status")


def test_platform_key_with_several_workspaces_must_name_one(api, api_keys, personas, ws_b):
    from fleet.models import Membership

    Membership.objects.filter(user=personas["bob"], workspace=ws_b).update(role="manager")
    response = api("post", "/api/v1/credentials", api_keys["bob_platform"], data=VALID_CREDENTIAL)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "WORKSPACE_REQUIRED"
    # With one workspace where bob is a manager, it may be left out.
    Membership.objects.filter(user=personas["bob"], workspace=ws_b).update(role="viewer")
    made = api("post", "/api/v1/credentials", api_keys["bob_platform"], data=VALID_CREDENTIAL)
    assert made.status_code == 201
    assert made.json()["data"]["workspace_id"] == Credential.objects.get().workspace_id
    assert_invalid(
        api(
            "post",
            "/api/v1/credentials?workspace_id=x",
            api_keys["bob_platform"],
            data=VALID_CREDENTIAL,
        ),
        "workspace_id",
    )


def test_nothing_is_written_by_a_rejected_mailbox_update(api, api_keys, mailboxes):
    """Tags and settings go together: a bad volume leaves the tags as they were too."""
    mailbox = mailboxes["a"]
    response = api(
        "patch",
        f"/api/v1/mailboxes/{mailbox.uid}",
        api_keys["a_manager"],
        data={"tags": ["new"], "warmup_daily_volume": 5000},
    )
    assert_invalid(response, "warmup_daily_volume")
    assert not Tag.objects.filter(name="new").exists()
    assert Mailbox.objects.get(pk=mailbox.pk).warmup_daily_volume == 20
