"""Serve the Microsoft sandbox on loopback for the demo: HTTPS for discovery, tokens and Graph,
plain http for the sign-in pages a browser opens, SMTP/IMAP servers for the directory's mailboxes,
and a DNS server with the SPF/DKIM records of the directory's demo domains (the bulk add's
deliverability checks). Its settings are the SANDBOX_* variables (sandbox/settings.py)."""

import signal
import threading

from django.core.management.base import BaseCommand, CommandError


def _given(value: int | None, default: int) -> int:
    return default if value is None else value  # 0 is a port too: an ephemeral one


class Command(BaseCommand):
    help = "Run the Microsoft sandbox (identity platform + Graph, SMTP/IMAP, DNS) on loopback."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, help="HTTPS port (default: SANDBOX_PORT, 8443)")
        parser.add_argument(
            "--browser-port", type=int, help="sign-in pages (default: SANDBOX_BROWSER_PORT, 8444)"
        )
        parser.add_argument("--dns-port", type=int, help="DNS (default: SANDBOX_DNS_PORT, 8553)")

    def handle(self, *args, **options):
        try:
            from sandbox import settings as conf
            from sandbox.dns import SandboxDNS, Zone
            from sandbox.exchange import basic_auth_reply, validate_app_token
            from sandbox.identity import validate_access_token
            from sandbox.mailservers import MailServers
            from sandbox.server import Sandbox
        except ValueError as exc:  # a SANDBOX_* variable that does not parse
            raise CommandError(str(exc)) from None
        except ImportError as exc:  # aiosmtpd, trustme or dnslib: the `demo` extra
            raise CommandError(
                f"{exc}. The sandbox needs the demo extra: pip install -e '.[demo]'"
            ) from None

        sandbox = Sandbox(
            host=conf.HOST,
            port=_given(options["port"], conf.PORT),
            browser_port=_given(options["browser_port"], conf.BROWSER_PORT),
            directory_file=conf.DIRECTORY or None,
            cert_dir=conf.DIR,
        ).start()
        dns = SandboxDNS(
            Zone.from_directory(sandbox.directory),
            host=conf.HOST,
            port=_given(options["dns_port"], conf.DNS_PORT),
        ).start()
        # SMTP and IMAP for the demo's mailboxes: XOAUTH2 with the sandbox's tokens, or the
        # sandbox app password for every directory user (so that CSV imports connect too).
        mail = MailServers(
            token_validator=validate_access_token,
            app_token_validator=validate_app_token,
            basic_auth_policy=basic_auth_reply,
            ca=sandbox.ca,
            host=conf.HOST,
            smtp_port=conf.SMTP_PORT,
            imap_port=conf.IMAP_PORT,
        )
        for username in sandbox.directory.users:
            mail.add(username, password=conf.APP_PASSWORD)
        mail.start()
        # The grants the demo's connected OAuth mailboxes hold (seed_demo stores them).
        sandbox.grant_demo_refresh_tokens()
        sandbox.switches.update({"token_lifetime": conf.TOKEN_LIFETIME})
        drop = ""
        if conf.DEMO_DROP_AFTER:
            sandbox.switches.update(
                {
                    "drop_after": conf.DEMO_DROP_AFTER,
                    "drop_passwords": [conf.DEMO_DROP_PASSWORD],
                    "drop_grants": [conf.DEMO_DROP_GRANT],
                }
            )
            drop = (
                f"\n  demo drop in {conf.DEMO_DROP_AFTER} s: {conf.DEMO_DROP_PASSWORD}'s app "
                f"password refused (535 5.7.3), {conf.DEMO_DROP_GRANT}'s grant revoked "
                f"(AADSTS50173)"
            )
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
            f"{conf.APP_PASSWORD}\n"
            f"  DNS (SPF/DKIM of {', '.join(sorted(sandbox.directory.dns))}): "
            f"DNS_NAMESERVERS={conf.HOST} DNS_PORT={dns.port}{drop}"
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
