"""Serve the Microsoft sandbox on loopback for the demo: HTTPS for discovery, tokens and Graph,
plain http for the sign-in pages a browser opens, SMTP/IMAP servers for the directory's mailboxes,
and a DNS server with the SPF/DKIM records of the directory's demo domains (the bulk add's
deliverability checks)."""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from fleet.sandbox.dns import SandboxDNS, Zone
from fleet.sandbox.exchange import basic_auth_reply, validate_app_token
from fleet.sandbox.identity import validate_access_token
from fleet.sandbox.mailservers import MailServers
from fleet.sandbox.server import Sandbox


class Command(BaseCommand):
    help = "Run the Microsoft sandbox (identity platform + Graph) on loopback."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=settings.SANDBOX_PORT)
        parser.add_argument("--browser-port", type=int, default=settings.SANDBOX_BROWSER_PORT)
        parser.add_argument("--dns-port", type=int, default=settings.SANDBOX_DNS_PORT)

    def handle(self, *args, **options):
        sandbox = Sandbox(
            host=settings.SANDBOX_HOST,
            port=options["port"],
            browser_port=options["browser_port"],
            directory_file=settings.SANDBOX_DIRECTORY or None,
            cert_dir=settings.SANDBOX_DIR,
        ).start()
        dns = SandboxDNS(
            Zone.from_directory(sandbox.directory),
            host=settings.SANDBOX_HOST,
            port=options["dns_port"],
        ).start()
        # SMTP and IMAP for the demo's mailboxes: XOAUTH2 with the sandbox's tokens, or the
        # sandbox app password for every directory user (so that CSV imports connect too).
        mail = MailServers(
            token_validator=validate_access_token,
            app_token_validator=validate_app_token,
            basic_auth_policy=basic_auth_reply,
            ca=sandbox.ca,
            host=settings.SANDBOX_HOST,
            smtp_port=settings.SANDBOX_SMTP_PORT,
            imap_port=settings.SANDBOX_IMAP_PORT,
        )
        for username in sandbox.directory.users:
            mail.add(username, password=settings.SANDBOX_APP_PASSWORD)
        mail.start()
        users = ", ".join(sorted(sandbox.directory.users)[:4])
        self.stdout.write(
            f"Microsoft sandbox running:\n"
            f"  MICROSOFT_AUTHORITY_HOST={sandbox.base_url}\n"
            f"  MICROSOFT_GRAPH_URL={sandbox.graph_url}\n"
            f"  MICROSOFT_CA_BUNDLE={sandbox.ca_file}\n"
            f"  sign-in pages: {sandbox.browser_url} (directory users such as {users}; "
            f"password: sandbox)\n"
            f"  switches: POST {sandbox.base_url}/_sandbox/switches\n"
            f"  mail servers: SMTP {mail.host}:{mail.smtp_port} (STARTTLS), "
            f"IMAP {mail.host}:{mail.imap_port} (SSL); XOAUTH2 or app password "
            f"{settings.SANDBOX_APP_PASSWORD}\n"
            f"  DNS (SPF/DKIM of {', '.join(sorted(sandbox.directory.dns))}): "
            f"DNS_NAMESERVERS={settings.SANDBOX_HOST} DNS_PORT={dns.port}"
        )
        self.stdout.flush()  # bin/run waits for these lines in the log
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            dns.stop()
            mail.stop()
            sandbox.stop()
