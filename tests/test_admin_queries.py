"""The admin's cost in SQL queries does not grow with the fleet: the mailbox list (with each
filter and a search by address or domain), a mailbox's page and the dashboard run the same
number of queries for a handful of mailboxes as for many, and at most 12 (the dashboard's: one
per block, deliverability per domain included)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from fleet import errors
from fleet.models import Mailbox, MailboxEvent, Tag

MAX_QUERIES = 12


def grow(ws, start, n):
    tag = Tag.objects.get_or_create(workspace=ws, name="scale")[0]
    made = Mailbox.objects.bulk_create(
        Mailbox(
            workspace=ws,
            email=f"user{i}@d{i % 7}.example",
            auth_method="app_password",
            status=["active", "error", "pending"][i % 3],
            error_code=errors.INVALID_CREDENTIALS.code if i % 3 == 1 else "",
            warmup_status=["active", "paused", "not_started"][i % 3],
        )
        for i in range(start, start + n)
    )
    tag.mailboxes.add(*made)
    MailboxEvent.objects.bulk_create(
        MailboxEvent(
            workspace=ws, mailbox=m, email=m.email, from_status="pending", to_status=m.status
        )
        for m in made
    )
    return made


def urls(ws, mailbox):
    changelist = reverse("admin:fleet_mailbox_changelist")
    return {
        "dashboard": reverse("admin:index"),
        "list": changelist,
        "status": f"{changelist}?status=error",
        "error code": f"{changelist}?error_code=INVALID_CREDENTIALS",
        "warmup": f"{changelist}?warmup_status=paused",
        "workspace": f"{changelist}?workspace__id__exact={ws.pk}",
        "tag": f"{changelist}?tags__id__exact={Tag.objects.get(workspace=ws, name='scale').pk}",
        "search address": f"{changelist}?q=user1",
        "search domain": f"{changelist}?q=d3.example",
        "mailbox page": reverse("admin:fleet_mailbox_change", args=[mailbox.pk]),
        "events": reverse("admin:fleet_mailboxevent_changelist"),
    }


def count(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200, url
    return len(ctx.captured_queries)


@pytest.mark.parametrize("who", ["bob", "root"])
def test_admin_queries_do_not_grow_with_the_fleet(ws_a, ws_b, personas, client_for, who):
    client = client_for(personas[who])
    first = grow(ws_a, 0, 6)[0]
    for url in urls(ws_a, first).values():
        client.get(url)  # warm the per-process caches (content types, templates)
    small = {name: count(client, url) for name, url in urls(ws_a, first).items()}
    grow(ws_a, 6, 300)
    grow(ws_b, 306, 100)
    large = {name: count(client, url) for name, url in urls(ws_a, first).items()}
    assert large == small
    assert max(large.values()) <= MAX_QUERIES, large
