"""The dashboard's deliverability per domain (SPF, DKIM, DMARC, MX), scoped to the user's
workspaces, each domain linking to its mailboxes (the list's `domain` filter)."""

import re

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from fleet import dashboard
from fleet.models import Mailbox

ALL_OK = {"spf_correct": True, "dkim_correct": True, "dmarc_correct": True, "mx_correct": True}


def add(ws, email, provider="microsoft365", **checks):
    return Mailbox.objects.create(
        workspace=ws, email=email, auth_method="graph_app_only", provider=provider, **checks
    )


def fleet(ws_a, ws_b):
    for name in ("ava", "ben", "cara"):
        add(ws_a, f"{name}@acme-outreach.com", dmarc_policy="reject", **ALL_OK)
    for name in ("lena", "max"):
        add(
            ws_a,
            f"{name}@globex-sales.com",
            spf_correct=True,
            dkim_correct=False,
            dmarc_correct=False,
            mx_correct=False,
        )
    add(ws_a, "new@fresh.example")  # never checked
    add(ws_a, "hal@outlook.com", provider="outlook_com", spf_correct=False)  # Microsoft's DNS
    add(ws_b, "bo@beta-only.example", spf_correct=False)  # another workspace's domain


def states(html: str) -> dict[str, dict[str, str]]:
    found = {}
    for domain, row in re.findall(r'<tr data-domain="([^"]+)">(.*?)</tr>', html, re.S):
        found[domain] = dict(re.findall(r'data-check="(\w+)" data-state="(\w+)"', row))
    return found


def test_domains_with_their_checks_problems_first(ws_a, ws_b, personas, client_for):
    fleet(ws_a, ws_b)
    page = client_for(personas["alice"]).get(reverse("admin:index"))
    html = page.content.decode()
    shown = states(html)
    assert list(shown) == ["globex-sales.com", "acme-outreach.com", "fresh.example"]
    assert shown["globex-sales.com"] == {
        "SPF": "ok",
        "DKIM": "missing",
        "DMARC": "missing",
        "MX": "missing",
    }
    assert shown["acme-outreach.com"] == dict.fromkeys(("SPF", "DKIM", "DMARC", "MX"), "ok")
    assert shown["fresh.example"] == dict.fromkeys(("SPF", "DKIM", "DMARC", "MX"), "unknown")
    assert "p=reject" in html
    board = page.context["board"]
    assert board.domain_count == 3
    assert [d.mailboxes for d in board.domains] == [2, 3, 1]


def test_a_domain_links_to_its_mailboxes(ws_a, ws_b, personas, client_for):
    fleet(ws_a, ws_b)
    client = client_for(personas["bob"])  # manager of A, viewer of B
    board = dashboard.build(personas["bob"])
    assert {d.domain for d in board.domains} == {
        "globex-sales.com",
        "acme-outreach.com",
        "fresh.example",
        "beta-only.example",
    }
    globex = next(d for d in board.domains if d.domain == "globex-sales.com")
    listed = client.get(globex.url)
    assert listed.status_code == 200
    assert sorted(m.email for m in listed.context["cl"].result_list) == [
        "lena@globex-sales.com",
        "max@globex-sales.com",
    ]
    assert "globex-sales.com" in listed.content.decode()  # the applied filter is shown
    # One workspace picked: its domains only, and the links keep the workspace.
    only_b = dashboard.build(personas["bob"], ws_b.pk)
    assert [d.domain for d in only_b.domains] == ["beta-only.example"]
    assert f"workspace__id__exact={ws_b.pk}" in only_b.domains[0].url
    # Case does not matter; another workspace's domain lists nothing for alice.
    alice = client_for(personas["alice"])
    upper = alice.get(reverse("admin:fleet_mailbox_changelist") + "?domain=GLOBEX-SALES.COM")
    assert upper.context["cl"].result_count == 2
    foreign = alice.get(reverse("admin:fleet_mailbox_changelist") + "?domain=beta-only.example")
    assert foreign.context["cl"].result_count == 0


def test_the_block_costs_the_same_whatever_the_number_of_domains(ws_a, ws_b, personas):
    fleet(ws_a, ws_b)

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            dashboard.build(personas["bob"])
        return len(ctx.captured_queries)

    few = queries()
    for n in range(40):
        add(ws_a, f"user{n}@d{n}.example", spf_correct=bool(n % 2))
    assert queries() == few
    board = dashboard.build(personas["bob"])
    assert len(board.domains) == dashboard.DOMAINS_SHOWN and board.domain_count == 44
    assert all(d.problems for d in board.domains[:3])
