"""OAuth mailboxes over SMTP and IMAP: after consent through the Microsoft sandbox, the connection
test signs in with XOAUTH2 on real loopback mail servers that accept only the sandbox's tokens."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from fleet import consent, mailbox_checks
from fleet.models import Mailbox, MailboxEvent
from tests.browser import local_path, press
from tests.mail_fixtures import point_at


@pytest.fixture
def connected(sandbox, oauth_app, sandbox_mail, ws_a, client, django_capture_on_commit_callbacks):
    """ava, connected by consent through the sandbox, her servers pointing at the sandbox's."""
    ava = Mailbox.objects.create(workspace=ws_a, email="ava@acme-outreach.com", auth_method="oauth")
    point_at(ava, sandbox_mail)
    request = consent.initiate(ws_a, mailbox_uid=ava.uid)
    authorize = client.get(f"/connect/{request.uid}/")["Location"]
    with django_capture_on_commit_callbacks(execute=True):
        page = client.get(local_path(press(authorize, "ava@acme-outreach.com")))
    assert page.status_code == 200
    ava.refresh_from_db()
    return ava


def test_consent_queues_the_xoauth2_test_and_it_passes(connected, sandbox_mail):
    assert DBTaskResult.objects.filter(task_path="fleet.tasks.test_due_mailboxes").exists()
    assert connected.check_due_at is not None and connected.check_requested_by is None

    outcome = mailbox_checks.check_mailboxes([connected.pk])  # what the task runs
    connected.refresh_from_db()
    assert dict(outcome) == {"active": 1}, (connected.error_code, connected.error_message)
    assert connected.status == "active" and connected.last_checked_at
    test = MailboxEvent.objects.get(mailbox=connected, kind="connection_test")
    assert test.to_status == "active" and test.error_code == ""
    assert sandbox_mail.account("ava@acme-outreach.com") is None  # no password: XOAUTH2 only


def test_a_revoked_grant_fails_the_test_then_needs_reauth(connected, sandbox):
    sandbox.switches.revoked = {"ava@acme-outreach.com"}
    # The access token is still fresh: the servers refuse it (Microsoft revokes sessions too).
    mailbox_checks.check_mailboxes([connected.pk])
    connected.refresh_from_db()
    assert connected.status == "error" and connected.error_code == "INVALID_CREDENTIALS"

    # Once it expires, the refresh is refused: reauth_required, and no sign-in is attempted.
    Mailbox.objects.filter(pk=connected.pk).update(
        token_expires_at=timezone.now() - timedelta(minutes=1)
    )
    outcome = mailbox_checks.check_mailboxes([connected.pk])
    connected.refresh_from_db()
    assert dict(outcome) == {"reauth_required": 1}
    assert connected.status == "reauth_required" and connected.error_code == "REAUTH_REQUIRED"
    assert MailboxEvent.objects.filter(mailbox=connected, kind="connection_test").count() == 1


def test_an_expiring_token_is_refreshed_before_the_test(connected):
    old_refresh = str(connected.refresh_token)
    Mailbox.objects.filter(pk=connected.pk).update(
        token_expires_at=timezone.now() + timedelta(seconds=30)
    )
    mailbox_checks.check_mailboxes([connected.pk])
    connected.refresh_from_db()
    assert connected.status == "active"
    assert str(connected.refresh_token) != old_refresh  # the rotated refresh token was saved
    assert connected.token_expires_at > timezone.now() + timedelta(minutes=5)
