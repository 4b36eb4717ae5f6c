"""The dashboard's tallies (fleet/tallies.py) equal the live counts after every kind of change to
the mailboxes and their events: created one by one and in bulk, a status change, a bulk status
change, a plain `QuerySet.update`, an address (domain) change, deliverability found, a move to
another workspace, a delete through the service, a bulk delete and a workspace's cascade. The
triggers live in the database (migration 0017), so this runs on PostgreSQL and SQLite alike."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from fleet import errors, mailboxes, tallies
from fleet.models import Mailbox, MailboxEvent, MailboxTally, Workspace


def assert_in_step(label: str) -> None:
    assert tallies.tallied_status_counts() == tallies.live_status_counts(), label
    assert tallies.tallied_domain_counts() == tallies.live_domain_counts(), label
    assert tallies.tallied_event_days() == tallies.live_event_days(), label


def make(ws, n: int, start: int = 0, **extra) -> list[Mailbox]:
    return Mailbox.objects.bulk_create(
        Mailbox(
            workspace=ws,
            email=f"user{i}@d{i % 3}.example",
            auth_method=["app_password", "oauth", "graph_app_only"][i % 3],
            **extra,
        )
        for i in range(start, start + n)
    )


@pytest.mark.django_db
def test_tallies_follow_every_kind_of_change(ws_a, ws_b):
    root = get_user_model().objects.create_user("root", is_superuser=True, is_staff=True)
    assert_in_step("empty")

    one = Mailbox.objects.create(workspace=ws_a, email="Solo@Acme.example", auth_method="oauth")
    assert MailboxTally.objects.get(workspace=ws_a, status="pending").mailboxes == 1
    assert_in_step("create")

    batch = make(ws_a, 30) + make(ws_b, 12, start=100, provider="outlook_com")
    assert_in_step("bulk create")

    one.set_status(Mailbox.Status.ACTIVE, actor=root, via="admin")
    assert_in_step("status change (made)")
    one.set_status(Mailbox.Status.ERROR, errors.INVALID_CREDENTIALS, actor=root, via="admin")
    assert_in_step("status change (lost, with a code)")

    Mailbox.set_status_many(batch[:20], Mailbox.Status.ACTIVE, via="task")
    Mailbox.set_status_many(
        batch[:7], Mailbox.Status.REAUTH_REQUIRED, errors.REAUTH_REQUIRED, via="task"
    )
    assert_in_step("bulk status change")

    Mailbox.objects.filter(pk__in=[m.pk for m in batch[:10]]).update(
        warmup_status=Mailbox.Warmup.ACTIVE, spf_correct=True, dkim_correct=False
    )
    assert_in_step("QuerySet.update of warmup and deliverability")

    Mailbox.objects.filter(pk=batch[3].pk).update(last_checked_at=timezone.now())
    assert_in_step("an update that changes no tallied column")

    batch[4].email = "renamed@other.example"
    batch[4].save()
    assert_in_step("address moved to another domain")

    Mailbox.objects.filter(pk__in=[m.pk for m in batch[10:15]]).update(workspace=ws_b)
    assert_in_step("moved to another workspace")

    # An event from yesterday and a note (counted only when it is a made/lost change).
    MailboxEvent.objects.create(
        workspace=ws_a,
        mailbox=one,
        email=one.email,
        from_status="error",
        to_status="active",
        created_at=timezone.now() - timedelta(days=1),
    )
    one.note("just a note")
    assert_in_step("events inserted directly")

    mailboxes.delete(one, actor=root, via="admin")
    assert_in_step("delete through the service")

    Mailbox.objects.filter(workspace=ws_a, email__startswith="user1").delete()
    assert_in_step("bulk delete")

    Workspace.objects.get(pk=ws_b.pk).delete()
    assert_in_step("workspace deleted with its mailboxes and events")
    assert not MailboxTally.objects.filter(workspace_id=ws_b.pk, mailboxes__gt=0).exists()


@pytest.mark.django_db
def test_recount_rebuilds_a_tally_that_was_tampered_with(ws_a):
    make(ws_a, 9)
    MailboxTally.objects.update(mailboxes=999)
    assert tallies.tallied_status_counts() != tallies.live_status_counts()
    tallies.recount()
    assert_in_step("recounted")
