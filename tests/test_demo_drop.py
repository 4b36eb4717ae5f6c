"""The demo's planned drop (issue 12 item 7): after SANDBOX_DEMO_DROP_AFTER the sandbox refuses a
demo app password (535 5.7.3) and revokes a demo OAuth grant (AADSTS50173); the next connection
tests disconnect both mailboxes, and the alert digest names them. Real sandbox, real mail
servers, real SMTP server for the digest."""

import smtplib
import ssl
import time

import pytest

from fleet import alerts
from fleet.mailbox_checks import check_mailboxes
from fleet.models import AlertItem, Mailbox, Membership, Role
from tests.conftest import make_user
from tests.test_alerts import smtp  # noqa: F401 (fixture)
from tests.test_run_sandbox import _start

CARA, AVA = "cara@acme-outreach.com", "ava@acme-outreach.com"
APP_PASSWORD = "sandbox-app-password"


@pytest.fixture
def demo(sandbox, sandbox_mail, oauth_app, ws_a):
    """Alpha as the demo has it: cara with the sandbox's app password, ava connected by OAuth
    with the demo grant seed_demo stores; a manager to tell."""
    sandbox.grant_demo_refresh_tokens()
    for user in (CARA, AVA):
        sandbox_mail.add(user, password=APP_PASSWORD)
    hosts = {
        "smtp_host": sandbox_mail.host,
        "smtp_port": sandbox_mail.smtp_port,
        "imap_host": sandbox_mail.host,
        "imap_port": sandbox_mail.imap_port,
        "status": "active",
    }
    cara = Mailbox.objects.create(
        workspace=ws_a, email=CARA, auth_method="app_password", password=APP_PASSWORD, **hosts
    )
    ava = Mailbox.objects.create(
        workspace=ws_a,
        email=AVA,
        auth_method="oauth",
        credential=oauth_app,
        refresh_token=f"sandbox-demo-grant:{AVA}",
        **hosts,
    )
    manager = make_user("manager", email="manager@fleet.localhost")
    Membership.objects.create(user=manager, workspace=ws_a, role=Role.MANAGER)
    # As the demo runs it: short-lived access tokens (so tests refresh), a drop planned ahead.
    sandbox.switches.update(
        {
            "token_lifetime": 60,
            "drop_after": 3600,
            "drop_passwords": [CARA],
            "drop_grants": [AVA],
        }
    )
    return cara, ava


def test_the_demo_drop_disconnects_both_and_the_digest_names_them(demo, sandbox, smtp):
    cara, ava = demo
    assert check_mailboxes([cara.pk, ava.pk]) == {"active": 2}  # before the drop: all is well
    ava.refresh_from_db()
    assert ava.refresh_token and str(ava.refresh_token) != f"sandbox-demo-grant:{AVA}"  # rotated
    assert not AlertItem.objects.exists()

    sandbox.switches.update({"drop_after": 0})  # the planned time has come
    assert check_mailboxes([cara.pk, ava.pk]) == {"error": 1, "reauth_required": 1}
    cara.refresh_from_db(), ava.refresh_from_db()
    assert (cara.status, cara.error_code) == ("error", "INVALID_CREDENTIALS")
    assert (ava.status, ava.error_code) == ("reauth_required", "REAUTH_REQUIRED")
    assert "AADSTS50173" in ava.error_message or "revoked" in ava.error_message.lower()

    alerts.send_due(owner="local-test")
    (message,) = smtp.messages
    assert message.rcpt_tos == ["manager@fleet.localhost"]
    body = message.body()
    assert "CARA@ACME-OUTREACH.COM" in body.upper() and "INVALID_CREDENTIALS" in body
    assert AVA in body and "REAUTH_REQUIRED" in body


def test_before_the_drop_nothing_changes(demo, sandbox, smtp):
    cara, ava = demo
    for _ in range(2):
        assert check_mailboxes([cara.pk, ava.pk]) == {"active": 2}
    alerts.send_due(owner="local-test")
    assert smtp.messages == [] and not AlertItem.objects.exists()


def test_run_sandbox_plans_the_drop_from_its_setting(tmp_path):
    process = _start(tmp_path, SANDBOX_DEMO_DROP_AFTER="1")
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "demo drop in" in line:
                break
        banner = "".join(lines)
        assert f"demo drop in 1 s: {CARA}'s app password refused" in banner, banner
        smtp_port = int(banner.split("SMTP 127.0.0.1:")[1].split(" ")[0])
        ca_file = str(tmp_path / "ca.pem")

        def login(user):
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as client:
                client.starttls(context=ssl.create_default_context(cafile=ca_file))
                return client.login(user, APP_PASSWORD)[0]

        # Poll until the planned second has passed: cara is refused from then on, ben never.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                login(CARA)
            except smtplib.SMTPAuthenticationError as refused:
                assert refused.smtp_code == 535 and b"5.7.3" in refused.smtp_error
                break
            time.sleep(0.2)
        else:
            pytest.fail("cara's app password was still accepted 30 s after the planned drop")
        assert login("ben@acme-outreach.com") == 235
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_a_bad_drop_setting_is_named(tmp_path):
    process = _start(tmp_path, SANDBOX_DEMO_DROP_AFTER="soon")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "SANDBOX_DEMO_DROP_AFTER has an invalid value: 'soon' is not a number of seconds" in err
