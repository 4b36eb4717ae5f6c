"""Uptime (fleet/uptime.py): the hourly rollup kept by database triggers in step with the
connection-test events, the mailbox page, the dashboard and `GET /mailboxes/{uid}/health`,
each scoped to the user's workspaces."""

from datetime import timedelta

import pytest
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from fleet import errors, mailbox_checks, uptime
from fleet.models import Mailbox, MailboxEvent, UptimeHour

BAD = errors.INVALID_CREDENTIALS


def connection_tests(mailbox, results, *, ago=timedelta(0)):
    """Connection tests as the checks write them (True: passed); `ago` moves them back in time
    by writing events as a sweep of that moment would have (the triggers count them then)."""
    if not ago:
        for passed in results:
            mailbox_checks.record(mailbox, None if passed else BAD, "" if passed else "535 5.7.3")
        return
    when = timezone.now() - ago
    MailboxEvent.objects.bulk_create(
        MailboxEvent(
            workspace_id=mailbox.workspace_id,
            mailbox=mailbox,
            email=mailbox.email,
            kind=MailboxEvent.Kind.CONNECTION_TEST,
            to_status="active" if passed else "error",
            error_code="" if passed else BAD.code,
            created_at=when,
        )
        for passed in results
    )


def rollup_matches_events():
    """Every (workspace, hour) of the rollup equals a count over the events themselves."""
    by_events = {}
    for event in MailboxEvent.objects.all():
        hour = event.created_at.replace(minute=0, second=0, microsecond=0)
        row = by_events.setdefault((event.workspace_id, hour), [0, 0, 0])
        if event.kind == MailboxEvent.Kind.CONNECTION_TEST:
            row[0] += 1
            row[1] += not event.error_code
        lost = MailboxEvent.objects.filter(MailboxEvent.LOST, pk=event.pk).exists()
        row[2] += lost
    by_events = {k: v for k, v in by_events.items() if v[0] or v[2]}
    by_rollup = {
        (r.workspace_id, r.hour): [r.checks, r.passed, r.disconnections]
        for r in UptimeHour.objects.all()
    }
    assert by_rollup == by_events


@pytest.fixture
def boxes(ws_a, ws_b):
    return {
        "ann": Mailbox.objects.create(workspace=ws_a, email="ann@alpha.example", status="active", auth_method="app_password"),
        "amy": Mailbox.objects.create(workspace=ws_a, email="amy@alpha.example", status="active", auth_method="app_password"),
        "ben": Mailbox.objects.create(workspace=ws_b, email="ben@beta.example", status="active", auth_method="app_password"),
    }


def test_the_triggers_keep_the_rollup_in_step_with_the_events(boxes, ws_a, ws_b):
    ann, amy, ben = boxes["ann"], boxes["amy"], boxes["ben"]
    connection_tests(ann, [True, False, True])  # active → error (a disconnection) → active
    connection_tests(amy, [True, True])
    connection_tests(ben, [False])  # active → error
    connection_tests(ann, [True, False, False], ago=timedelta(days=3))
    ann.set_status("reauth_required", errors.REAUTH_REQUIRED)  # from active: a disconnection
    ann.set_status("reauth_required", errors.REAUTH_REQUIRED)  # no change of state: none
    ann.note("a note counts nothing")
    rollup_matches_events()
    now = uptime.for_workspace(ws_a.pk)
    assert (now.checks, now.passed) == (8, 5)
    assert now.disconnections_24h == 2 and now.uptime == 62.5
    assert uptime.for_workspace(ws_b.pk).disconnections_24h == 1


def test_old_tests_and_disconnections_leave_the_windows(boxes, ws_a):
    ann = boxes["ann"]
    connection_tests(ann, [False] * 4, ago=timedelta(days=31))  # outside the 30 days
    connection_tests(ann, [True, False], ago=timedelta(days=2))  # in the 30 days, not in the 24 h
    MailboxEvent.objects.create(
        workspace=ws_a, mailbox=ann, email=ann.email, from_status="active", to_status="error",
        created_at=timezone.now() - timedelta(hours=30),
    )
    figures = uptime.for_workspace(ws_a.pk)
    assert (figures.checks, figures.passed, figures.disconnections_24h) == (2, 1, 0)
    assert uptime.for_mailbox(ann).uptime == 50.0
    assert uptime.for_mailbox(ann).disconnections == 1


def test_mailbox_uptime_and_last_checks(boxes):
    ann = boxes["ann"]
    assert uptime.for_mailbox(ann).uptime is None  # never tested
    connection_tests(ann, [True] * 7 + [False] * 3, ago=timedelta(days=1))
    connection_tests(ann, [True, False])
    health = uptime.for_mailbox(ann)
    assert (health.checks, health.passed, health.uptime) == (12, 8, 66.7)
    assert len(health.last_checks) == uptime.LAST_CHECKS
    assert health.last_checks[0].error_code == BAD.code  # the newest first
    assert health.last_checks[1].error_code == ""


def test_the_mailbox_page_shows_uptime(boxes, personas, client_for):
    connection_tests(boxes["ann"], [True, True, True, False])
    page = client_for(personas["alice"]).get(
        reverse("admin:fleet_mailbox_change", args=[boxes["ann"].pk])
    ).content.decode()
    assert 'data-figure="uptime">75.0&nbsp;%' in page and "(3 of 4)" in page
    assert "share of connection tests that passed" in page
    assert page.count('data-passed="yes"') == 3 and page.count('data-passed="no"') == 1
    assert BAD.hint in page  # the failed check's code with what to do


