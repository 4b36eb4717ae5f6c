"""The sandbox's HTTP side: one HTTPS server on loopback (certificates from trustme, CA written to
a file that MICROSOFT_CA_BUNDLE names) and a plain-http listener for the pages a browser opens
(authorize, admin consent), since browsers trust neither our CA nor warn about http on loopback.

Routes are registered with `@route(method, pattern)` by identity.py and graph.py (and later Graph
modules); each handler gets a `Request` and returns a `Response`.
"""

from __future__ import annotations

import json
import logging
import random
import re
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import trustme

from sandbox.directory import Directory

logger = logging.getLogger(__name__)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    body: bytes
    sandbox: Sandbox
    browser: bool  # arrived on the browser-facing http listener

    def json(self) -> dict:
        return json.loads(self.body or b"{}")


@dataclass
class Response:
    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data, status: int = 200, **headers) -> Response:
        return cls(status, data, {"Content-Type": "application/json", **headers})

    @classmethod
    def html(cls, text: str, status: int = 200) -> Response:
        return cls(status, text, {"Content-Type": "text/html; charset=utf-8"})

    @classmethod
    def redirect(cls, location: str) -> Response:
        return cls(302, b"", {"Location": location})

    def encoded(self) -> bytes:
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body).encode()
        return self.body.encode() if isinstance(self.body, str) else self.body


Handler = Callable[[Request], Response]


@dataclass
class Route:
    method: str
    pattern: re.Pattern
    handler: Handler
    api: bool  # subject to the 429 / 5xx switches (token endpoint, Graph), unlike pages
    graph: bool  # a Graph call: also subject to the graph_* switches, Graph-shaped errors


ROUTES: list[Route] = []


def route(method: str, pattern: str, *, api: bool = True, graph: bool = False):
    """Register a handler; `pattern` matches the whole path, named groups become kwargs."""

    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, re.compile(pattern + r"\Z"), handler, api, graph))
        return handler

    return register


@dataclass
class Switches:
    """Failures the sandbox injects. Counts are used up one request at a time."""

    latency: float = 0.0  # seconds added to every HTTP reply (a `$batch` is one reply)
    token_latency: float = 0.0  # seconds added to the token endpoint's replies only
    # Used refresh tokens stay valid, as at Microsoft (strict rotation when off).
    keep_used_refresh_tokens: bool = False
    throttle: int = 0  # next N API requests answer 429 …
    retry_after: int = 2  # … with this Retry-After
    server_errors: int = 0  # next N API requests answer 503
    # Graph only (tokens unaffected); every request inside a `$batch` counts, as Graph throttles
    # them one by one: https://learn.microsoft.com/graph/throttling
    graph_throttle: int = 0  # next N Graph requests answer 429 …
    graph_retry_after: int = 1  # … with this Retry-After (seconds)
    graph_server_errors: int = 0  # then the next N Graph requests answer 503
    # A share (0 to 1) of all Graph requests answered 429 at random, for as long as it is set:
    # a tenant under steady throttling rather than a storm of N.
    graph_throttle_rate: float = 0.0
    deny_consent: bool = False  # every Accept on a consent page acts as Deny
    require_admin_approval: bool = False  # every user consent needs an admin (AADSTS65001)
    revoked: set[str] = field(default_factory=set)  # usernames whose grants were revoked
    # Tenants (ids or domains) whose Exchange refuses app passwords: 550 5.7.30.
    basic_auth_off: set[str] = field(default_factory=set)
    # Seconds an access token lives (Microsoft's are 60-90 minutes; the demo shortens them so
    # that Fleet refreshes, and so notices a revoked grant, within minutes).
    token_lifetime: int = 3600
    # A drop planned ahead (the demo's SANDBOX_DEMO_DROP_AFTER): from `drop_at` (Unix time; 0:
    # never) the users in `drop_passwords` have their app password refused (535 5.7.3, as when
    # the password was changed) and those in `drop_grants` their grant revoked (AADSTS50173).
    # Set with {"drop_after": seconds from now, "drop_passwords": [...], "drop_grants": [...]}.
    drop_at: float = 0.0
    drop_passwords: set[str] = field(default_factory=set)
    drop_grants: set[str] = field(default_factory=set)

    SETS = ("revoked", "basic_auth_off", "drop_passwords", "drop_grants")

    def update(self, data: dict) -> None:
        for key, value in data.items():
            if key in self.SETS:
                setattr(self, key, {v.lower() for v in value})
            elif key == "drop_after":
                self.drop_at = time.time() + float(value)
            elif hasattr(self, key):
                setattr(self, key, type(getattr(self, key))(value))
            else:
                raise ValueError(f"unknown switch {key}")

    def as_dict(self) -> dict:
        return {**self.__dict__, **{name: sorted(getattr(self, name)) for name in self.SETS}}

    @property
    def dropped(self) -> bool:
        return bool(self.drop_at) and time.time() >= self.drop_at

    def grant_revoked(self, username: str) -> bool:
        name = (username or "").lower()
        return name in self.revoked or (self.dropped and name in self.drop_grants)

    def password_refused(self, username: str) -> bool:
        return self.dropped and (username or "").lower() in self.drop_passwords


class Sandbox:
    """The running sandbox: servers, directory, issued codes and tokens, switches."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        browser_port: int | None = 0,
        directory_file: str | Path | None = None,
        cert_dir: str | Path | None = None,
    ):
        from sandbox import graph, identity  # noqa: F401  (register the routes)

        self.host = host
        self.directory_file = directory_file
        self.lock = threading.RLock()
        self.reset()
        self.ca = trustme.CA(organization_name="Fleet Microsoft sandbox")
        cert = self.ca.issue_cert(host, "localhost", "127.0.0.1", "::1")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self._https = self._server(port, context)
        self._http = self._server(browser_port, None) if browser_port is not None else None
        self.cert_dir = Path(cert_dir) if cert_dir else None
        self.ca_file: str | None = None
        if self.cert_dir:
            self.cert_dir.mkdir(parents=True, exist_ok=True)
            self.ca_file = str(self.cert_dir / "ca.pem")
            self.ca.cert_pem.write_to_path(self.ca_file)
        self._threads: list[threading.Thread] = []

    def reset(self) -> None:
        """Forget issued codes and tokens, reload the directory, clear the switches."""
        from sandbox.identity import IdentityState

        with self.lock:
            self.directory = Directory.load(self.directory_file)
            self.switches = Switches()
            self.identity = IdentityState()
            # What reached the sandbox: `http` replies on the HTTPS listener, `graph` Graph
            # requests (those inside a `$batch` included), `batch` $batch envelopes.
            self.counts: Counter = Counter()
            # (time, method, path, status) of recent Graph requests, for tests and curious people.
            self.graph_log: deque = deque(maxlen=20000)
            # (started, ended, inner URLs) of recent `$batch` envelopes, latency included: which
            # stages were in flight together.
            self.batch_log: deque = deque(maxlen=5000)

    def grant_demo_refresh_tokens(self) -> int:
        """Give every directory user the demo's refresh token (sandbox/identity.py,
        DEMO_GRANT_PREFIX), as if they had consented before the sandbox started: the demo's
        connected OAuth mailboxes hold them (seed_demo). Returns how many."""
        from sandbox.identity import DEMO_GRANT_ANY_APP, DEMO_GRANT_PREFIX, DEMO_GRANT_SCOPES

        with self.lock:
            for username in self.directory.users:
                self.identity.put(
                    self.identity.refresh_tokens,
                    DEMO_GRANT_PREFIX + username,
                    {
                        "username": username,
                        "client_id": DEMO_GRANT_ANY_APP,
                        "scopes": DEMO_GRANT_SCOPES,
                    },
                )
            return len(self.directory.users)

    def _server(self, port: int, context: ssl.SSLContext | None) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer((self.host, port), _handler_for(self, browser=context is None))
        server.daemon_threads = True
        if context is not None:
            # The handshake happens in the request's own thread, on its first read.
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        return server

    @property
    def base_url(self) -> str:
        return f"https://{self._display_host}:{self._https.server_address[1]}"

    @property
    def browser_url(self) -> str:
        """Where browsers are sent (http on loopback); the HTTPS base when there is no listener."""
        if self._http is None:
            return self.base_url
        return f"http://{self._display_host}:{self._http.server_address[1]}"

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/v1.0"

    @property
    def _display_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def start(self) -> Sandbox:
        for server in filter(None, (self._https, self._http)):
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._threads.append(thread)
        register(self)
        return self

    def stop(self) -> None:
        unregister(self)
        for server in filter(None, (self._https, self._http)):
            server.shutdown()
            server.server_close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- dispatch ---------------------------------------------------------------------------
    def dispatch(self, request: Request, *, inner: bool = False) -> Response:
        """Answer one request; `inner` for the requests inside a Graph `$batch` (no latency of
        their own: the envelope's reply carries it)."""
        batch = request.path.endswith("/$batch") and not inner
        with self.lock:
            if not request.browser and not inner:
                self.counts["http"] += 1
            if batch:  # how many `$batch` requests are being answered at once (latency included)
                self.counts["batch_in_flight"] += 1
                self.counts["batch_in_flight_max"] = max(
                    self.counts["batch_in_flight_max"], self.counts["batch_in_flight"]
                )
        started = time.monotonic()
        try:
            return self._dispatch(request, inner)
        finally:
            if batch:
                with self.lock:
                    self.counts["batch_in_flight"] -= 1
                    self.batch_log.append((started, time.monotonic(), _inner_urls(request)))

    def _dispatch(self, request: Request, inner: bool) -> Response:
        if self.switches.latency and not inner:
            time.sleep(self.switches.latency)
        for r in ROUTES:
            match = r.pattern.match(request.path)
            if match and r.method == request.method:
                response = self._injected_failure(graph=r.graph) if r.api else None
                if response is None:
                    response = r.handler(request, **match.groupdict())
                if r.graph:
                    with self.lock:
                        self.counts["graph"] += 1
                        self.graph_log.append(
                            (time.monotonic(), request.method, request.path, response.status)
                        )
                return response
        if any(r.pattern.match(request.path) for r in ROUTES):
            return Response.json({"error": "method_not_allowed"}, 405)
        return Response.json({"error": {"code": "NotFound", "message": request.path}}, 404)

    def _injected_failure(self, graph: bool = False) -> Response | None:
        with self.lock:
            if graph and (
                self.switches.graph_throttle > 0
                or random.random() < self.switches.graph_throttle_rate  # noqa: S311
            ):
                self.switches.graph_throttle = max(0, self.switches.graph_throttle - 1)
                return Response.json(
                    {
                        "error": {
                            "code": "TooManyRequests",
                            "message": "Too many requests (sandbox throttling storm).",
                        }
                    },
                    429,
                    **{"Retry-After": str(self.switches.graph_retry_after)},
                )
            if graph and self.switches.graph_server_errors > 0:
                self.switches.graph_server_errors -= 1
                return Response.json(
                    {"error": {"code": "ServiceUnavailable", "message": "Sandbox outage."}}, 503
                )
            if self.switches.throttle > 0:
                self.switches.throttle -= 1
                return Response.json(
                    {
                        "error": "temporarily_unavailable",
                        "error_description": "AADSTS50196: The server is throttling requests.",
                        "error_codes": [50196],
                    },
                    429,
                    **{"Retry-After": str(self.switches.retry_after)},
                )
            if self.switches.server_errors > 0:
                self.switches.server_errors -= 1
                return Response.json(
                    {"error": "server_error", "error_description": "Sandbox outage"}, 503
                )
        return None


def _inner_urls(request: Request) -> tuple[str, ...]:
    try:
        inner = request.json().get("requests") or []
        return tuple(str(r.get("url", "")) for r in inner if isinstance(r, dict))
    except (ValueError, AttributeError):
        return ()


# The sandboxes running in this process, so that the loopback SMTP/IMAP servers can check
# XOAUTH2 tokens (identity.validate_access_token) without a reference to one.
RUNNING: list[Sandbox] = []


def register(sandbox: Sandbox) -> None:
    RUNNING.append(sandbox)


def unregister(sandbox: Sandbox) -> None:
    if sandbox in RUNNING:
        RUNNING.remove(sandbox)


@route("GET", r"/_sandbox/switches", api=False)
def get_switches(request: Request) -> Response:
    return Response.json(request.sandbox.switches.as_dict())


@route("POST", r"/_sandbox/switches", api=False)
def set_switches(request: Request) -> Response:
    """Flip failure switches on a running sandbox, e.g.
    curl -X POST --cacert var/sandbox/ca.pem https://127.0.0.1:8443/_sandbox/switches \
         -d '{"revoked": ["ava@acme-outreach.com"]}'"""
    try:
        with request.sandbox.lock:
            request.sandbox.switches.update(request.json())
    except (ValueError, TypeError) as exc:
        return Response.json({"error": str(exc)}, 400)
    return Response.json(request.sandbox.switches.as_dict())


def _handler_for(sandbox: Sandbox, *, browser: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FleetMicrosoftSandbox/1"
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
        # and the client's delayed ACK add ~40 ms to every reply on loopback.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            form = {}
            if "application/x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
                form = dict(parse_qsl(body.decode(), keep_blank_values=True))
            request = Request(
                method=self.command,
                path=url.path,
                query=dict(parse_qsl(url.query, keep_blank_values=True)),
                form=form,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                sandbox=sandbox,
                browser=browser,
            )
            try:
                response = sandbox.dispatch(request)
            except Exception:
                logger.exception("sandbox handler failed for %s %s", self.command, url.path)
                response = Response.json({"error": "server_error"}, 500)
            payload = response.encoded()
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format, *args):
            logger.debug("sandbox: " + format, *args)

        def handle(self):
            try:
                super().handle()
            except (ssl.SSLError, ConnectionError, OSError) as exc:
                logger.debug("sandbox connection ended: %s", exc)

    return Handler
