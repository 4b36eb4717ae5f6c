"""The seeds' own request examples, replayed with `requests` against a live Fleet (a real socket
on loopback) with only the base URL and the key changed: their headers, bodies and multipart
forms, checking status codes and response shapes. Microsoft is the sandbox."""

import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from fleet.models import ConsentRequest, Mailbox, WebhookDelivery
from tests.browser import press

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def base(live_server, sandbox, settings):
    settings.FLEET_BASE_URL = live_server.url  # the OAuth redirect comes back to the live server
    return f"{live_server.url}/api/v1"


def seed_000_request(base, key, token=None):
    """Seed 000's Python example, verbatim but for the URL and the key."""
    url = f"{base}/mailboxes/connect/outlook"
    headers = {
        "Content-Type": "application/json",
        "X-Api-Key": key,
        "Authorization": f"Bearer {token or 'YOUR_API_TOKEN'}",
    }
    return requests.post(url, headers=headers, timeout=30)


def test_seed_000_connect_outlook_then_consent_creates_a_pending_mailbox(
    base, api_keys, oauth_app, ws_a, live_server
):
    ws_a.webhook_url, ws_a.webhook_secret = "https://hooks.example/fleet", "whsec"
    ws_a.save()
    response = seed_000_request(base, api_keys["a_operator"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert set(body["data"]) >= {"authUrl", "instructions"}
    assert body["data"]["instructions"] == (
        "Open this URL in a browser. After authorizing, the mailbox will be created "
        "automatically in your workspace."
    )
    query = parse_qs(urlsplit(body["data"]["authUrl"]).query)
    assert query["client_id"] == [oauth_app.client_id] and query["response_type"] == ["code"]
    assert "SMTP.Send" in query["scope"][0]

    # The owner opens the URL and consents; Microsoft (the sandbox) sends them back to Fleet.
    callback = press(body["data"]["authUrl"], "nora@acme-outreach.com")
    assert callback.startswith(live_server.url)
    page = requests.get(callback, timeout=30)
    assert page.status_code == 200
    nora = Mailbox.objects.get(workspace=ws_a, email="nora@acme-outreach.com")
    assert nora.status == "pending" and nora.needs_approval and nora.refresh_token
    assert WebhookDelivery.objects.filter(workspace=ws_a, event="mailbox.pending").exists()

    # Seed 002's next step: the caller confirms by starting warmup.
    start = requests.post(
        f"{base}/mailboxes/{nora.uid}/warmup/start",
        headers={"X-Api-Key": api_keys["a_manager"]},
        json={"daily_volume": 40, "response_rate": 25},
        timeout=30,
    )
    assert start.status_code == 200, start.text
    data = start.json()["data"]
    assert (data["status"], data["warmup_status"], data["warmup_daily_volume"]) == (
        "active",
        "active",
        40,
    )
    pause = requests.post(
        f"{base}/mailboxes/{nora.uid}/warmup/pause",
        headers={"X-Api-Key": api_keys["a_manager"]},
        timeout=30,
    )
    assert pause.json()["data"]["warmup_status"] == "paused"
    resume = requests.post(
        f"{base}/mailboxes/{nora.uid}/warmup/resume",
        headers={"X-Api-Key": api_keys["a_manager"]},
        timeout=30,
    )
    assert resume.json()["data"]["warmup_status"] == "active"


def test_seed_000_without_an_oauth_app(base, api_keys, ws_a):
    response = seed_000_request(base, api_keys["a_operator"])
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": {
            "code": "MICROSOFT_OAUTH_NOT_CONFIGURED",
            "message": "Microsoft OAuth not configured",
        },
    }
    assert not ConsentRequest.objects.exists()


