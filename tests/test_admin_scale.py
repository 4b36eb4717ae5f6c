"""The admin on a large fleet (issue 15): the mailbox list with each filter and search, a
mailbox's page, the event list and the dashboard run the same SQL queries — at most 12 — for
1,000 mailboxes as for SCALE_TEST_MAILBOXES (default 100,000), no list counts its rows past its
cap, and on PostgreSQL the domain search, an address search and the default order are answered
by their indexes (EXPLAIN). One seed for the module (`seed_fleet`: COPY on PostgreSQL,
bulk_create on SQLite), grown from 1k to 100k between the two measurements and rolled back at
the end. The 1M figures come from `bin/bench bench_admin` (BENCH_FLEET_SIZE=1000000)."""

import os
import re

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import reverse

from fleet.models import Mailbox, Membership, Role, Tag, Workspace

SMALL = 1_000
LARGE = int(os.environ.get("SCALE_TEST_MAILBOXES", "100000"))
WORKSPACES = 4
MAX_QUERIES = 12
pytestmark = pytest.mark.django_db


def seed(total: int) -> None:
    with open(os.devnull, "w") as quiet:
        call_command("seed_fleet", mailboxes=total, workspaces=WORKSPACES, stdout=quiet)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def urls() -> dict[str, str]:
    ws = Workspace.objects.get(slug="client-01")
    sample = Mailbox.objects.filter(workspace=ws).order_by("id").first()
    tag = Tag.objects.get(workspace=ws, name="warm")
    changelist = reverse("admin:fleet_mailbox_changelist")
    return {
        "dashboard": reverse("admin:index"),
        "dashboard, one workspace": f"{reverse('admin:index')}?workspace={ws.pk}",
        "list": changelist,
        "list, page 3": f"{changelist}?p=3",
        "status": f"{changelist}?status=error",
        "error code": f"{changelist}?error_code=INVALID_CREDENTIALS",
        "warmup": f"{changelist}?warmup_status=paused",
        "auth method": f"{changelist}?auth_method=oauth",
        "needs approval": f"{changelist}?needs_approval__exact=1",
        "workspace": f"{changelist}?workspace__id__exact={ws.pk}",
        "tag": f"{changelist}?tags__id__exact={tag.pk}",
        "domain filter": f"{changelist}?domain={sample.domain}",
        "search address part": f"{changelist}?q=user00001",
        "search address": f"{changelist}?q={sample.email}",
        "search domain": f"{changelist}?q={sample.domain}",
        "mailbox page": reverse("admin:fleet_mailbox_change", args=[sample.pk]),
        "events": reverse("admin:fleet_mailboxevent_changelist"),
    }


def measure(clients: dict[str, Client]) -> dict[tuple[str, str], list[str]]:
    """The SQL of every page, per persona."""
    seen = {}
    for who, client in clients.items():
        for name, url in urls().items():
            client.get(url)  # warm per-process caches (content types, templates)
            with CaptureQueriesContext(connection) as ctx:
                response = client.get(url)
            assert response.status_code == 200, (who, url, response.status_code)
            seen[(who, name)] = [q["sql"] for q in ctx.captured_queries]
    return seen


@pytest.fixture(scope="module")
def grown(django_db_setup, django_db_blocker):
    """(queries at 1k, clients): the fleet seeded to 1k, measured, then grown to LARGE."""
    # As conftest's test_settings, for the pages rendered here (outside any test).
    storages = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with (
        override_settings(STORAGES=storages),
        django_db_blocker.unblock(),
        transaction.atomic(),
    ):
        seed(SMALL)
        User = get_user_model()
        root = User.objects.create_user("scale-root", is_staff=True, is_superuser=True)
        manager = User.objects.get(username="manager-01")
        Membership.objects.create(
            user=manager, workspace=Workspace.objects.get(slug="client-02"), role=Role.MANAGER
        )
        clients = {"root": Client(), "manager of 2": Client()}
        clients["root"].force_login(root)
        clients["manager of 2"].force_login(manager)
        small = measure(clients)
        seed(LARGE)
        yield small, clients, root
        transaction.set_rollback(True)


def test_fleet_is_grown(grown):
    assert Mailbox.objects.count() == LARGE


def test_queries_do_not_grow_from_1k_to_100k(grown):
    small, clients, _ = grown
    large = measure(clients)
    assert {k: len(v) for k, v in large.items()} == {k: len(v) for k, v in small.items()}
    worst = max(large, key=lambda k: len(large[k]))
    assert len(large[worst]) <= MAX_QUERIES, (worst, large[worst])


def test_no_list_counts_the_whole_fleet(grown):
    _, clients, _ = grown
    for who, client in clients.items():
        for name, url in urls().items():
            with CaptureQueriesContext(connection) as ctx:
                client.get(url)
            for sql in (q["sql"] for q in ctx.captured_queries):
                if re.search(r'COUNT\(\*\).*FROM "fleet_mailbox(event)?"', sql):
                    assert "LIMIT" in sql, (who, name, sql)


def test_the_list_says_more_than_its_cap(grown):
    if admin.site._registry[Mailbox].count_cap >= LARGE:
        pytest.skip("SCALE_TEST_MAILBOXES is below the list's count cap")
    _, clients, _ = grown
    page = clients["root"].get(reverse("admin:fleet_mailbox_changelist")).content.decode()
    assert "more than 10,000 mailboxes" in page
    assert "Select all matching mailboxes (more than 10,000)" in page
    few = clients["root"].get(reverse("admin:fleet_mailbox_changelist") + "?q=user000012@")
    assert "more than" not in few.content.decode()


def plan(root, params: dict) -> str:
    model_admin = admin.site._registry[Mailbox]
    request = RequestFactory().get(reverse("admin:fleet_mailbox_changelist"), params)
    request.user = root
    changelist = model_admin.get_changelist_instance(request)
    return changelist.queryset[: model_admin.list_per_page].explain()


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="EXPLAIN plans are PostgreSQL's")
def test_domain_search_uses_its_index(grown):
    *_, root = grown
    domain = Mailbox.objects.order_by("id").first().domain
    explained = plan(root, {"q": domain})
    assert "mailbox_domain_upper" in explained, explained
    assert "Seq Scan on fleet_mailbox" not in explained, explained


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="EXPLAIN plans are PostgreSQL's")
def test_address_search_uses_the_unique_index(grown):
    *_, root = grown
    explained = plan(root, {"q": Mailbox.objects.order_by("id").first().email.upper()})
    assert "mailbox_unique_email" in explained, explained


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="EXPLAIN plans are PostgreSQL's")
def test_default_order_reads_the_order_index(grown):
    *_, root = grown
    explained = plan(root, {})
    assert "Index Scan using mailbox_email_order" in explained, explained
    assert "Sort" not in explained, explained
