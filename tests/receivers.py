"""A real HTTP server on loopback that records what it receives and answers as scripted."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes


@dataclass
class Receiver:
    """Answers each request with the next scripted status (the last one repeats), after the
    next scripted delay in seconds (a receiver that stalls; the last one repeats)."""

    statuses: list[int] = field(default_factory=lambda: [200])
    delays: list[float] = field(default_factory=lambda: [0.0])
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    # HTTPS: a server-side TLS context, and the name its certificate is for (the URL uses it).
    tls: ssl.SSLContext | None = None
    name: str = ""
    location: str = "http://127.0.0.1:9/elsewhere"  # where a 3xx answer points

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.name or host}:{port}/hook"

    def start(self, port: int = 0) -> Receiver:
        """Listen on `port` (0: any free one; the same port again: the receiver is back up)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                receiver.requests.append(Received(self.path, dict(self.headers), body))
                count = len(receiver.requests)
                status = receiver.statuses[min(count, len(receiver.statuses)) - 1]
                delay = receiver.delays[min(count, len(receiver.delays)) - 1]
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a sender that died while we stalled: its socket is gone

        self.server = Server(("127.0.0.1", port), Handler)
        if self.tls:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
