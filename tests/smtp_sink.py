"""A real SMTP server on loopback (aiosmtpd, an ephemeral port) that keeps what it receives: the
other end of Fleet's e-mails (Django's SMTP backend) in tests. It can refuse every message with a
scripted reply, to show what Fleet does when the mail server fails."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP


@dataclass
class Message:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def parsed(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)

    @property
    def subject(self) -> str:
        return str(self.parsed["Subject"])

    def body(self, subtype: str = "plain") -> str:
        return self.parsed.get_body(preferencelist=(subtype,)).get_content()


@dataclass
class SmtpSink:
    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Message] = field(default_factory=list)
    refuse_with: str | None = None  # e.g. "451 4.3.0 Try again later": every DATA refused
    # Seconds to hold back the answer to the first message (kept already): a sender that dies
    # while it waits has had its e-mail delivered without knowing it.
    stall_first: float = 0.0

    def start(self) -> SmtpSink:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(ready.set)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="smtp-sink", daemon=True)
        self._thread.start()
        ready.wait()

        async def listen():
            return await self._loop.create_server(
                lambda: SMTP(self, hostname="sink.localhost"), self.host, 0
            )

        self._server = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.refuse_with:
            return self.refuse_with
        self.messages.append(Message(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        if self.stall_first and len(self.messages) == 1:
            await asyncio.sleep(self.stall_first)
        return "250 OK"

    def stop(self) -> None:
        async def close():
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
