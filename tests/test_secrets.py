import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import RequestFactory, override_settings
from django.views.debug import ExceptionReporter

from fleet.models import Credential, Mailbox
from fleet.secrets import Secret, SecretKeyError, UnreadableSecret, fernet, is_unreadable

ROOT = Path(__file__).resolve().parent.parent
PLAINTEXT = "Sup3r-Secret-App-Password"


def raw(table, column, pk):
    with connection.cursor() as cur:
        cur.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return cur.fetchone()[0]


@pytest.fixture
def mailbox(ws_a):
    return Mailbox.objects.create(
        workspace=ws_a, email="enc@alpha.example", auth_method="app_password", password=PLAINTEXT
    )


def test_round_trip_and_no_plaintext_in_the_table(mailbox):
    stored = raw("fleet_mailbox", "password", mailbox.pk)
    assert PLAINTEXT not in stored
    assert stored.startswith("gAAAAA")  # a Fernet token
    assert Mailbox.objects.get(pk=mailbox.pk).password == PLAINTEXT


def test_empty_secret_stays_empty(ws_a):
    m = Mailbox.objects.create(workspace=ws_a, email="e@alpha.example", auth_method="oauth")
    assert raw("fleet_mailbox", "password", m.pk) == ""
    assert Mailbox.objects.get(pk=m.pk).password == ""


def test_decrypted_value_has_masked_repr(mailbox):
    value = Mailbox.objects.get(pk=mailbox.pk).password
    assert isinstance(value, Secret)
    assert PLAINTEXT not in repr(value)
    assert f"{value}" == PLAINTEXT


def test_rotation_reencrypts_every_secret(mailbox, ws_a):
    cred = Credential.objects.create(
        workspace=ws_a, name="app", kind="oauth_app", client_id="cid", client_secret="cs-1"
    )
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    before = raw("fleet_mailbox", "password", mailbox.pk)
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key, old_key]):
        call_command("reencrypt_secrets", stdout=io.StringIO())
    after = raw("fleet_mailbox", "password", mailbox.pk)
    assert after != before
    # Only the new key is needed now; the old one no longer decrypts the stored values.
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key]):
        assert Mailbox.objects.get(pk=mailbox.pk).password == PLAINTEXT
        assert Credential.objects.get(pk=cred.pk).client_secret == "cs-1"
    assert Fernet(new_key.encode()).decrypt(after.encode()).decode() == PLAINTEXT
    with pytest.raises(Exception):  # noqa: B017 — InvalidToken
        Fernet(old_key.encode()).decrypt(after.encode())


def test_wrong_key_reads_as_unreadable_and_keeps_the_ciphertext(mailbox):
    stored = raw("fleet_mailbox", "password", mailbox.pk)
    with override_settings(FIELD_ENCRYPTION_KEYS=[Fernet.generate_key().decode()]):
        m = Mailbox.objects.get(pk=mailbox.pk)
        assert is_unreadable(m.password) and m.password == ""
        m.display_name = "renamed"
        m.save()
        with pytest.raises(Exception) as excinfo:
            call_command("reencrypt_secrets", stdout=io.StringIO(), stderr=io.StringIO())
        assert "could not be decrypted" in str(excinfo.value)
    assert raw("fleet_mailbox", "password", mailbox.pk) == stored
    assert Mailbox.objects.get(pk=mailbox.pk).password == PLAINTEXT


def test_bad_key_configuration_is_named():
    from fleet.secrets import _fernet

    with pytest.raises(SecretKeyError, match="FIELD_ENCRYPTION_KEYS: key #2"):
        _fernet((Fernet.generate_key().decode(), "not-a-key"))
    with pytest.raises(SecretKeyError, match="FIELD_ENCRYPTION_KEYS is empty"):
        _fernet(())


def test_unreadable_secret_is_not_a_usable_value():
    u = UnreadableSecret("gAAAAbogus")
    assert not u and u.ciphertext == "gAAAAbogus" and "bogus" not in repr(u)


def test_secret_never_in_logs_with_repr(mailbox, caplog):
    m = Mailbox.objects.get(pk=mailbox.pk)
    with caplog.at_level(logging.INFO):
        logging.getLogger("fleet.test").info("loaded mailbox %r password=%r", m, m.password)
    assert PLAINTEXT not in caplog.text


def test_error_page_hides_secrets_in_locals_and_post(mailbox):
    request = RequestFactory().post(
        "/admin/fleet/mailbox/1/change/", {"password": PLAINTEXT, "client_secret": PLAINTEXT}
    )
    request.user = None

    def fails(password):
        raise RuntimeError("boom")

    try:
        fails(Mailbox.objects.get(pk=mailbox.pk).password)
    except RuntimeError:
        html = ExceptionReporter(request, *sys.exc_info()).get_traceback_html()
    assert "boom" in html
    assert PLAINTEXT not in html


def test_fernet_is_built_from_settings():
    token = fernet().encrypt(b"x")
    assert Fernet(settings.FIELD_ENCRYPTION_KEYS[0].encode()).decrypt(token) == b"x"


def manage(*args, **env):
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    base.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=base, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "env, says",
    [
        ({"FIELD_ENCRYPTION_KEYS": "not-a-key"}, "FIELD_ENCRYPTION_KEYS: key #1"),
        ({"FIELD_ENCRYPTION_KEYS": ""}, "FIELD_ENCRYPTION_KEYS must be set"),
        ({"SECRET_KEY": ""}, "SECRET_KEY must be set"),
        ({"DEBUG": "maybe"}, "DEBUG has an invalid value"),
        ({"DATABASE_URL": "nonsense://x"}, "DATABASE_URL must be"),
        ({"DATABASE_URL": "postgres://u@h:port/db"}, "DATABASE_URL has an invalid value"),
    ],
)
def test_configuration_mistakes_name_the_variable_without_traceback(env, says):
    result = manage("check", DEBUG=env.pop("DEBUG", "false"), **env)
    assert result.returncode != 0
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_check_deploy_is_clean_with_production_settings():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY="x" * 20 + "a-long-random-production-secret-key-1234567890",
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="fleet.example.com",
        SECURE_SSL_REDIRECT="true",
        SESSION_COOKIE_SECURE="true",
        CSRF_COOKIE_SECURE="true",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout
