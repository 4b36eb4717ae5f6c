"""SMTP and IMAP sign-in checks: the one place Fleet talks to mail servers.

`check_smtp` does what a sending client does on Microsoft's submission port (EHLO, STARTTLS,
EHLO, AUTH) and `check_imap` what a reading client does (SSL, LOGIN or AUTHENTICATE XOAUTH2).
Every step has a timeout (MAIL_TIMEOUT), certificates are verified against MAIL_TLS_CA_FILE (or
the system's CAs), and every failure comes back as one `MailCheckError` carrying a catalogue code,
mapped from reply codes and enhanced status codes, never from the reply's text.

https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/authenticated-client-smtp-submission
https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
"""

from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass
from functools import cache

from django.conf import settings

from fleet import errors

ENHANCED_CODE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Login:
    """Who signs in, with an app password or an OAuth access token (XOAUTH2)."""

    username: str
    password: str = ""
    access_token: str = ""
    # An app-only token (client credentials) rather than the mailbox's own: Exchange's plain
    # authentication failure then means the app's service principal is not granted the mailbox.
    app_only: bool = False

    def __repr__(self) -> str:  # never show the secrets
        return f"Login({self.username!r})"

    def xoauth2(self, _challenge: object = None) -> str:
        """The SASL XOAUTH2 initial response (smtplib and imaplib base64-encode it)."""
        return f"user={self.username}\x01auth=Bearer {self.access_token}\x01\x01"


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    security: str  # "starttls" | "ssl"


class MailCheckError(Exception):
    """A failed check: `error` is the catalogue entry (its `permanent` says whether a retry can
    help), `detail` says which protocol and step failed and what the server answered."""

    def __init__(self, error: errors.ErrorCode, detail: str):
        self.error = error
        self.detail = detail
        super().__init__(f"{error.code}: {detail}")

    @property
    def permanent(self) -> bool:
        return self.error.permanent


@cache
def _tls_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def tls_context() -> ssl.SSLContext:
    return _tls_context(settings.MAIL_TLS_CA_FILE)


def _timeout(timeout: float | None) -> float:
    return settings.MAIL_TIMEOUT if timeout is None else timeout


def smtp_error(code: int, reply: bytes | str) -> errors.ErrorCode:
    """Catalogue code for an SMTP AUTH rejection, from the reply code and enhanced status code."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    m = ENHANCED_CODE.match(text.strip())
    enhanced = ".".join(m.groups()) if m else ""
    if enhanced == "5.7.139":
        return errors.SMTP_AUTH_DISABLED
    if enhanced == "5.7.30":
        return errors.BASIC_AUTH_DISABLED
    if code == 535 or enhanced in ("5.7.3", "5.7.8"):
        return errors.INVALID_CREDENTIALS
    return errors.MAIL_SERVER_ERROR


def app_only_refusal(login: Login) -> errors.ErrorCode | None:
    """An app-only XOAUTH2 sign-in that Exchange refuses: the token was just issued to an app
    holding the role, so what is missing is the mailbox's grant to its service principal."""
    return errors.APP_NOT_GRANTED_ON_MAILBOX if login.app_only else None


