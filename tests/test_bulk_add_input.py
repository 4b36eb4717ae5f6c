"""The checks a bulk add's input passes before anything runs."""

import pytest

from fleet.bulk_add import (
    MAX_ACCOUNTS,
    AccountsInvalid,
    parse_lines,
    parse_records,
    resolve_credential,
)
from fleet.errors import FleetError
from fleet.models import Credential


def test_lines_with_and_without_names():
    accounts = parse_lines(
        'Jim@Example.com,Jimothy H\n\nmichael@example.com\n"pam@example.com","Beesly, Pam"\n'
    )
    assert [(a.email, a.name) for a in accounts] == [
        ("jim@example.com", "Jimothy H"),
        ("michael@example.com", ""),
        ("pam@example.com", "Beesly, Pam"),
    ]


def test_every_bad_line_is_named():
    with pytest.raises(AccountsInvalid) as excinfo:
        parse_lines("good@example.com\nnot-an-address\n,Nameless\nGOOD@example.com,Again\n")
    assert excinfo.value.problems == [
        "line 2: 'not-an-address' is not a valid email address",
        "line 3: missing mailbox_email",
        "line 4: GOOD@example.com is a duplicate of line 1",
    ]
    assert excinfo.value.code == "VALIDATION_ERROR"


def test_limit_and_empty():
    text = "\n".join(f"u{i}@example.com" for i in range(MAX_ACCOUNTS + 1))
    with pytest.raises(AccountsInvalid, match="Maximum 500 mailboxes"):
        parse_lines(text)
    assert len(parse_lines("\n".join(f"u{i}@example.com" for i in range(MAX_ACCOUNTS)))) == 500
    with pytest.raises(AccountsInvalid, match="No accounts"):
        parse_lines("\n \n")


def test_records_of_the_seed_body():
    accounts = parse_records(
        [
            {"mailbox_email": "jim@example.com", "display_name": "Jimothy H"},
            {"mailbox_email": "michael@example.com", "display_name": None},
        ]
    )
    assert [a.name for a in accounts] == ["Jimothy H", ""]
    with pytest.raises(AccountsInvalid) as excinfo:
        parse_records(
            [
                {"mailbox_email": 5},
                "nope",
                {"display_name": "x"},
                {"mailbox_email": "ok@example.com", "display_name": 7},
            ]
        )
    assert excinfo.value.problems == [
        "account 1: mailbox_email must be a string",
        "account 2: missing mailbox_email",
        "account 3: missing mailbox_email",
        "account 4: display_name must be a string",
    ]


def graph_credential(ws, name, status):
    return Credential.objects.create(
        workspace=ws, name=name, kind="graph_app_only", tenant_id="t", client_id=name, status=status
    )


def test_credential_resolution(ws_a, ws_b):
    with pytest.raises(FleetError) as excinfo:
        resolve_credential(ws_a, None)
    assert excinfo.value.code == "INVALID_CREDENTIAL_ID"

    only = graph_credential(ws_a, "only", "valid")
    graph_credential(ws_a, "unverified", "unverified")
    assert resolve_credential(ws_a, None) == only

    second = graph_credential(ws_a, "second", "valid")
    with pytest.raises(FleetError, match="several valid"):
        resolve_credential(ws_a, None)
    assert resolve_credential(ws_a, second.pk) == second

    bad = graph_credential(ws_a, "bad", "invalid")
    other = graph_credential(ws_b, "other", "valid")
    oauth = Credential.objects.create(workspace=ws_a, name="o", kind="oauth_app", client_id="o")
    for pk in (bad.pk, other.pk, oauth.pk, 999999):
        with pytest.raises(FleetError) as excinfo:
            resolve_credential(ws_a, pk)
        assert excinfo.value.code == "INVALID_CREDENTIAL_ID"
