"""Seed 002: a mailbox connected by "Connect new Outlook" stays pending + needs approval until a
manager approves it, even once its connection test passes; the test is recorded all the same."""

import pytest

from fleet import mailboxes
from fleet.mailbox_checks import check_mailboxes
from fleet.models import Mailbox, MailboxEvent
from tests.mail_fixtures import mail, point_at, servers  # noqa: F401


@pytest.mark.django_db
def test_passing_test_of_a_mailbox_awaiting_approval_leaves_it_pending(mail, ws_a, personas):
    mail.add("new@contoso.com", "pw")
    mail.add("known@contoso.com", "pw")
    waiting = point_at(
        Mailbox.objects.create(
            workspace=ws_a,
            email="new@contoso.com",
            auth_method="app_password",
            password="pw",
            needs_approval=True,
        ),
        mail,
    )
    known = point_at(
        Mailbox.objects.create(
            workspace=ws_a, email="known@contoso.com", auth_method="app_password", password="pw"
        ),
        mail,
    )
    assert check_mailboxes([waiting.pk, known.pk]) == {"pending": 1, "active": 1}
    waiting.refresh_from_db()
    assert (waiting.status, waiting.needs_approval, waiting.error_code) == ("pending", True, "")
    assert waiting.last_checked_at is not None
    test = MailboxEvent.objects.get(mailbox=waiting, kind=MailboxEvent.Kind.CONNECTION_TEST)
    assert (test.error_code, test.to_status) == ("", "pending")  # passed, and recorded

    # The manager's approval is what makes it active.
    assert mailboxes.approve(waiting, actor=personas["bob"], via=mailboxes.ADMIN)
    waiting.refresh_from_db()
    assert (waiting.status, waiting.needs_approval) == ("active", False)
    assert check_mailboxes([waiting.pk]) == {"active": 1}