def _network_error(protocol: str, step: str, exc: BaseException) -> MailCheckError:
    """Socket and TLS failures, by exception type (the OS's error, not a message)."""
    where = f"{protocol} {step}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MailCheckError(errors.TLS_FAILED, f"{where}: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return MailCheckError(errors.TLS_FAILED, f"{where}: {exc.reason or exc}")
    if isinstance(exc, socket.gaierror):
        return MailCheckError(errors.HOST_NOT_FOUND, f"{where}: {exc.strerror}")
    if isinstance(exc, TimeoutError | socket.timeout):
        return MailCheckError(errors.CONNECTION_TIMEOUT, f"{where}: no answer in time")
    if isinstance(exc, ConnectionRefusedError):
        return MailCheckError(errors.CONNECTION_REFUSED, f"{where}: connection refused")
    return MailCheckError(errors.CONNECTION_FAILED, f"{where}: {type(exc).__name__}: {exc}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _is_ascii(*texts: str) -> bool:
    return all(text.isascii() for text in texts)


def smtp_auth_password(client: smtplib.SMTP, mechanism: str, login: Login) -> tuple[int, bytes]:
    """AUTH PLAIN or LOGIN with the credentials encoded as UTF-8, one attempt.

    smtplib's own `auth()` encodes the SASL response as ASCII and raises UnicodeEncodeError on a
    password like "Pässwörd"; SASL PLAIN is UTF-8 by definition (RFC 4616 §2) and base64 keeps
    the command line ASCII (RFC 4954 §4). LOGIN (a non-standard mechanism) gets the same UTF-8,
    which is what Exchange Online and the common servers expect."""
    user, password = login.username.encode("utf-8"), login.password.encode("utf-8")
    if mechanism == "PLAIN":
        code, reply = client.docmd("AUTH", "PLAIN " + _b64(b"\0" + user + b"\0" + password))
    else:
        code, reply = client.docmd("AUTH", "LOGIN " + _b64(user))
        if code == 334:
            code, reply = client.docmd(_b64(password))
    if code in (235, 503):  # 503: already signed in (as smtplib treats it)
        return code, reply
    raise smtplib.SMTPAuthenticationError(code, reply)


def _imap_quoted(text: str) -> bytes:
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8") + b'"'


def imap_password_command(client: imaplib.IMAP4, login: Login) -> str:
    """LOGIN, or AUTHENTICATE (PLAIN) for non-ASCII credentials when the server offers it."""
    if not _is_ascii(login.username, login.password) and "AUTH=PLAIN" in client.capabilities:
        return "AUTHENTICATE"
    return "LOGIN"


def imap_login_password(client: imaplib.IMAP4, login: Login) -> tuple[str, list]:
    """Sign in with a password (the command `imap_password_command` names); the server's reply.

    ASCII credentials use LOGIN as before. imaplib sends LOGIN's arguments as ASCII only, so
    non-ASCII ones go as AUTHENTICATE PLAIN when the server offers it (RFC 4616: UTF-8, base64
    on the wire; Exchange Online offers AUTH=PLAIN), else as LOGIN with UTF-8 strings, which a
    server advertising UTF8=ACCEPT takes (RFC 6855 §3; ENABLE itself is only valid after
    sign-in, so it cannot carry the credentials) and most others accept in a literal."""
    if _is_ascii(login.username, login.password):
        return client.login(login.username, login.password)
    if imap_password_command(client, login) == "AUTHENTICATE":
        blob = b"\0" + login.username.encode("utf-8") + b"\0" + login.password.encode("utf-8")
        return client.authenticate("PLAIN", lambda _challenge: blob)
    # The password as a literal ({n} then its UTF-8 bytes), so no quoting rule can break it.
    client.literal = login.password.encode("utf-8")
    typ, data = client._simple_command("LOGIN", _imap_quoted(login.username))
    if typ != "OK":
        raise client.error(data[-1])
    client.state = "AUTH"
    return typ, data


def check_smtp(server: Server, login: Login, timeout: float | None = None) -> str:
    """Connect, secure the session and sign in; return the server's success reply."""
    step = "connect"
    try:
        context = tls_context()
        if server.security == "ssl":
            client = smtplib.SMTP_SSL(
                server.host, server.port, timeout=_timeout(timeout), context=context
            )
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=_timeout(timeout))
        with client:
            step = "EHLO"
            client.ehlo()
            if server.security != "ssl":
                if not client.has_extn("starttls"):
                    raise MailCheckError(errors.TLS_FAILED, "SMTP: the server offers no STARTTLS")
                step = "STARTTLS"
                client.starttls(context=context)
                step = "EHLO"
                client.ehlo()
            step = "AUTH"
            mechanisms = client.esmtp_features.get("auth", "").upper().split()
            if login.access_token:
                if "XOAUTH2" not in mechanisms:
                    raise MailCheckError(
                        errors.AUTH_MECHANISM_UNAVAILABLE, "SMTP: the server offers no XOAUTH2"
                    )
                code, reply = client.auth("XOAUTH2", login.xoauth2, initial_response_ok=True)
            else:
                mechanism = next((m for m in ("PLAIN", "LOGIN") if m in mechanisms), None)
                if mechanism is None:
                    raise MailCheckError(
                        errors.AUTH_MECHANISM_UNAVAILABLE,
                        f"SMTP: no AUTH PLAIN or LOGIN (offered: {' '.join(mechanisms) or 'none'})",
                    )
                # One mechanism only: smtplib.login() would retry a rejected password with the
                # next mechanism, and each failure counts towards Microsoft's lock-out.
                code, reply = smtp_auth_password(client, mechanism, login)
            step = "QUIT"
            return f"{code} {reply.decode('utf-8', 'replace')}"
    except MailCheckError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise MailCheckError(
            app_only_refusal(login) or smtp_error(exc.smtp_code, exc.smtp_error),
            f"SMTP AUTH: {exc.smtp_code} {exc.smtp_error.decode('utf-8', 'replace')}",
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise MailCheckError(
            smtp_error(exc.smtp_code, exc.smtp_error),
            f"SMTP {step}: {exc.smtp_code} {exc.smtp_error.decode('utf-8', 'replace')}",
        ) from None
    except smtplib.SMTPServerDisconnected as exc:
        # smtplib reports a read timeout as a disconnection; the timeout is its context.
        if isinstance(exc.__context__, TimeoutError):
            raise _network_error("SMTP", step, exc.__context__) from None
        raise MailCheckError(errors.CONNECTION_FAILED, f"SMTP {step}: {exc}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise _network_error("SMTP", step, exc) from None


def check_imap(server: Server, login: Login, timeout: float | None = None) -> str:
    """Connect over SSL and sign in (LOGIN, or AUTHENTICATE XOAUTH2); return the OK reply."""
    step = "connect"
    try:
        # The timeout stays on the socket for every later read (handshake, greeting, LOGIN).
        client = imaplib.IMAP4_SSL(
            server.host, server.port, ssl_context=tls_context(), timeout=_timeout(timeout)
        )
        try:
            if login.access_token:
                step = "AUTHENTICATE"
                typ, data = client.authenticate("XOAUTH2", login.xoauth2)
            else:
                step = imap_password_command(client, login)
                typ, data = imap_login_password(client, login)
            reply = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
            step = "LOGOUT"
            client.logout()
            return f"{typ} {reply}"
        finally:
            if client.state != "LOGOUT":
                client.shutdown()
    except imaplib.IMAP4.abort as exc:
        raise MailCheckError(errors.CONNECTION_FAILED, f"IMAP {step}: {exc}") from None
    except imaplib.IMAP4.error as exc:
        # A tagged NO to LOGIN/AUTHENTICATE ("NO AUTHENTICATE failed.", "NO LOGIN failed.") is
        # Exchange's only signal for bad credentials and for basic auth turned off alike.
        if step in ("LOGIN", "AUTHENTICATE"):
            raise MailCheckError(
                app_only_refusal(login) or errors.INVALID_CREDENTIALS, f"IMAP {step}: NO {exc}"
            ) from None
        raise MailCheckError(errors.MAIL_SERVER_ERROR, f"IMAP {step}: {exc}") from None
    except OSError as exc:
        raise _network_error("IMAP", step, exc) from None


def check_mailbox_servers(
    smtp: Server, imap: Server, login: Login, timeout: float | None = None
) -> str:
    """Both checks, SMTP first; the first failure raises. Returns a one-line summary."""
    smtp_reply = check_smtp(smtp, login, timeout)
    imap_reply = check_imap(imap, login, timeout)
    return f"SMTP: {smtp_reply.split(chr(10))[0][:120]} · IMAP: {imap_reply[:120]}"
