import pytest
from django.db import IntegrityError, transaction

from fleet import errors
from fleet.models import Mailbox, MailboxEvent, Membership, Role


def create(ws, **kw):
    fields = {"workspace": ws, "email": "x@example.com", "auth_method": "oauth", **kw}
    with transaction.atomic():
        return Mailbox.objects.create(**fields)


@pytest.mark.parametrize(
    "bad",
    [
        {"warmup_daily_volume": 2001},
        {"warmup_response_rate": 101},
        {"status": "sleeping"},
        {"auth_method": "basic"},
        {"provider": "gmail"},
        {"warmup_status": "maybe"},
    ],
)
def test_database_rejects_values_out_of_range(ws_a, bad):
    with pytest.raises(IntegrityError):
        create(ws_a, **bad)


def test_limits_themselves_are_accepted(ws_a):
    m = create(ws_a, warmup_daily_volume=2000, warmup_response_rate=100)
    m2 = create(ws_a, email="y@example.com", warmup_daily_volume=0, warmup_response_rate=0)
    assert (m.warmup_daily_volume, m2.warmup_response_rate) == (2000, 0)


def test_email_unique_per_workspace_ignoring_case(ws_a, ws_b):
    create(ws_a, email="Sam@Example.com")
    with pytest.raises(IntegrityError):
        create(ws_a, email="sam@example.COM")
    # The same address may belong to another workspace.
    assert create(ws_b, email="sam@example.com").pk


def test_domain_is_derived_in_the_database(ws_a):
    m = create(ws_a, email="Lee@Contoso.Example")
    m.refresh_from_db()
    assert m.domain == "contoso.example"
    assert Mailbox.objects.filter(domain="contoso.example").count() == 1


def test_membership_role_is_checked(ws_a, personas):
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(user=personas["olga"], workspace=ws_a, role="admin")


def test_roles_are_ordered():
    assert Role.at_least(Role.MANAGER) == ["manager", "owner"]
    assert Role.at_least(Role.VIEWER)[0] == "viewer"


def test_set_status_records_event(ws_a, personas):
    m = create(ws_a)
    m.set_status("error", errors.SECRET_UNREADABLE, actor=personas["alice"])
    m.refresh_from_db()
    assert (m.status, m.error_code) == ("error", "SECRET_UNREADABLE")
    event = MailboxEvent.objects.get(mailbox=m)
    assert (event.from_status, event.to_status, event.error_code, event.actor) == (
        "pending",
        "error",
        "SECRET_UNREADABLE",
        personas["alice"],
    )
    m.set_status("active")
    m.refresh_from_db()
    assert (m.status, m.error_code, m.error_message) == ("active", "", "")
    assert m.events.count() == 2


def test_history_survives_mailbox_deletion(ws_a):
    m = create(ws_a, email="gone@example.com")
    m.set_status("disabled")
    m.delete()
    assert MailboxEvent.objects.get(email="gone@example.com").mailbox is None
