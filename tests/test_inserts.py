"""fleet/inserts.py: `insert_many` writes the rows `bulk_create` writes (by COPY on PostgreSQL),
leaves the objects as saved instances, and fails as Django's bulk_create fails."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from fleet.inserts import insert_many, insert_rows
from fleet.models import AuditEntry, Mailbox, MailboxEvent
from tests.conftest import on_postgres


def new_mailboxes(ws, prefix: str, n: int = 3) -> list[Mailbox]:
    return [
        Mailbox(
            workspace=ws,
            email=f"{prefix}{i}@Contoso.Example",
            display_name=f'Quote " back\\slash, tab\t and newline\n {i} — ünïcode',
            auth_method=Mailbox.AuthMethod.APP_PASSWORD,
            password=f"app-pass-{i}",
            totp_secret="" if i else "JBSWY3DPEHPK3PXP",
            smtp_host="smtp.office365.com",
            imap_port=993,
        )
        for i in range(n)
    ]


def test_the_rows_are_those_bulk_create_writes(ws_a):
    ours = insert_many(new_mailboxes(ws_a, "copy"))
    theirs = Mailbox.objects.bulk_create(new_mailboxes(ws_a, "django"))
    assert all(m.pk and not m._state.adding and m._state.db == "default" for m in ours)
    assert len({m.pk for m in [*ours, *theirs]}) == 6
    stored = {m.pk: m for m in Mailbox.objects.all()}
    for a, b in zip(ours, theirs, strict=True):
        x, y = stored[a.pk], stored[b.pk]
        assert x.email.replace("copy", "") == y.email.replace("django", "")
        assert x.display_name == y.display_name == a.display_name  # quotes, tabs, newlines
        assert x.password == y.password == a.password  # encrypted and read back
        assert x.totp_secret == y.totp_secret
        assert (x.created_at, x.updated_at) != (None, None)
        assert x.domain == "contoso.example"  # the generated column, as the database made it
    # The objects themselves go on as saved mailboxes: an update is an UPDATE of that row.
    ours[0].display_name = "renamed"
    ours[0].save(update_fields=["display_name"])
    assert Mailbox.objects.get(pk=ours[0].pk).display_name == "renamed"


def test_json_and_foreign_keys_are_written(ws_a, personas):
    boxes = insert_many(new_mailboxes(ws_a, "fk"))
    # The mailbox is given as an object made before its id existed: set at save, as Django does.
    events = insert_many(
        MailboxEvent(workspace_id=ws_a.pk, mailbox=m, email=m.email, message="x", actor=personas["olga"])
        for m in boxes
    )
    assert [e.mailbox_id for e in events] == [m.pk for m in boxes]
    changes = {"display_name": {"before": 'a "quoted" \\ value', "after": ["ü", 1, None]}}
    entries = insert_many(
        AuditEntry(workspace_id=ws_a.pk, action="mailbox.updated", object_type="mailbox",
                   object_id=str(m.pk), object_pk=m.pk, changes=changes)
        for m in boxes
    )
    assert [AuditEntry.objects.get(pk=e.pk).changes for e in entries] == [changes] * 3
    assert MailboxEvent.objects.filter(mailbox__in=boxes, actor=personas["olga"]).count() == 3


def test_a_duplicate_is_djangos_integrity_error_and_writes_nothing(ws_a):
    insert_many(new_mailboxes(ws_a, "dup", 1) + new_mailboxes(ws_a, "other", 1))
    again = new_mailboxes(ws_a, "fresh", 2) + new_mailboxes(ws_a, "DUP", 1)  # case-insensitive
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_many(again)
    assert all(m.pk is None for m in again)  # nothing pretends to be saved
    assert not Mailbox.objects.filter(email__startswith="fresh").exists()
    assert Mailbox.objects.count() == 2


def test_one_statement_for_the_rows_counted_like_any_other(ws_a):
    with CaptureQueriesContext(connection) as queries:
        insert_many(new_mailboxes(ws_a, "count", 50))
    statements = [q["sql"] for q in queries.captured_queries]
    if on_postgres():
        assert len(statements) == 2  # the 50 ids, then one COPY
        assert statements[1].startswith('COPY "fleet_mailbox"')
        assert "50 rows" in statements[1]
    else:  # SQLite: Django's bulk_create, INSERTs of as many rows as SQLite's variables allow
        assert statements and all(s.startswith('INSERT INTO "fleet_mailbox"') for s in statements)
    assert Mailbox.objects.filter(email__startswith="count").count() == 50


def test_nothing_and_one_are_cheap(ws_a):
    with CaptureQueriesContext(connection) as queries:
        assert insert_many([]) == []
    assert len(queries) == 0
    (one,) = insert_many(new_mailboxes(ws_a, "single", 1))
    assert Mailbox.objects.get(pk=one.pk).email == "single0@Contoso.Example"


def test_rows_get_every_other_field_at_its_default(ws_a):
    rows = [(ws_a.pk, f"row{i}@contoso.example", "app_password") for i in range(4)]
    with CaptureQueriesContext(connection) as queries:
        count = insert_rows(Mailbox, ["workspace_id", "email", "auth_method"], rows)
    assert count == 4
    if on_postgres():
        assert len(queries) == 1 and queries[0]["sql"].startswith('COPY "fleet_mailbox"')
    stored = list(Mailbox.objects.filter(email__startswith="row").order_by("email"))
    assert [m.email for m in stored] == [r[1] for r in rows]
    assert len({m.uid for m in stored}) == 4  # a default made for each row, not one for all
    assert {m.smtp_host for m in stored} == {"smtp.office365.com"}  # constant defaults
    assert all(m.created_at and m.updated_at for m in stored)  # auto_now(_add)
    assert {m.status for m in stored} == {Mailbox.Status.PENDING}
    assert {m.domain for m in stored} == {"contoso.example"}


def test_rows_and_a_duplicate(ws_a):
    names = ["workspace_id", "email", "auth_method"]
    assert insert_rows(Mailbox, names, []) == 0
    insert_rows(Mailbox, names, [(ws_a.pk, "same@contoso.example", "oauth")])
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_rows(
            Mailbox, names,
            [(ws_a.pk, "new@contoso.example", "oauth"), (ws_a.pk, "SAME@contoso.example", "oauth")],
        )
    assert Mailbox.objects.count() == 1