def test_seed_000_key_as_bearer_only(base, api_keys, oauth_app):
    """The same key in both headers, as a client filling both placeholders does."""
    key = api_keys["a_operator"]
    response = seed_000_request(base, key, token=key)
    assert response.status_code == 200
    unauthorized = requests.post(f"{base}/mailboxes/connect/outlook", timeout=30)
    assert unauthorized.status_code == 401
    assert unauthorized.json()["error"]["code"] == "API_KEY_MISSING"


def test_seed_002_connect_microsoft_form_data(base, api_keys, oauth_app, ws_a, mailboxes):
    """Seed 002: multipart/form-data with `meta`, an id header for logging, Accept JSON."""
    headers = {
        "Authorization": f"Bearer {api_keys['a_operator']}",
        "X-Request-Id": "2f1c0e7a-campaign-42",
        "Accept": "application/json",
    }
    form = {
        "first_name": (None, "Nora"),
        "last_name": (None, "Quinn"),
        "email": (None, "nora@acme-outreach.com"),
        "email_per_day": (None, "40"),
        "response_rate": (None, "30"),
        "meta": (None, '{"crm_id": "A-17"}'),
    }
    response = requests.post(f"{base}/mailboxes/microsoft", headers=headers, files=form, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-Id"] == "2f1c0e7a-campaign-42"
    data = response.json()["data"]
    assert data["authUrl"].startswith(oauth_app_sandbox_prefix(data))
    cr = ConsentRequest.objects.get(uid=data["consent_request_uid"])
    assert cr.request_data["meta"] == {"crm_id": "A-17"}
    assert cr.request_data["display_name"] == "Nora Quinn"
    assert cr.request_data["request_id"] == "2f1c0e7a-campaign-42"

    # JSON works as well; validation follows the seed's limits, word for word where it has any.
    def post(body):
        return requests.post(
            f"{base}/mailboxes/microsoft",
            headers={"X-Api-Key": api_keys["a_operator"]},
            json=body,
            timeout=30,
        )

    ok_body = {"first_name": "Ann", "email": "new@alpha.example", "meta": {}}
    assert post(ok_body).status_code == 200
    for change, field in [
        ({"email": "ann@alpha.example"}, "email"),  # exists already
        ({"email": "x" * 250 + "@a.example"}, "email"),
        ({"email_per_day": 2001}, "email_per_day"),
        ({"response_rate": 101}, "response_rate"),
        ({"meta": None}, "meta"),
        ({"meta": "text"}, "meta"),
        ({"first_name": "x" * 256}, "first_name"),
        ({"first_name": None}, "first_name"),
    ]:
        body = {k: v for k, v in {**ok_body, **change}.items() if v is not None}
        answer = post(body)
        assert answer.status_code == 400, (change, answer.text)
        assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
        assert field in answer.json()["error"]["fields"], change


def oauth_app_sandbox_prefix(data) -> str:
    return data["authUrl"].split("?")[0]


def test_seed_003_consent_requests(base, api_keys, oauth_app, mailboxes, ws_a):
    ann = mailboxes["a"]
    key = api_keys["a_operator"]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    # Seed 003's example: a third party's consent URL for a mailbox by uid.
    response = requests.post(
        f"{base}/mailboxes/consent-request/initiate",
        headers=headers,
        json={
            "mailbox_uid": str(ann.uid),
            "consent_url": "https://accounts.google.com/consent?client_id=123456",
            "request_data": {"client_id": "123456"},
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["error"] is False and body["success"] is True
    assert body["message"] == "Consent request initiated successfully"
    assert {"uid", "status", "mailbox_email", "created_at"} <= set(body["data"])
    assert body["data"]["status"] == "queued"
    assert body["data"]["mailbox_email"] == "ann@alpha.example"
    assert body["data"]["kind"] == "external"
    first = body["data"]["uid"]

    # By username + domain, through Fleet's own OAuth app.
    by_name = requests.post(
        f"{base}/mailboxes/consent-request/initiate",
        headers=headers,
        json={"username": "ann", "domain": "alpha.example"},
        timeout=30,
    )
    assert by_name.status_code == 200
    assert by_name.json()["data"]["kind"] == "user"
    assert "/connect/" in by_name.json()["data"]["consent_url"]

    # 404 for an unknown mailbox (and for another workspace's).
    for mailbox_body in (
        {"mailbox_uid": str(uuid.uuid4())},
        {"mailbox_uid": str(mailboxes["b"].uid)},
        {"username": "nobody", "domain": "alpha.example"},
    ):
        missing = requests.post(
            f"{base}/mailboxes/consent-request/initiate",
            headers=headers,
            json=mailbox_body,
            timeout=30,
        )
        assert missing.status_code == 404, missing.text
        assert missing.json()["error"]["code"] == "NOT_FOUND"
    # 400 for neither uid nor username + domain.
    assert (
        requests.post(
            f"{base}/mailboxes/consent-request/initiate",
            headers=headers,
            json={"username": "ann"},
            timeout=30,
        ).status_code
        == 400
    )

    status = requests.get(f"{base}/mailboxes/consent-request/{first}", headers=headers, timeout=30)
    assert status.status_code == 200
    assert status.json()["data"]["request_data"] == {"client_id": "123456"}
    listing = requests.get(
        f"{base}/mailboxes/consent-request?kind=external&limit=1", headers=headers, timeout=30
    )
    assert [cr["uid"] for cr in listing.json()["data"]] == [first]
    everything = requests.get(
        f"{base}/mailboxes/consent-request?limit=1", headers=headers, timeout=30
    )
    page_two = requests.get(everything.json()["pagination"]["next"], headers=headers, timeout=30)
    assert [cr["uid"] for cr in page_two.json()["data"]] == [first]  # newest first
    # Another workspace's key sees none of them.
    other = requests.get(
        f"{base}/mailboxes/consent-request/{first}",
        headers={"X-Api-Key": api_keys["b_viewer"]},
        timeout=30,
    )
    assert other.status_code == 404


def test_seed_004_shapes_for_errors(base, api_keys):
    """Seed 004's error statuses: 401 for a bad key, 404 for an unknown URL, 400 for a body that
    is not JSON; each in Fleet's envelope (see the README for the choice)."""
    bad_key = requests.get(f"{base}/mailboxes", headers={"x-api-key": "nope"}, timeout=30)
    assert bad_key.status_code == 401
    assert bad_key.json()["error"] == {"code": "API_KEY_INVALID", "message": "Invalid api key"}
    unknown = requests.get(f"{base}/no/such/thing", headers={"x-api-key": "nope"}, timeout=30)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "Requested resource does not exist"
    not_json = requests.post(
        f"{base}/credentials",
        headers={"x-api-key": api_keys["a_manager"], "Content-Type": "application/json"},
        data="{not json",
        timeout=30,
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"]["message"] == "Invalid or empty JSON request body"


SEED_001_CSV = (
    "email,password,name,totpsecret\n"
    "cara@acme-outreach.com,app-pass-1,Cara Lee,JBSWY3DPEHPK3PXP\n"
    "hal.sales@outlook.com,app-pass-2,Hal Brandt,\n"
    "cara@acme-outreach.com,app-pass-1,Cara again,\n"
    ",missing-email,,\n"
)


def test_seed_001_import_outlook_multipart(base, api_keys, ws_a, mailboxes):
    """Seed 001's cURL (`--form file=@… --form tag=…`) as requests sends it."""
    url = f"{base}/mailboxes/import/outlook"
    headers = {"X-Api-Key": api_keys["a_operator"]}
    response = requests.post(
        url,
        headers=headers,
        files={"file": ("mailboxes.csv", SEED_001_CSV.encode(), "text/csv")},
        data={"tag": "batch-7"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert {k: body["data"][k] for k in ("imported", "skipped", "failed")} == {
        "imported": 2,
        "skipped": 1,
        "failed": 1,
    }
    [error] = body["data"]["errors"]
    assert {"email": "unknown", "error": "Missing email or password"}.items() <= error.items()
    cara = Mailbox.objects.get(workspace=ws_a, email="cara@acme-outreach.com")
    hal = Mailbox.objects.get(workspace=ws_a, email="hal.sales@outlook.com")
    assert cara.status == "pending" and cara.auth_method == "app_password"
    assert cara.password == "app-pass-1" and cara.totp_secret
    assert (cara.smtp_host, cara.smtp_port, cara.imap_port) == ("smtp.office365.com", 587, 993)
    assert hal.provider == "outlook_com"
    assert set(cara.tags.values_list("name", flat=True)) == {"batch-7"}
    assert "app-pass-1" not in response.text

    # The seed's own example sends `file` as a plain form field (requests' data=): the text is
    # read as the CSV, and this one has no email/password columns.
    literal = requests.post(
        url, headers=headers, data={"file": "example_string", "tag": "example_string"}, timeout=30
    )
    assert literal.status_code == 400
    assert literal.json() == {
        "success": False,
        "error": {
            "code": "VALIDATION_ERROR",
            "message": "CSV must have email and password columns",
        },
    }


@pytest.mark.parametrize(
    "files,message",
    [
        (None, "CSV file is required"),
        (
            {"file": ("m.csv", b"name,tag\nx,y\n", "text/csv")},
            "CSV must have email and password columns",
        ),
        (
            {
                "file": (
                    "m.csv",
                    (
                        "email,password\n" + "".join(f"u{i}@a.example,p\n" for i in range(501))
                    ).encode(),
                    "text/csv",
                )
            },
            "Maximum 500 mailboxes per import",
        ),
    ],
)
def test_seed_001_validation_errors_word_for_word(base, api_keys, ws_a, files, message):
    before = Mailbox.objects.count()
    response = requests.post(
        f"{base}/mailboxes/import/outlook",
        headers={"X-Api-Key": api_keys["a_operator"]},
        files=files,
        data={"tag": "x"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": {"code": "VALIDATION_ERROR", "message": message},
    }
    assert Mailbox.objects.count() == before  # nothing written


def test_import_needs_an_operator(base, api_keys):
    response = requests.post(
        f"{base}/mailboxes/import/outlook",
        headers={"X-Api-Key": api_keys["a_viewer"]},
        files={"file": ("m.csv", SEED_001_CSV.encode(), "text/csv")},
        timeout=30,
    )
    assert response.status_code == 403
    assert not Mailbox.objects.filter(email="cara@acme-outreach.com").exists()


def test_seed_002_consent_applies_the_request_and_refuses_another_address(
    base, api_keys, oauth_app, ws_a, live_server
):
    """The mailbox created after consent carries the name and warmup settings of the request, and
    signing in as another address than the requested `email` stores nothing."""

    def ask():
        body = {
            "name": "Nora Q.",
            "email": "nora@acme-outreach.com",
            "email_per_day": 55,
            "response_rate": 12,
            "meta": {},
        }
        headers = {"X-Api-Key": api_keys["a_operator"]}
        answer = requests.post(
            f"{base}/mailboxes/microsoft", headers=headers, json=body, timeout=30
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]["authUrl"]

    wrong = requests.get(press(ask(), "ava@acme-outreach.com"), timeout=30)
    assert "MAILBOX_MISMATCH" in wrong.text and "nora@acme-outreach.com" in wrong.text
    assert not Mailbox.objects.filter(workspace=ws_a).exists()

    requests.get(press(ask(), "nora@acme-outreach.com"), timeout=30)
    nora = Mailbox.objects.get(workspace=ws_a, email="nora@acme-outreach.com")
    assert (nora.display_name, nora.warmup_daily_volume, nora.warmup_response_rate) == (
        "Nora Q.",
        55,
        12,
    )
    assert nora.status == "pending" and nora.needs_approval
