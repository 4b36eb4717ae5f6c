"""Loopback SMTP and IMAP servers that answer like Exchange Online, for tests, benchmarks and the
sandbox demo. Real sockets, real TLS (certificates from a `trustme` CA of their own), and a script
per account to reproduce Microsoft's failures:

- SMTP on submission: STARTTLS, then AUTH PLAIN / LOGIN / XOAUTH2 (aiosmtpd).
- IMAP over SSL: LOGIN and AUTHENTICATE PLAIN / XOAUTH2 (a small asyncio server of our own: the
  few commands a connection test and a sign-in need).

XOAUTH2 is checked by a pluggable `token_validator(username, access_token) -> bool`
(https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth).
Every server binds an ephemeral port (port 0) on 127.0.0.1 unless told otherwise.

    with MailServers(reply_delay=0.1) as servers:
        servers.add("ann@contoso.com", "app-pass")
        servers.add("bob@contoso.com", "x", smtp_reply=SMTP_AUTH_DISABLED)
        # servers.smtp_port, servers.imap_port, servers.ca_file
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import re
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

# Replies as Exchange Online sends them (the codes are what clients map; texts are for people).
SMTP_AUTH_DISABLED = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
    "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."
)
SMTP_SECURITY_DEFAULTS = (
    "535 5.7.139 Authentication unsuccessful, user is locked by your organization's security "
    "defaults policy. Contact your administrator."
)
SMTP_BASIC_AUTH_UNSUPPORTED = (
    "550 5.7.30 Basic authentication is not supported for Client Submission."
)
SMTP_BAD_CREDENTIALS = "535 5.7.3 Authentication unsuccessful"
IMAP_AUTHENTICATE_FAILED = "NO AUTHENTICATE failed."
IMAP_LOGIN_FAILED = "NO LOGIN failed."

TokenValidator = Callable[[str, str], bool]
# (username, access token, "smtp" | "imap") → bool: app-only XOAUTH2, tried after TokenValidator.
AppTokenValidator = Callable[[str, str, str], bool]
# (username, "smtp" | "imap") → the reply to an app-password sign-in, or None to check it.
BasicAuthPolicy = Callable[[str, str], "str | None"]


@dataclass
class Account:
    """One mailbox and its script. `smtp_reply` / `imap_reply` replace the answer to AUTH/LOGIN
    whatever the credentials (an IMAP reply is sent after the command's tag); `stall` holds that
    answer back for so many seconds (to make clients time out)."""

    password: str | None = None
    smtp_reply: str | None = None
    imap_reply: str | None = None
    stall: float = 0.0


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None


def parse_xoauth2(blob: bytes) -> tuple[str, str] | None:
    """`user=<name>^Aauth=Bearer <token>^A^A` → (name, token), or None when malformed."""
    try:
        parts = dict(p.split("=", 1) for p in blob.decode("utf-8").split("\x01") if p and "=" in p)
    except UnicodeDecodeError:
        return None
    user, auth = parts.get("user", ""), parts.get("auth", "")
    if not user or not auth.startswith("Bearer "):
        return None
    return user, auth[len("Bearer ") :]


def refused_port(host: str = "127.0.0.1") -> int:
    """A port on which nothing listens, so that connecting to it is refused."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class MailServers:
    accounts: dict[str, Account] = field(default_factory=dict)
    token_validator: TokenValidator | None = None
    app_token_validator: AppTokenValidator | None = None
    basic_auth_policy: BasicAuthPolicy | None = None
    reply_delay: float = 0.0  # seconds added before every (final) reply line
    host: str = "127.0.0.1"
    smtp_port: int = 0
    imap_port: int = 0
    received: list[Received] = field(default_factory=list)
    # Successful sign-ins as (protocol, mechanism or command, user name), oldest first.
    sign_ins: list[tuple[str, str, str]] = field(default_factory=list)
    # Server variants for clients' fallbacks: IMAP without AUTH=PLAIN (it then advertises
    # UTF8=ACCEPT, RFC 6855, and takes UTF-8 in LOGIN), SMTP without some AUTH mechanisms.
    imap_auth_plain: bool = True
    smtp_exclude_auth: tuple[str, ...] = ()
    # The CA that signs the servers' certificate: their own by default, or the Microsoft
    # sandbox's, so that one CA file (MICROSOFT_CA_BUNDLE = MAIL_TLS_CA_FILE) covers the demo.
    ca: trustme.CA | None = None

    def __post_init__(self) -> None:
        self.accounts = {k.lower(): v for k, v in self.accounts.items()}
        self.ca = self.ca or trustme.CA()
        self._tmp = Path(tempfile.mkdtemp(prefix="fleet-mail-"))
        self.ca_file = str(self._tmp / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(self.host, "localhost").configure_cert(self._tls)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.base_events.Server] = []

    # --- accounts ------------------------------------------------------------------------------
    def add(self, username: str, password: str | None = None, **script) -> Account:
        account = Account(password=password, **script)
        self.accounts[username.lower()] = account
        return account

    def account(self, username: str) -> Account | None:
        return self.accounts.get(username.lower())

    def check_password(self, username: str, password: str) -> bool:
        account = self.account(username)
        return bool(account and account.password is not None and account.password == password)

    def check_token(self, username: str, token: str, protocol: str = "smtp") -> bool:
        if self.token_validator and self.token_validator(username, token):
            return True
        return bool(
            self.app_token_validator and self.app_token_validator(username, token, protocol)
        )

    def basic_auth_reply(self, username: str, protocol: str) -> str | None:
        """A scripted refusal of app passwords (Basic auth turned off), or None."""
        return self.basic_auth_policy(username, protocol) if self.basic_auth_policy else None

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> MailServers:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(ready.set)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fleet-mailservers", daemon=True)
        self._thread.start()
        ready.wait()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    async def _listen(self) -> None:
        smtp = await self._loop.create_server(
            lambda: _SMTPSession(self), self.host, self.smtp_port or 0
        )
        imap = await asyncio.start_server(
            lambda r, w: _IMAPSession(self, r, w).run(),
            self.host,
            self.imap_port or 0,
            ssl=self._tls,
            ssl_handshake_timeout=10,
        )
        self._servers = [smtp, imap]
        self.smtp_port = smtp.sockets[0].getsockname()[1]
        self.imap_port = imap.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            for server in self._servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> MailServers:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _SMTPHandler:
    """aiosmtpd handler: the XOAUTH2 mechanism and the messages sent after sign-in."""

    def __init__(self, servers: MailServers):
        self.servers = servers

    async def auth_XOAUTH2(self, server: _SMTPSession, args: list[str]) -> AuthResult:
        if len(args) > 1:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            blob = await server.challenge_auth("", encode_to_b64=False)
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        parsed = parse_xoauth2(blob)
        if parsed is None:
            return AuthResult(success=False, handled=False, message=SMTP_BAD_CREDENTIALS)
        user, token = parsed
        scripted = server.scripted_reply(user)
        if scripted:
            return AuthResult(success=False, handled=False, message=scripted)
        if self.servers.check_token(user, token, "smtp"):
            return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))
        return AuthResult(success=False, handled=False, message=SMTP_BAD_CREDENTIALS)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.servers.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.content,
                session.login_data.decode() if session.login_data else None,
            )
        )
        return "250 2.0.0 OK Queued"


