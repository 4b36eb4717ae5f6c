"""Issue 4 (b): connection tests (SMTP STARTTLS + AUTH, IMAP SSL + LOGIN) of 500 mailboxes
against the loopback servers with 100 ms added before every reply, beside the same tests one at a
time in the same process.

One at a time takes ~0.9 s per mailbox here (9 replies), so by default the baseline runs on
100 mailboxes and is scaled to 500 (BENCH_FULL=1 runs all 500: about 8 minutes).
"""

from __future__ import annotations

import math
import os
import time

from django.conf import settings

from fleet.mailbox_checks import check_mailboxes
from fleet.models import Mailbox, Workspace
from sandbox.mailservers import MailServers
from tests.bench.runner import Row

MAILBOXES = 500
DELAY = 0.1
# Replies that each wait DELAY: SMTP greeting, EHLO, STARTTLS, EHLO, AUTH, QUIT; IMAP greeting,
# LOGIN, LOGOUT.
REPLIES_PER_MAILBOX = 9


def run() -> list[Row]:
    sample = MAILBOXES if os.environ.get("BENCH_FULL") else 100
    workspace = Workspace.objects.create(name="Bench checks", slug="bench-checks")
    with MailServers(reply_delay=DELAY) as servers:
        settings.MAIL_TLS_CA_FILE = servers.ca_file
        settings.MAIL_TIMEOUT = 10
        boxes = []
        for i in range(MAILBOXES + sample):
            email = f"box{i}@contoso.com"
            servers.add(email, f"pw-{i}")
            boxes.append(
                Mailbox(
                    workspace=workspace,
                    email=email,
                    auth_method="app_password",
                    password=f"pw-{i}",
                    smtp_host=servers.host,
                    smtp_port=servers.smtp_port,
                    imap_host=servers.host,
                    imap_port=servers.imap_port,
                )
            )
        Mailbox.objects.bulk_create(boxes)
        ids = list(
            Mailbox.objects.filter(workspace=workspace).order_by("pk").values_list("pk", flat=True)
        )
        fleet_ids, baseline_ids = ids[:MAILBOXES], ids[MAILBOXES:]

        started = time.perf_counter()
        outcome = check_mailboxes(fleet_ids)
        fleet_time = time.perf_counter() - started
        assert outcome == {"active": MAILBOXES}, outcome

        started = time.perf_counter()
        outcome = check_mailboxes(baseline_ids, concurrency=1)
        baseline_time = (time.perf_counter() - started) * MAILBOXES / sample
        assert outcome == {"active": sample}, outcome

    concurrency = settings.MAIL_CHECK_CONCURRENCY
    floor = math.ceil(MAILBOXES / concurrency) * REPLIES_PER_MAILBOX * DELAY
    label = "one at a time" + (
        "" if sample == MAILBOXES else f", measured on {sample} x{MAILBOXES // sample}"
    )
    return [
        Row(
            f"(b) connection tests of 500 mailboxes, 100 ms per reply, {concurrency} at a time "
            f"(baseline: {label})",
            "wall time",
            round(fleet_time, 1),
            round(baseline_time, 1),
            floor=round(floor, 1),
            unit="s",
        )
    ]
