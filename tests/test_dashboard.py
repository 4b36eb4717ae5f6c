"""The dashboard's figures, the lists they link to, and its cost in queries."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from fleet import errors
from fleet.models import ConsentRequest, Credential, Mailbox, MailboxEvent


def add_mailboxes(ws, n, prefix):
    made = []
    for i in range(n):
        m = Mailbox.objects.create(
            workspace=ws, email=f"{prefix}{i}@{ws.slug}.example", auth_method="oauth"
        )
        if i % 3 == 0:
            m.set_status("active")
        if i % 3 == 1:
            m.set_status("active")
            m.set_status("error", errors.SECRET_UNREADABLE if i % 2 else errors.WRONG_ALIAS)
        if i % 5 == 4:
            m.set_status("reauth_required")
        made.append(m)
    return made


@pytest.fixture
def fleet(ws_a, ws_b):
    add_mailboxes(ws_a, 12, "a")
    add_mailboxes(ws_b, 7, "b")
    # An old event outside the 30 days and one from yesterday.
    m = Mailbox.objects.filter(workspace=ws_a).first()
    MailboxEvent.objects.create(
        workspace=ws_a,
        mailbox=m,
        email=m.email,
        from_status="pending",
        to_status="active",
        created_at=timezone.now() - timedelta(days=45),
    )
    MailboxEvent.objects.create(
        workspace=ws_a,
        mailbox=m,
        email=m.email,
        from_status="active",
        to_status="error",
        created_at=timezone.now() - timedelta(days=1),
    )
    soon, later = timezone.now() + timedelta(hours=3), timezone.now() + timedelta(days=3)
    for ws in (ws_a, ws_b):
        ConsentRequest.objects.create(
            workspace=ws, kind="user", username="u", domain="d", expires_at=soon
        )
        ConsentRequest.objects.create(
            workspace=ws, kind="user", username="v", domain="d", expires_at=later
        )
        ConsentRequest.objects.create(
            workspace=ws, kind="user", username="w", domain="d", status="completed"
        )
        Credential.objects.create(
            workspace=ws,
            name=f"expiring-{ws.slug}",
            kind="graph_app_only",
            client_id="c",
            secret_expires_at=timezone.localdate() + timedelta(days=10),
        )
        Credential.objects.create(
            workspace=ws,
            name=f"fine-{ws.slug}",
            kind="graph_app_only",
            client_id="c",
            secret_expires_at=timezone.localdate() + timedelta(days=300),
        )


def figures(board):
    yield from board.by_status
    yield from board.by_warmup
    yield from board.error_codes
    yield board.consents_waiting
    yield board.consents_expiring


@pytest.mark.parametrize(
    "who, workspace", [("bob", None), ("bob", "a"), ("alice", None), ("root", "b")]
)
def test_every_figure_matches_the_list_it_links_to(
    fleet, personas, client_for, ws_a, ws_b, who, workspace
):
    c = client_for(personas[who])
    params = {"workspace": {"a": ws_a.pk, "b": ws_b.pk}[workspace]} if workspace else {}
    board = c.get(reverse("admin:index"), params).context["board"]
    checked = 0
    for figure in figures(board):
        response = c.get(figure.url)
        assert response.status_code == 200, figure.url
        assert response.context["cl"].result_count == figure.count, (figure.key, figure.url)
        checked += figure.count
    assert checked > 0
    for day in board.trend:
        for count, url in ((day.made, day.made_url), (day.lost, day.lost_url)):
            if count:
                assert c.get(url).context["cl"].result_count == count, url
    creds = c.get(board.credentials_expiring_url).context["cl"].result_count
    assert creds == len(board.credentials_expiring)


def test_figures_are_scoped(fleet, personas, client_for):
    alice_board = client_for(personas["alice"]).get(reverse("admin:index")).context["board"]
    assert alice_board.total == 12
    assert [w.slug for w in alice_board.workspaces] == ["alpha"]
    root_board = client_for(personas["root"]).get(reverse("admin:index")).context["board"]
    assert root_board.total == 19
    assert root_board.consents_waiting.count == 4 and root_board.consents_expiring.count == 2
    assert {c.name for c in root_board.credentials_expiring} == {"expiring-alpha", "expiring-beta"}


def test_trend_counts_made_and_lost(fleet, personas, client_for):
    board = client_for(personas["alice"]).get(reverse("admin:index")).context["board"]
    assert len(board.trend) == 30
    made = sum(d.made for d in board.trend)
    lost = sum(d.lost for d in board.trend)
    # 12 mailboxes: 8 became active (i%3 in 0,1); 4 went active → error, plus yesterday's one;
    # reauth from active: i=4 (active→error→reauth: not from active), i=9 (active→reauth).
    assert (
        made
        == MailboxEvent.objects.filter(
            MailboxEvent.MADE,
            workspace__slug="alpha",
            created_at__gte=timezone.now() - timedelta(days=29),
        ).count()
    )
    assert (made, lost) == (8, 6)


def test_outsider_sees_an_empty_dashboard(fleet, personas, client_for):
    response = client_for(personas["olga"]).get(reverse("admin:index"))
    assert response.status_code == 200
    assert "not a member of any workspace" in response.content.decode()


def test_query_count_does_not_grow_with_the_fleet(ws_a, personas, client_for):
    c = client_for(personas["bob"])
    url = reverse("admin:index")

    def queries():
        with CaptureQueriesContext(connection) as ctx:
            assert c.get(url).status_code == 200
        return len(ctx.captured_queries)

    add_mailboxes(ws_a, 5, "small")
    small = queries()
    add_mailboxes(ws_a, 60, "large")
    assert queries() == small
    assert small <= 14
