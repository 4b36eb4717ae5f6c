"""Serve the Microsoft sandbox on loopback for the demo: HTTPS for discovery, tokens and Graph,
plain http for the sign-in pages a browser opens, and a DNS server with the SPF/DKIM records of
the directory's demo domains (for the bulk add's deliverability checks)."""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from fleet.sandbox.dns import SandboxDNS, Zone
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
        users = ", ".join(sorted(sandbox.directory.users)[:4])
        self.stdout.write(
            f"Microsoft sandbox running:\n"
            f"  MICROSOFT_AUTHORITY_HOST={sandbox.base_url}\n"
            f"  MICROSOFT_GRAPH_URL={sandbox.graph_url}\n"
            f"  MICROSOFT_CA_BUNDLE={sandbox.ca_file}\n"
            f"  sign-in pages: {sandbox.browser_url} (directory users such as {users}; "
            f"password: sandbox)\n"
            f"  switches: POST {sandbox.base_url}/_sandbox/switches\n"
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
            sandbox.stop()