class _SMTPSession(SMTP):
    # `AUTH XOAUTH2 <base64>` carries a whole access token (2-4 KB from Microsoft's identity
    # platform) on one line; aiosmtpd's RFC 5321 default of 512 would refuse it as Exchange does not.
    line_length_limit = 16384

    def __init__(self, servers: MailServers):
        self.servers = servers
        self._stall = 0.0
        super().__init__(
            _SMTPHandler(servers),
            hostname="fleet-sandbox.localhost",
            ident="Microsoft ESMTP MAIL Service ready (Fleet sandbox)",
            tls_context=servers._tls,
            require_starttls=True,
            auth_require_tls=True,
            auth_required=True,
            authenticator=self._authenticate_password,
            auth_exclude_mechanism=list(servers.smtp_exclude_auth),
        )
        # aiosmtpd's per-command limits are a class-level dict defaulting to 512: ours, per session.
        self.command_size_limits = collections.defaultdict(lambda: self.line_length_limit)

    def scripted_reply(self, username: str) -> str | None:
        account = self.servers.account(username)
        if account is None:
            return None
        self._stall = account.stall
        return account.smtp_reply

    def _authenticate_password(self, server, session, envelope, mechanism, auth_data):
        username = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        scripted = self.scripted_reply(username) or self.servers.basic_auth_reply(username, "smtp")
        if scripted:
            return AuthResult(success=False, handled=False, message=scripted)
        if self.servers.check_password(username, password):
            self.servers.sign_ins.append(("smtp", mechanism, username))
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False, message=SMTP_BAD_CREDENTIALS)

    async def push(self, status) -> None:
        # The delay goes on final reply lines only ("250 ", not "250-"): one per reply.
        line = status if isinstance(status, bytes) else status.encode()
        if line[3:4] != b"-":
            delay, self._stall = self.servers.reply_delay + self._stall, 0.0
            if delay:
                await asyncio.sleep(delay)
        await super().push(status)


