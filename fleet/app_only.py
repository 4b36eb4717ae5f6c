"""App-only SMTP and IMAP (OAuth 2.0 client credentials), the way off Basic auth for Microsoft 365
mailboxes whose tenant has a Graph app-only credential:

the app holds the *Office 365 Exchange Online* application permissions `SMTP.SendAsApp` and
`IMAP.AccessAsApp` with admin consent, its service principal is granted the mailboxes in Exchange
(`New-ServicePrincipal` + `Add-MailboxPermission`, or RBAC for Applications), and Fleet signs in
with SASL XOAUTH2, `user=<mailbox>`, and a token for `https://outlook.office365.com/.default`.
https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth

`app_only_probe(mailbox)` is the connection test of a Graph app-only mailbox whose credential
holds the Exchange roles (mailbox_checks picks it per auth method); `probe_with(mailbox,
credential)` tests a mailbox that is still on its app password (the move). No database writes.
"""

from __future__ import annotations

import logging

from fleet import errors, mailproto
from fleet.errors import ErrorCode, FleetError
from fleet.microsoft import graph
from fleet.models import Credential, Mailbox

log = logging.getLogger(__name__)


def exchange_token(credential: Credential) -> str:
    """The app's Exchange Online token: one per credential, cached and renewed single-flight
    (fleet.microsoft.graph)."""
    return graph.app_token(credential, graph.EXCHANGE)


def servers_of(mailbox: Mailbox) -> tuple[mailproto.Server, mailproto.Server]:
    return (
        mailproto.Server(mailbox.smtp_host, mailbox.smtp_port, mailbox.smtp_security),
        mailproto.Server(mailbox.imap_host, mailbox.imap_port, mailbox.imap_security),
    )


def probe_with(mailbox: Mailbox, credential: Credential) -> tuple[ErrorCode | None, str]:
    """Sign in to the mailbox over SMTP (STARTTLS + AUTH XOAUTH2) and IMAP (AUTHENTICATE
    XOAUTH2) with the credential's app token: (None, summary) or (code, what failed)."""
    try:
        token = exchange_token(credential)
    except FleetError as failure:
        return failure.error, failure.message
    smtp, imap = servers_of(mailbox)
    login = mailproto.Login(mailbox.email, access_token=token, app_only=True)
    try:
        return None, "App-only XOAUTH2 · " + mailproto.check_mailbox_servers(smtp, imap, login)
    except mailproto.MailCheckError as exc:
        return exc.error, exc.detail
    except Exception as exc:  # a bug must not lose the other mailboxes' results
        log.exception("app-only test of mailbox %s crashed", mailbox.pk)
        return errors.CONNECTION_FAILED, f"Unexpected {type(exc).__name__} during the test"


def app_only_probe(mailbox: Mailbox) -> tuple[ErrorCode | None, str]:
    """The connection test of a Graph app-only mailbox by app-only XOAUTH2 with its credential
    (call it when `mailbox.credential.has_exchange_roles`; else the Graph check applies)."""
    if mailbox.credential is None:
        return errors.INVALID_CREDENTIAL_ID, "The mailbox has no Graph app-only credential"
    return probe_with(mailbox, mailbox.credential)


def uses_app_only_mail(mailbox: Mailbox) -> bool:
    """Whether the connection test of this mailbox is app-only XOAUTH2 (else Graph only)."""
    return (
        mailbox.auth_method == Mailbox.AuthMethod.GRAPH_APP_ONLY
        and mailbox.credential is not None
        and mailbox.credential.has_exchange_roles
    )