def test_the_dashboard_shows_uptime_per_workspace_scoped(boxes, ws_a, ws_b, personas, client_for):
    connection_tests(boxes["ann"], [True, False])  # A: 50 %, one disconnection
    connection_tests(boxes["ben"], [True, True, True, True])  # B: 100 %
    alice = client_for(personas["alice"]).get(reverse("admin:index")).content.decode()
    block = alice.split('id="dashboard-uptime"')[1].split("</section>")[0]
    assert 'data-workspace="Alpha"' in block and "Beta" not in block
    assert "50.0&nbsp;%" in block
    lost_url = f"change=lost&amp;within=24h&amp;workspace__id__exact={ws_a.pk}"
    assert lost_url in block
    # The link shows exactly the disconnections counted.
    listed = client_for(personas["alice"]).get(
        reverse("admin:fleet_mailboxevent_changelist"),
        {"change": "lost", "within": "24h", "workspace__id__exact": ws_a.pk},
    )
    assert listed.context["cl"].result_count == 1

    bob = client_for(personas["bob"]).get(reverse("admin:index")).content.decode()
    block = bob.split('id="dashboard-uptime"')[1].split("</section>")[0]
    assert block.index('data-workspace="Alpha"') < block.index('data-workspace="Beta"')  # worst first
    assert "100.0&nbsp;%" in block and 'data-workspace="all"' in block and "83.3&nbsp;%" in block


def test_dashboard_uptime_reads_the_rollup_not_the_events(boxes, ws_a, django_assert_num_queries):
    connection_tests(boxes["ann"], [True, False, True])
    from fleet import dashboard

    board = dashboard.build(type("Root", (), {"pk": 0, "is_superuser": True,
                                             "is_authenticated": True, "is_active": True})())
    rows = {r.name: r for r in board.uptime}
    assert rows["Alpha"].checks == 3 and rows["Alpha"].passed == 2
    # The block's one query names the rollup only.
    with django_assert_num_queries(1) as captured:
        found = uptime.per_workspace(UptimeHour.objects.all())
    assert "fleet_uptimehour" in captured.captured_queries[0]["sql"]
    assert "fleet_mailboxevent" not in captured.captured_queries[0]["sql"]
    assert found[ws_a.pk].checks == 3


# --- API --------------------------------------------------------------------------------------
HEALTH_MATRIX = {
    "root_platform": 200,
    "bob_platform": 200,
    "alice_platform": 200,
    "olga_platform": 404,
    "a_manager": 200,
    "a_operator": 200,
    "a_viewer": 200,
    "b_viewer": 404,
    "revoked": 401,
    "missing": 401,
}


@pytest.mark.parametrize("key_name", HEALTH_MATRIX)
def test_health_api_key_scope(key_name, api, api_keys, boxes):
    connection_tests(boxes["ann"], [True, True, False, True])
    due = timezone.now() + timedelta(hours=5)
    Mailbox.objects.filter(pk=boxes["ann"].pk).update(check_due_at=due)
    key = None if key_name == "missing" else api_keys[key_name]
    response = api("get", f"/api/v1/mailboxes/{boxes['ann'].uid}/health", key)
    assert response.status_code == HEALTH_MATRIX[key_name], response.content
    if response.status_code == 200:
        data = response.json()["data"]
        assert (data["checks"], data["passed"], data["uptime"]) == (4, 3, 75.0)
        assert data["window_days"] == 30 and data["disconnections"] == 1
        assert [c["passed"] for c in data["last_checks"]] == [True, False, True, True]
        assert data["last_checks"][1]["error"]["code"] == BAD.code
        assert data["last_checks"][1]["error"]["hint"] == BAD.hint
        assert data["status"] == "active"
        assert parse_datetime(data["next_check_at"]) == due


def test_health_of_another_workspace_is_404(api, api_keys, boxes):
    response = api("get", f"/api/v1/mailboxes/{boxes['ben'].uid}/health", api_keys["a_manager"])
    assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"


def test_counts_agree_with_a_scan_at_scale(ws_a):
    """Many mailboxes tested in one bulk write (as a sweep's batch would): the rollup equals
    the count over the events."""
    made = Mailbox.objects.bulk_create(
        Mailbox(workspace=ws_a, email=f"m{i}@alpha.example", status="active", auth_method="app_password") for i in range(300)
    )
    MailboxEvent.objects.bulk_create(
        MailboxEvent(
            workspace=ws_a, mailbox=m, email=m.email, kind=MailboxEvent.Kind.CONNECTION_TEST,
            to_status="active" if i % 10 else "error", error_code="" if i % 10 else BAD.code,
        )
        for i, m in enumerate(made)
    )
    scan = MailboxEvent.objects.filter(kind="connection_test").aggregate(
        checks=Count("id"), passed=Count("id", filter=Q(error_code=""))
    )
    figures = uptime.for_workspace(ws_a.pk)
    assert (figures.checks, figures.passed) == (scan["checks"], scan["passed"]) == (300, 270)
