"""Issue 13: a move off Basic auth of 200 app-password mailboxes of one Microsoft 365 tenant by
app-only XOAUTH2 (the Microsoft sandbox over HTTPS, its SMTP/IMAP servers over TLS on loopback,
50 ms before every mail-server reply and every HTTP reply), beside a naive move in the same run:
one mailbox at a time, asking for a new app token and the domain's tenant for each.

Figures: mailboxes moved per second, and HTTP requests to Microsoft per mailbox (Fleet: one
token per credential and one tenant look-up per domain for the whole run).
"""

from __future__ import annotations

import math
import tempfile
import time
from datetime import date, timedelta

from django.conf import settings

from fleet import move
from fleet.app_only import probe_with
from fleet.microsoft import graph, identity
from fleet.models import Credential, Mailbox, MoveRun, Workspace
from sandbox.exchange import validate_app_token
from sandbox.mailservers import MailServers
from sandbox.server import Sandbox
from tests.bench.runner import Row

MAILBOXES = 200
BASELINE_SAMPLE = 20
DELAY = 0.05
# Replies that each wait DELAY: SMTP greeting, EHLO, STARTTLS, EHLO, AUTH, QUIT; IMAP greeting,
# AUTHENTICATE, LOGOUT.
REPLIES_PER_MAILBOX = 9
ACME = "3f2b8c1e-5a9d-4e7b-9c3a-acme0000a001"
CLIENT_ID = "77777777-2222-4333-8444-555555555555"


def mailboxes(workspace, servers, prefix, count):
    rows = [
        Mailbox(
            workspace=workspace,
            email=f"{prefix}{i}@acme-outreach.com",
            auth_method="app_password",
            status="active",
            password=f"pw-{i}",
            smtp_host=servers.host,
            smtp_port=servers.smtp_port,
            imap_host=servers.host,
            imap_port=servers.imap_port,
        )
        for i in range(count)
    ]
    return Mailbox.objects.bulk_create(rows)


def run() -> list[Row]:
    with tempfile.TemporaryDirectory() as certs, Sandbox(cert_dir=certs) as sandbox:
        settings.MICROSOFT_AUTHORITY_HOST = sandbox.base_url
        settings.MICROSOFT_GRAPH_URL = sandbox.graph_url
        settings.MICROSOFT_CA_BUNDLE = settings.MAIL_TLS_CA_FILE = sandbox.ca_file
        settings.MAIL_TIMEOUT = 10
        directory = sandbox.directory
        app = directory.add_app(CLIENT_ID, "bench-secret", "Fleet move (bench)")
        app.roles = ["User.Read.All", "MailboxSettings.Read", "IMAP.AccessAsApp", "SMTP.SendAsApp"]
        acme = directory.tenant(ACME)
        acme.consented_apps.add(CLIENT_ID)
        acme.exchange_apps.add(CLIENT_ID)
        for i in range(MAILBOXES):
            directory.add_user(f"box{i}@acme-outreach.com")
        for i in range(BASELINE_SAMPLE):
            directory.add_user(f"naive{i}@acme-outreach.com")
        with MailServers(
            reply_delay=DELAY, app_token_validator=validate_app_token, ca=sandbox.ca
        ) as servers:
            workspace = Workspace.objects.create(name="Bench move", slug="bench-move")
            credential = Credential.objects.create(
                workspace=workspace,
                name="Acme Graph",
                kind=Credential.Kind.GRAPH_APP_ONLY,
                tenant_id=ACME,
                tenant_guid=ACME,
                client_id=CLIENT_ID,
                client_secret="bench-secret",
                secret_expires_at=date.today() + timedelta(days=300),
                status=Credential.Status.VALID,
                permissions=dict.fromkeys(app.roles, True),
            )
            naive = mailboxes(workspace, servers, "naive", BASELINE_SAMPLE)
            # The baseline: one at a time, a token and a tenant look-up for every mailbox.
            sandbox.switches.latency = DELAY
            before = sandbox.counts["http"]
            started = time.perf_counter()
            for mailbox in naive:
                graph.forget_token(credential, graph.EXCHANGE)
                identity.tenant_of_domain(mailbox.domain)
                error, _ = probe_with(mailbox, credential)
                assert error is None, error
            baseline_time = (time.perf_counter() - started) * MAILBOXES / BASELINE_SAMPLE
            baseline_http = (sandbox.counts["http"] - before) / BASELINE_SAMPLE
            Mailbox.objects.filter(pk__in=[m.pk for m in naive]).delete()
            graph.forget_token(credential, graph.EXCHANGE)

            mailboxes(workspace, servers, "box", MAILBOXES)
            before = sandbox.counts["http"]
            started = time.perf_counter()
            run = move.execute_move(move.start_move(workspace))
            fleet_time = time.perf_counter() - started
            fleet_http = (sandbox.counts["http"] - before) / MAILBOXES
            assert run.status == MoveRun.Status.FINISHED and run.moved == MAILBOXES, (
                run.moved,
                list(
                    run.items.exclude(state="moved").values_list("error_code", "error_detail")[:3]
                ),
            )
    concurrency = settings.MAIL_CHECK_CONCURRENCY
    floor_time = math.ceil(MAILBOXES / concurrency) * REPLIES_PER_MAILBOX * DELAY
    return [
        Row(
            f"move of {MAILBOXES} app-password mailboxes by app-only XOAUTH2, 50 ms per reply, "
            f"{concurrency} at a time: {MAILBOXES / fleet_time:.1f} mailboxes moved/s, baseline "
            f"{MAILBOXES / baseline_time:.1f}/s (one at a time, token + tenant per mailbox, "
            f"measured on {BASELINE_SAMPLE})",
            "wall time",
            round(fleet_time, 1),
            round(baseline_time, 1),
            floor=round(floor_time, 1),
            unit="s",
        ),
        Row(
            f"move of {MAILBOXES} mailboxes of one tenant: HTTP requests to Microsoft",
            "requests per mailbox",
            round(fleet_http, 3),
            round(baseline_http, 3),
            floor=round(2 / MAILBOXES, 3),  # one token, one tenant look-up
        ),
    ]
