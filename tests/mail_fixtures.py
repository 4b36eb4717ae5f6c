"""Real SMTP and IMAP servers on loopback (sandbox/mailservers.py) for the tests, and the
client set to trust their test CA. Import the fixtures into a test module to use them."""

import pytest

from fleet.models import Mailbox
from sandbox.mailservers import MailServers


@pytest.fixture(scope="module")
def servers():
    with MailServers(token_validator=lambda user, token: token == f"token-for-{user}") as s:
        yield s


@pytest.fixture
def mail(servers, settings, monkeypatch):
    """The servers, with a clean directory and the client trusting their CA (in this process
    and in worker processes started by the test)."""
    servers.accounts.clear()
    servers.reply_delay = 0.0
    settings.MAIL_TLS_CA_FILE = servers.ca_file
    settings.MAIL_TIMEOUT = 2.0
    monkeypatch.setenv("MAIL_TLS_CA_FILE", servers.ca_file)
    monkeypatch.setenv("MAIL_TIMEOUT", "2")
    return servers


def point_at(mailbox: Mailbox, servers: MailServers, **extra) -> Mailbox:
    """Direct a mailbox at the loopback servers (hosts stay editable per mailbox)."""
    Mailbox.objects.filter(pk=mailbox.pk).update(
        smtp_host=servers.host,
        smtp_port=servers.smtp_port,
        imap_host=servers.host,
        imap_port=servers.imap_port,
        **extra,
    )
    mailbox.refresh_from_db()
    return mailbox
