"""Issue 4 (a), issue 15: a 500-row CSV through the admin's preview and confirm steps, beside
django-import-export's default ModelResource importing the same file (preview = dry run, then
the real import), in SQL queries and wall time. Both are warmed up first (one request to the
import page, one one-row dry run): the first request of a process builds Django's URL resolver,
which is no part of an import.

Where Fleet's time went (cProfile, issue 15), and what was cut:
- the preview ran the whole import and rolled it back: 500 instances given their servers, 500
  passwords encrypted (Fernet), one 500-row INSERT, then the rollback. Every rule is decided in
  `before_import` (one query for the addresses already there), so the preview now writes nothing;
- import-export deep-copied each blank new instance to diff it against the row (a third of the
  rest of the preview): every row is new, so its preview cells are built from the row itself
  (`skip_diff`, `after_import_row`), the same `<ins>` cells;
- what is left: import-export's per-row machinery (an instance, four fields cleaned) twice,
  reading the file twice (the form's check and the import), the confirm's one INSERT of 500
  rows with their encrypted passwords, the page renders and the session;
- then (issue 15, timers around each step): the confirm's INSERTs of 500 mailboxes (80 ms) and
  of their 500 audit entries (55 ms) were mostly psycopg escaping Django's UNNEST arrays in
  Python; by COPY (fleet/inserts.py) they take 40 and 20 ms, and each entry no longer looks up
  the request, the user and the client address again (`audit.record_many`).

Each side runs once untimed (a process's first import compiles templates and builds
import-export's resource), then three times; the median is reported.
"""

from __future__ import annotations

import statistics
import time

import tablib
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from import_export import resources

from fleet import imports
from fleet.models import Mailbox, Membership, Role, Workspace
from tests.bench.runner import Row

ROWS = 500


def the_file() -> bytes:
    lines = ["email,password,name,totpsecret"]
    for i in range(ROWS):
        domain = ("contoso.com", "hotmail.com", "outlook.com", "fabrikam.co.uk")[i % 4]
        lines.append(f"user{i}@{domain},app-pass-{i:04d},User {i},")
    return ("\n".join(lines) + "\n").encode()


class DefaultMailboxResource(resources.ModelResource):
    class Meta:
        model = Mailbox
        fields = ("id", "workspace", "email", "password", "display_name", "auth_method")


def fleet_admin(data: bytes, workspace: Workspace, user) -> tuple[int, float]:
    client = Client()
    client.force_login(user)
    assert client.get(reverse("admin:fleet_mailbox_import")).status_code == 200  # warm-up
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        preview = client.post(
            reverse("admin:fleet_mailbox_import"),
            {
                "workspace": workspace.pk,
                "tag": "bench",
                "format": "0",
                "resource": "0",
                "import_file": SimpleUploadedFile("bench.csv", data),
            },
        )
        assert b"Confirm import" in preview.content, preview.content[:2000]
        form = preview.context["confirm_form"]
        done = client.post(
            reverse("admin:fleet_mailbox_process_import"),
            {name: form[name].value() for name in form.fields},
        )
        assert done.status_code == 302
    elapsed = time.perf_counter() - started
    assert Mailbox.objects.filter(workspace=workspace).count() == ROWS
    return len(queries), elapsed


def default_resource(data: bytes, workspace: Workspace) -> tuple[int, float]:
    # The same rows, with the columns a default ModelResource needs to make valid mailboxes.
    table = imports.read_table(data)
    sheet = tablib.Dataset(
        headers=["workspace", "email", "password", "display_name", "auth_method"]
    )
    for row in table.dict:
        sheet.append([workspace.pk, row["email"], row["password"], row["name"], "app_password"])
    warm_up = tablib.Dataset(sheet[0], headers=sheet.headers)
    assert not DefaultMailboxResource().import_data(warm_up, dry_run=True).has_errors()
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        preview = DefaultMailboxResource().import_data(sheet, dry_run=True)
        assert not preview.has_errors(), [e.error for e in preview.base_errors] + [
            (n, errs[0].error) for n, errs in preview.row_errors()[:1]
        ]
        result = DefaultMailboxResource().import_data(sheet, dry_run=False)
        assert not result.has_errors()
    elapsed = time.perf_counter() - started
    assert Mailbox.objects.filter(workspace=workspace).count() == ROWS
    return len(queries), elapsed


RUNS = 3  # timed runs a side, after one untimed: the median is reported


def run() -> list[Row]:
    user = get_user_model().objects.create_user("bench-operator", is_staff=True)
    data = the_file()
    fleet_runs, base_runs = [], []
    for n in range(RUNS + 1):  # the first of each side pays the process's first-time costs
        ours = Workspace.objects.create(name=f"Bench Fleet {n}", slug=f"bench-fleet-{n}")
        theirs = Workspace.objects.create(name=f"Bench baseline {n}", slug=f"bench-baseline-{n}")
        Membership.objects.create(user=user, workspace=ours, role=Role.OPERATOR)
        fleet_runs.append(fleet_admin(data, ours, user))
        base_runs.append(default_resource(data, theirs))
    fleet_queries = max(q for q, _ in fleet_runs[1:])
    base_queries = max(q for q, _ in base_runs[1:])
    fleet_time = statistics.median(t for _, t in fleet_runs[1:])
    base_time = statistics.median(t for _, t in base_runs[1:])
    # Fleet's page requests also load the session, the user and the workspace choices; the
    # import itself is one lookup of known addresses and one bulk insert per table.
    return [
        Row(
            "(a) import 500-row CSV, preview + confirm", "SQL queries", fleet_queries, base_queries
        ),
        Row(
            "(a) import 500-row CSV, preview + confirm",
            "wall time",
            round(fleet_time, 2),
            round(base_time, 2),
            unit="s",
        ),
    ]