_IMAP_TOKEN = re.compile(rb'\s*(?:"((?:[^"\\]|\\.)*)"|\{(\d+)\+?\}$|([^\s"]+))')


class _IMAPSession:
    """One IMAP connection: CAPABILITY, NOOP, ID, LOGIN, AUTHENTICATE PLAIN/XOAUTH2, SELECT,
    EXAMINE, LOGOUT. Enough for sign-in checks; everything else answers BAD."""

    CAPABILITIES = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"
    WITHOUT_AUTH_PLAIN = CAPABILITIES.replace("AUTH=PLAIN ", "") + " ENABLE UTF8=ACCEPT"

    def __init__(self, servers: MailServers, reader, writer):
        self.servers, self.reader, self.writer = servers, reader, writer
        self.user: str | None = None

    async def send(self, *lines: str, stall: float = 0.0) -> None:
        delay = self.servers.reply_delay + stall
        if delay:
            await asyncio.sleep(delay)
        self.writer.write(b"".join(line.encode() + b"\r\n" for line in lines))
        await self.writer.drain()

    async def read_command(self) -> list[bytes] | None:
        """A command's tokens; literals ({n}) are read and continued per RFC 3501 §4.3."""
        tokens: list[bytes] = []
        line = await self.reader.readline()
        if not line:
            return None
        while True:
            rest = line.rstrip(b"\r\n")
            literal = None
            pos = 0
            while pos < len(rest):
                m = _IMAP_TOKEN.match(rest, pos)
                if not m or m.end() == pos:
                    break
                pos = m.end()
                if m.group(1) is not None:
                    tokens.append(re.sub(rb"\\(.)", rb"\1", m.group(1)))
                elif m.group(2) is not None:
                    literal = int(m.group(2))
                elif m.group(3) is not None:
                    tokens.append(m.group(3))
            if literal is None:
                return tokens
            if literal > 65536:
                return tokens
            if not rest.endswith(b"+}"):
                await self.send("+ Ready for additional command text.")
            tokens.append(await self.reader.readexactly(literal))
            line = await self.reader.readline()

    async def run(self) -> None:
        try:
            await self.send("* OK The Microsoft Exchange IMAP4 service is ready. (Fleet sandbox)")
            while True:
                tokens = await asyncio.wait_for(self.read_command(), timeout=300)
                if tokens is None:
                    break
                if len(tokens) < 2:
                    await self.send("* BAD Command Error. 10")
                    continue
                tag = tokens[0].decode("ascii", "replace")
                command = tokens[1].decode("ascii", "replace").upper()
                args = [t.decode("utf-8", "replace") for t in tokens[2:]]
                if not await self.dispatch(tag, command, args):
                    break
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # the servers are stopping
        finally:
            self.writer.close()

    async def dispatch(self, tag: str, command: str, args: list[str]) -> bool:
        capabilities = (
            self.CAPABILITIES if self.servers.imap_auth_plain else self.WITHOUT_AUTH_PLAIN
        )
        if command == "CAPABILITY":
            await self.send(f"* CAPABILITY {capabilities}", f"{tag} OK CAPABILITY completed.")
        elif command == "NOOP":
            await self.send(f"{tag} OK NOOP completed.")
        elif command == "ID":
            await self.send('* ID ("name" "Fleet sandbox")', f"{tag} OK ID completed.")
        elif command == "LOGOUT":
            await self.send(
                "* BYE Microsoft Exchange Server IMAP4 server signing off.",
                f"{tag} OK LOGOUT completed.",
            )
            return False
        elif command == "LOGIN" and len(args) == 2:
            await self.login(tag, args[0], args[1])
        elif command == "AUTHENTICATE" and args:
            await self.authenticate(tag, args[0].upper(), args[1] if len(args) > 1 else None)
        elif command in ("SELECT", "EXAMINE") and self.user:
            await self.send(
                "* 0 EXISTS",
                "* 0 RECENT",
                "* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)",
                f"{tag} OK [READ-WRITE] {command} completed.",
            )
        else:
            await self.send(f"{tag} BAD Command Argument Error. 11")
        return True

    async def login(self, tag: str, username: str, password: str) -> None:
        account = self.servers.account(username)
        stall = account.stall if account else 0.0
        refusal = (account and account.imap_reply) or self.servers.basic_auth_reply(
            username, "imap"
        )
        if refusal:
            await self.send(f"{tag} {refusal}", stall=stall)
        elif self.servers.check_password(username, password):
            self.user = username
            self.servers.sign_ins.append(("imap", "LOGIN", username))
            await self.send(f"{tag} OK LOGIN completed.", stall=stall)
        else:
            await self.send(f"{tag} {IMAP_LOGIN_FAILED}", stall=stall)

    async def authenticate(self, tag: str, mechanism: str, initial: str | None) -> None:
        offered = ("PLAIN", "XOAUTH2") if self.servers.imap_auth_plain else ("XOAUTH2",)
        if mechanism not in offered:
            await self.send(f"{tag} NO The specified authentication mechanism is not supported.")
            return
        if initial is None:
            await self.send("+ ")
            initial = (await self.reader.readline()).strip().decode("ascii", "replace")
        if initial == "*":
            await self.send(f"{tag} BAD AUTHENTICATE cancelled.")
            return
        try:
            blob = base64.b64decode(initial, validate=True)
        except (binascii.Error, ValueError):
            await self.send(f"{tag} BAD Invalid base64.")
            return
        if mechanism == "PLAIN":
            parts = blob.split(b"\x00")
            if len(parts) != 3:
                await self.send(f"{tag} {IMAP_AUTHENTICATE_FAILED}")
                return
            username, secret = (
                parts[1].decode("utf-8", "replace"),
                parts[2].decode("utf-8", "replace"),
            )
            check = self.servers.check_password
        else:
            parsed = parse_xoauth2(blob)
            if parsed is None:
                await self.send(f"{tag} {IMAP_AUTHENTICATE_FAILED}")
                return
            username, secret = parsed

            def check(user: str, token: str) -> bool:
                return self.servers.check_token(user, token, "imap")

        account = self.servers.account(username)
        stall = account.stall if account else 0.0
        refusal = account and account.imap_reply
        if not refusal and mechanism == "PLAIN":
            refusal = self.servers.basic_auth_reply(username, "imap")
        if refusal:
            await self.send(f"{tag} {refusal}", stall=stall)
        elif check(username, secret):
            self.user = username
            self.servers.sign_ins.append(("imap", mechanism, username))
            await self.send(f"{tag} OK AUTHENTICATE completed.", stall=stall)
        else:
            await self.send(f"{tag} {IMAP_AUTHENTICATE_FAILED}", stall=stall)
