"""The dashboard's rolled-up counts (MailboxTally, DomainTally, EventDayTally), kept by database
triggers (migration 0017_scale_tallies) in the same transaction as every write to the mailboxes
and their events, so they need no call from Fleet's code. This module reads them, scoped like
everything else, and counts the same figures from the source rows — for the tests that hold the
triggers to the live counts, and for `recount` should a tally ever be in doubt."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date

from django.db import transaction
from django.db.models import Case, Count, IntegerField, Q, Value, When
from django.db.models.functions import TruncDate

from fleet.models import DomainTally, EventDayTally, Mailbox, MailboxEvent, MailboxTally

STATUS_KEYS = ("workspace_id", "status", "warmup_status", "error_code", "auth_method")
DOMAIN_KEYS = ("workspace_id", "domain", "spf", "dkim", "dmarc", "mx", "dmarc_policy")


def _check(field: str) -> Case:
    """A mailbox's deliverability boolean as the tally keeps it: 1 found, 0 missing, -1 never
    checked."""
    return Case(
        When(**{f"{field}__isnull": True}, then=Value(-1)),
        When(**{field: True}, then=Value(1)),
        default=Value(0),
        output_field=IntegerField(),
    )


def live_status_counts(mailboxes=None) -> Counter:
    """{(workspace, status, warmup, code, auth): n} counted from the mailboxes themselves."""
    mailboxes = Mailbox.objects.all() if mailboxes is None else mailboxes
    rows = mailboxes.values_list(*STATUS_KEYS).annotate(n=Count("id")).order_by()
    return Counter({row[:-1]: row[-1] for row in rows})


def live_domain_counts(mailboxes=None) -> Counter:
    mailboxes = Mailbox.objects.all() if mailboxes is None else mailboxes
    rows = (
        mailboxes.exclude(provider=Mailbox.Provider.OUTLOOK_COM)
        .annotate(
            spf=_check("spf_correct"),
            dkim=_check("dkim_correct"),
            dmarc=_check("dmarc_correct"),
            mx=_check("mx_correct"),
        )
        .values_list(*DOMAIN_KEYS)
        .annotate(n=Count("id"))
        .order_by()
    )
    return Counter({row[:-1]: row[-1] for row in rows})


def live_event_days(events=None) -> dict[tuple[int, date], tuple[int, int]]:
    """{(workspace, UTC day): (made, lost)} counted from the events themselves."""
    events = MailboxEvent.objects.all() if events is None else events
    rows = (
        events.filter(MailboxEvent.MADE | MailboxEvent.LOST)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values_list("workspace_id", "day")
        .annotate(
            made=Count("id", filter=MailboxEvent.MADE),
            lost=Count("id", filter=MailboxEvent.LOST),
        )
        .order_by()
    )
    return {(ws, day): (made, lost) for ws, day, made, lost in rows}


def tallied_status_counts() -> Counter:
    rows = MailboxTally.objects.filter(mailboxes__gt=0).values_list(*STATUS_KEYS, "mailboxes")
    return Counter({row[:-1]: row[-1] for row in rows})


def tallied_domain_counts() -> Counter:
    rows = DomainTally.objects.filter(mailboxes__gt=0).values_list(*DOMAIN_KEYS, "mailboxes")
    return Counter({row[:-1]: row[-1] for row in rows})


def tallied_event_days() -> dict[tuple[int, date], tuple[int, int]]:
    rows = EventDayTally.objects.filter(Q(made__gt=0) | Q(lost__gt=0)).values_list(
        "workspace_id", "day", "made", "lost"
    )
    return {(ws, day): (made, lost) for ws, day, made, lost in rows}


@transaction.atomic
def recount() -> None:
    """Rebuild the three tallies from the source rows (the tables are locked meanwhile, so no
    write slips between the count and the triggers that follow it)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "LOCK TABLE fleet_mailbox, fleet_mailboxevent IN SHARE ROW EXCLUSIVE MODE"
            )
    MailboxTally.objects.all().delete()
    MailboxTally.objects.bulk_create(
        MailboxTally(**dict(zip(STATUS_KEYS, key, strict=True)), mailboxes=n)
        for key, n in live_status_counts().items()
    )
    DomainTally.objects.all().delete()
    DomainTally.objects.bulk_create(
        DomainTally(**dict(zip(DOMAIN_KEYS, key, strict=True)), mailboxes=n)
        for key, n in live_domain_counts().items()
    )
    EventDayTally.objects.all().delete()
    EventDayTally.objects.bulk_create(
        EventDayTally(workspace_id=ws, day=day, made=made, lost=lost)
        for (ws, day), (made, lost) in live_event_days().items()
    )
