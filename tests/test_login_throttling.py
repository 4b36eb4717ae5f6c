"""Sign-in throttling: django-axes on the admin login (per user name and address, cool-off, the
lock-out page, the unlock command) and the API's throttle for missing or wrong keys per address
(429 with Retry-After, the envelope)."""

import secrets
from datetime import timedelta

import pytest
import requests
from axes.models import AccessAttempt
from django.core.management import call_command
from django.urls import reverse

PASSWORD = "pw-for-tests-1"  # tests/conftest.py: make_user

LOGIN = "/admin/login/"


def sign_in(client, username, password, address="127.0.0.1"):
    return client.post(
        LOGIN,
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )


def signed_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


@pytest.mark.django_db
def test_twenty_wrong_passwords_lock_the_user_out_from_that_address(client, personas, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    answers = [sign_in(client, "alice", f"wrong-{n}") for n in range(20)]
    # The first four are the usual form error; from the fifth on, the lock-out page.
    assert [a.status_code for a in answers[:4]] == [200] * 4
    assert all(a.status_code == 429 for a in answers[4:])
    locked = sign_in(client, "alice", PASSWORD)
    assert locked.status_code == 429 and not signed_in(locked)
    page = locked.content.decode()
    assert 'id="login-locked"' in page and "Too many failed sign-ins" in page
    assert "alice" in page and "axes_reset" in page and "0:15:00" in page
    # Another address, and another user from this address, are not locked.
    assert signed_in(sign_in(client, "alice", PASSWORD, address="192.0.2.7"))
    client.logout()
    assert signed_in(sign_in(client, "bob", PASSWORD))


@pytest.mark.django_db
def test_cool_off_ends_the_lock_out(client, personas):
    for n in range(5):
        sign_in(client, "alice", f"wrong-{n}")
    assert sign_in(client, "alice", PASSWORD).status_code == 429
    # Fifteen minutes later (the attempts aged in the database, as time would age them).
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16)
    )
    assert signed_in(sign_in(client, "alice", PASSWORD))


@pytest.mark.django_db
def test_axes_reset_command_unlocks(client, personas):
    for n in range(6):
        sign_in(client, "bob", f"wrong-{n}")
    assert sign_in(client, "bob", PASSWORD).status_code == 429
    call_command("axes_reset_username", "bob")
    assert signed_in(sign_in(client, "bob", PASSWORD))
    client.logout()
    for n in range(6):
        sign_in(client, "alice", f"wrong-{n}")
    call_command("axes_reset")
    assert signed_in(sign_in(client, "alice", PASSWORD))


@pytest.mark.django_db
def test_a_success_resets_the_count(client, personas):
    for n in range(4):
        sign_in(client, "alice", f"wrong-{n}")
    assert signed_in(sign_in(client, "alice", PASSWORD))
    client.logout()
    for n in range(4):
        assert sign_in(client, "alice", f"again-{n}").status_code == 200
    assert signed_in(sign_in(client, "alice", PASSWORD))


@pytest.mark.django_db
def test_login_page_still_works(client, personas):
    assert client.get(reverse("admin:login")).status_code == 200


# --- API keys ----------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_random_keys_from_one_address_get_429_with_retry_after(live_server, api_keys, settings):
    assert settings.API_BAD_KEY_RATE_LIMIT == "30/min"
    statuses, refused = [], None
    with requests.Session() as http:
        for _ in range(400):
            answer = http.get(
                f"{live_server.url}/api/v1/mailboxes",
                headers={"X-Api-Key": f"sk_{secrets.token_urlsafe(24)}"},
                timeout=10,
            )
            statuses.append(answer.status_code)
            if answer.status_code == 429 and refused is None:
                refused = answer
        # While the address is locked out, a good key from it waits too (no guessing through).
        good = http.get(
            f"{live_server.url}/api/v1/mailboxes",
            headers={"X-Api-Key": api_keys["root_platform"]},
            timeout=10,
        )
    assert statuses[:30] == [401] * 30
    assert statuses[30:] == [429] * 370
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    body = refused.json()
    assert body["success"] is False and body["error"]["code"] == "API_RATE_LIMITED"
    assert good.status_code == 429


@pytest.mark.django_db
def test_missing_keys_count_per_address_and_other_addresses_are_not_affected(
    api, api_keys, settings
):
    settings.API_BAD_KEY_RATE_LIMIT = "5/min"
    from rest_framework.test import APIClient

    client = APIClient()
    answers = [client.get("/api/v1/mailboxes", REMOTE_ADDR="198.51.100.1") for _ in range(7)]
    assert [a.status_code for a in answers] == [401] * 5 + [429] * 2
    assert answers[-1]["Retry-After"]
    other = client.get(
        "/api/v1/mailboxes", REMOTE_ADDR="198.51.100.2", HTTP_X_API_KEY=api_keys["root_platform"]
    )
    assert other.status_code == 200
    # Good keys never count: 20 good requests from a fresh address, then a bad one is a 401.
    for _ in range(20):
        ok = client.get(
            "/api/v1/mailboxes",
            REMOTE_ADDR="198.51.100.3",
            HTTP_X_API_KEY=api_keys["root_platform"],
        )
        assert ok.status_code == 200
    assert client.get("/api/v1/mailboxes", REMOTE_ADDR="198.51.100.3").status_code == 401


@pytest.mark.django_db
def test_behind_trusted_proxies_the_forwarded_address_counts(api_keys, settings):
    settings.API_BAD_KEY_RATE_LIMIT = "2/min"
    settings.TRUSTED_PROXIES = 1
    from rest_framework.test import APIClient

    client = APIClient()

    def call(forwarded):
        return client.get(
            "/api/v1/mailboxes", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded
        )

    assert [call("1.1.1.1, 203.0.113.9").status_code for _ in range(3)] == [401, 401, 429]
    # Another client behind the same proxy; a forged left-most entry changes nothing.
    assert call("203.0.113.10").status_code == 401
    assert call("9.9.9.9, 203.0.113.9").status_code == 429
