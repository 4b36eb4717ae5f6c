"""Rate limits (per key, shared across processes), body size limits, request ids, and the
envelope on every kind of error, including Django's and DRF's own."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.api import mailboxes as mailbox_views
from tests.test_tasks import database_url

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def shared_cache(settings, tmp_path):
    """A file cache in a fresh folder: the same store a second process can open."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        }
    }
    return f"filecache://{tmp_path / 'cache'}"


def test_rate_limit_answers_429_with_retry_after_per_key(api, api_keys, settings, shared_cache):
    settings.API_RATE_LIMIT = "3/min"
    statuses = [
        api("get", "/api/v1/workspaces", api_keys["bob_platform"]).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    limited = api("get", "/api/v1/workspaces", api_keys["bob_platform"])
    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert limited.json()["error"]["code"] == "API_RATE_LIMITED"
    assert limited.json()["error"]["message"].endswith(f"{limited['Retry-After']} s.")
    # Another key has its own budget.
    assert api("get", "/api/v1/workspaces", api_keys["alice_platform"]).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_rate_limit_is_shared_across_processes(api, api_keys, settings, shared_cache):
    """Two requests here, two in another Python process with the same CACHE_URL: the fourth
    request overall is refused, and then this process is refused too."""
    settings.API_RATE_LIMIT = "3/min"
    key = api_keys["alice_platform"]
    assert [api("get", "/api/v1/workspaces", key).status_code for _ in range(2)] == [200, 200]
    code = (
        "from django.test import Client\n"
        "c = Client()\n"
        f"print(*[c.get('/api/v1/workspaces', HTTP_X_API_KEY='{key}').status_code for _ in range(2)])"
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CACHE_URL": shared_cache,
        "API_RATE_LIMIT": "3/min",
        "LOG_LEVEL": "WARNING",
    }
    other = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip().splitlines()[-1].split() == ["200", "429"]
    assert api("get", "/api/v1/workspaces", key).status_code == 429


def test_body_over_the_limit_is_refused_unread(api, api_keys, settings, mailboxes):
    settings.API_MAX_REQUEST_BYTES = 1000
    uid = mailboxes["a"].uid
    big = api(
        "patch",
        f"/api/v1/mailboxes/{uid}",
        api_keys["a_manager"],
        data={"display_name": "x" * 2000},
    )
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "API_REQUEST_TOO_LARGE"
    assert "1000 bytes" in big.json()["error"]["message"]
    # Multipart uploads count too (Django's own limit leaves files out).
    upload = api(
        "post",
        "/api/v1/credentials",
        api_keys["a_manager"],
        data={"name": "x", "file": ("a.csv", b"x" * 5000)},
        format="multipart",
    )
    assert upload.status_code == 413
    small = api(
        "patch", f"/api/v1/mailboxes/{uid}", api_keys["a_manager"], data={"display_name": "A"}
    )
    assert small.status_code == 200


def test_request_id_is_accepted_or_made_returned_and_logged(api, api_keys, caplog):
    with caplog.at_level(logging.INFO, logger="fleet.api"):
        given = api(
            "get",
            "/api/v1/workspaces",
            api_keys["bob_platform"],
            headers={"X-Request-Id": "req-42.a"},
        )
        made = api("get", "/api/v1/workspaces", api_keys["bob_platform"])
        forged = api(
            "get",
            "/api/v1/workspaces",
            api_keys["bob_platform"],
            headers={"X-Request-Id": "x\nstatus=200 injected"},
        )
        missing_key = api("get", "/api/v1/workspaces")
    assert given["X-Request-Id"] == "req-42.a"
    assert len(made["X-Request-Id"]) == 32
    assert forged["X-Request-Id"] != "x\nstatus=200 injected" and "\n" not in forged["X-Request-Id"]
    assert missing_key["X-Request-Id"]
    lines = [r.getMessage() for r in caplog.records if r.name == "fleet.api"]
    assert any("request_id=req-42.a" in line and "status=200" in line for line in lines)
    assert any(
        f"request_id={missing_key['X-Request-Id']}" in line and "status=401" in line
        for line in lines
    )
    key_prefix = api_keys["bob_platform"][:14]
    assert any(f"key={key_prefix}" in line for line in lines)
    assert not any(api_keys["bob_platform"] in line for line in lines)  # never the key itself


@pytest.mark.parametrize(
    "method,path,kwargs,status,code",
    [
        ("get", "/api/v1/nowhere", {}, 404, "NOT_FOUND"),
        ("get", "/api/v2/mailboxes", {}, 404, "NOT_FOUND"),
        ("get", "/api/v1/mailboxes/not-a-uuid", {}, 404, "NOT_FOUND"),
        ("get", "/api/v1/workspaces/99999999999999999999", {}, 404, "NOT_FOUND"),
        ("put", "/api/v1/mailboxes", {}, 405, "API_METHOD_NOT_ALLOWED"),
        (
            "patch",
            "/api/v1/workspaces/{ws}",
            {"data": "name=x", "format": None, "content_type": "text/plain"},
            415,
            "API_UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "patch",
            "/api/v1/workspaces/{ws}",
            {"data": '{"name": ', "format": None, "content_type": "application/json"},
            400,
            "API_MALFORMED_REQUEST",
        ),
        ("get", "/api/v1/workspaces", {"HTTP_ACCEPT": "text/html"}, 406, "API_NOT_ACCEPTABLE"),
    ],
)
def test_protocol_errors_are_enveloped(method, path, kwargs, status, code, api, api_keys, ws_a):
    response = api(method, path.format(ws=ws_a.pk), api_keys["root_platform"], **kwargs)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    assert body["error"]["message"]


def test_bad_host_under_api_is_json(client, settings):
    response = client.get("/api/v1/workspaces", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response.json()["success"] is False


def test_unexpected_error_is_a_500_envelope_without_traceback(
    api, api_keys, mailboxes, monkeypatch, caplog
):
    # The one place a fault is injected on purpose: a programming error inside a view.
    def broken(serializer, mailbox):
        raise RuntimeError("boom at line 42")

    monkeypatch.setattr(mailbox_views.MailboxSerializer, "to_representation", broken)
    with caplog.at_level(logging.ERROR, logger="fleet.api"):
        response = api("get", f"/api/v1/mailboxes/{mailboxes['a'].uid}", api_keys["a_viewer"])
    assert response.status_code == 500
    assert response.json() == {
        "success": False,
        "error": {
            "code": "INTERNAL_ERROR",
            "message": "An unexpected error has occurred. Please try again later.",
        },
    }
    assert b"boom" not in response.content and b"Traceback" not in response.content
    logged = [r for r in caplog.records if r.name == "fleet.api" and r.levelno == logging.ERROR]
    assert logged and response["X-Request-Id"] in logged[0].getMessage()


def test_admin_pages_keep_their_html_errors(client):
    response = client.get("/admin/fleet/nothing-here/")
    assert response["Content-Type"].startswith("text/html")
