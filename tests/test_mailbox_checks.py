"""Connection tests of mailboxes against the loopback servers: outcome, code, event, and the
task run by a real db_worker process after an import."""

import io

import pytest
from django_tasks_db.models import DBTaskResult

from fleet import imports
from fleet.mailbox_checks import check_mailboxes
from fleet.models import Mailbox, MailboxEvent
from sandbox import mailservers as ms
from tests.mail_fixtures import mail, point_at, servers  # noqa: F401
from tests.test_tasks import run_workers


def make(ws, email, **extra):
    box = Mailbox.objects.create(
        workspace=ws, email=email, auth_method=extra.pop("auth_method", "app_password"), **extra
    )
    return box


@pytest.mark.django_db
def test_outcomes_codes_and_events(mail, ws_a, personas):
    mail.add("ok@contoso.com", "pw")
    mail.add("off@contoso.com", "pw", smtp_reply=ms.SMTP_AUTH_DISABLED)
    mail.add("basic@contoso.com", "pw", smtp_reply=ms.SMTP_BASIC_AUTH_UNSUPPORTED)
    mail.add("imap@contoso.com", "pw", imap_reply=ms.IMAP_AUTHENTICATE_FAILED)
    boxes = {
        e: point_at(make(ws_a, e, password="pw"), mail)
        for e in ("ok@contoso.com", "off@contoso.com", "basic@contoso.com", "imap@contoso.com")
    }
    boxes["wrong@contoso.com"] = point_at(make(ws_a, "wrong@contoso.com", password="nope"), mail)
    boxes["none@contoso.com"] = point_at(make(ws_a, "none@contoso.com"), mail)
    refused = make(
        ws_a,
        "refused@contoso.com",
        password="pw",
        smtp_host="127.0.0.1",
        smtp_port=ms.refused_port(),
    )
    disabled = point_at(make(ws_a, "dis@contoso.com", password="pw", status="disabled"), mail)

    outcome = check_mailboxes(
        [b.pk for b in boxes.values()] + [refused.pk, disabled.pk], actor=personas["alice"]
    )
    assert outcome == {"active": 1, "error": 6}
    expected = {
        "ok@contoso.com": ("active", ""),
        "off@contoso.com": ("error", "SMTP_AUTH_DISABLED"),
        "basic@contoso.com": ("error", "BASIC_AUTH_DISABLED"),
        "imap@contoso.com": ("error", "INVALID_CREDENTIALS"),
        "wrong@contoso.com": ("error", "INVALID_CREDENTIALS"),
        "none@contoso.com": ("error", "NO_MAIL_CREDENTIAL"),
        "refused@contoso.com": ("error", "CONNECTION_REFUSED"),
        "dis@contoso.com": ("disabled", ""),
    }
    got = {b.email: (b.status, b.error_code) for b in Mailbox.objects.all()}
    assert got == expected
    off = Mailbox.objects.get(email="off@contoso.com")
    assert "5.7.139" in off.error_message and off.last_checked_at is not None
    # One connection-test event per tested mailbox; a status event where the status changed.
    tests = MailboxEvent.objects.filter(kind="connection_test")
    assert tests.count() == 7 and all(e.actor == personas["alice"] for e in tests)
    assert tests.get(email="off@contoso.com").error_code == "SMTP_AUTH_DISABLED"
    assert MailboxEvent.objects.filter(kind="status", to_status="error").count() == 6

    # A second run with the same outcome adds a test event but no status change.
    check_mailboxes([boxes["ok@contoso.com"].pk])
    ok_events = MailboxEvent.objects.filter(email="ok@contoso.com")
    kinds = sorted(ok_events.values_list("kind", flat=True))
    assert kinds == ["connection_test", "connection_test", "status"]


@pytest.mark.django_db
def test_oauth_mailbox_uses_its_access_token(mail, ws_a):
    mail.add("oa@contoso.com")
    good = point_at(
        make(ws_a, "oa@contoso.com", auth_method="oauth", access_token="token-for-oa@contoso.com"),
        mail,
    )
    assert check_mailboxes([good.pk]) == {"active": 1}


@pytest.mark.django_db(transaction=True)
def test_import_then_worker_tests_every_mailbox(mail, ws_a, personas):
    mail.add("ann@contoso.com", "pw-ann")
    mail.add("bob@contoso.com", "pw-bob", smtp_reply=ms.SMTP_AUTH_DISABLED)
    result = imports.import_mailboxes(
        ws_a,
        io.BytesIO(b"email,password\nann@contoso.com,pw-ann\nbob@contoso.com,pw-bob\n"),
        user=personas["alice"],
    )
    # The demo points imported mailboxes at Microsoft; here at the loopback servers.
    for box in result.batch.mailboxes.all():
        point_at(box, mail)
    assert result.batch.progress()["pending"] == 2
    run_workers(1)
    assert DBTaskResult.objects.get().status == "SUCCESSFUL"
    assert result.batch.progress() == {
        "total": 2,
        "tested": 2,
        "active": 1,
        "failed": 1,
        "pending": 0,
    }
    assert Mailbox.objects.get(email="bob@contoso.com").error_code == "SMTP_AUTH_DISABLED"


@pytest.mark.django_db(transaction=True)
def test_batch_goes_on_when_mailboxes_are_deleted_disabled_or_unreadable(mail, ws_a, personas):
    """A real worker tests an import one mailbox at a time against slow servers; meanwhile the
    test deletes one mailbox and disables another. The task ends SUCCESSFUL and every other
    mailbox of the batch gets its outcome (the unreadable one: SECRET_UNREADABLE)."""
    import os
    import subprocess
    import sys
    import time

    from cryptography.fernet import Fernet

    from fleet.secrets import Ciphertext
    from tests.test_tasks import ROOT, database_url

    names = [f"user{i}@contoso.com" for i in range(6)]
    for name in names:
        mail.add(name, "pw")
    body = "email,password\n" + "".join(f"{n},pw\n" for n in names)
    result = imports.import_mailboxes(ws_a, io.BytesIO(body.encode()), user=personas["alice"])
    boxes = {b.email: point_at(b, mail) for b in result.batch.mailboxes.all()}
    # Encrypted under a key Fleet does not hold: reads as unreadable.
    foreign = Fernet(Fernet.generate_key()).encrypt(b"pw").decode()
    Mailbox.objects.filter(pk=boxes[names[1]].pk).update(password=Ciphertext(foreign))
    mail.reply_delay = 0.1  # ~1 s per mailbox: the batch is still running when we act

    env = {**os.environ, "DATABASE_URL": database_url(), "HEALTH_CHECK_CONCURRENCY": "1"}
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--batch", "--interval", "0",
         "--no-startup-delay", "--worker-id", "mid-batch"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while result.batch.progress()["tested"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pending = result.batch.mailboxes.filter(status="pending").order_by("-pk")
        untested = list(pending.values_list("email", flat=True))
        assert len(untested) >= 2, "the batch finished before the test could act"
        gone, paused = untested[0], untested[1]
        Mailbox.objects.filter(email=gone).delete()
        Mailbox.objects.filter(email=paused).update(status="disabled")
        _, err = worker.communicate(timeout=120)
    finally:
        worker.kill() if worker.poll() is None else None
    assert worker.returncode == 0, err
    task = DBTaskResult.objects.get()
    assert task.status == "SUCCESSFUL", task.traceback
    assert task.return_value.get("deleted") == 1
    got = {b.email: (b.status, b.error_code) for b in result.batch.mailboxes.all()}
    assert gone not in got and got[paused] == ("disabled", "")
    assert got[names[1]] == ("error", "SECRET_UNREADABLE")
    assert result.batch.progress()["pending"] == 0
    active = sorted(e for e, (status, _) in got.items() if status == "active")
    assert active == sorted(set(names) - {gone, paused, names[1]})


@pytest.mark.django_db
def test_mailbox_with_a_utf8_app_password_passes_its_connection_test(mail, ws_a):
    mail.add("ünï@contoso.com", "ünïcødé-Pässwörd")
    box = point_at(make(ws_a, "ünï@contoso.com", password="ünïcødé-Pässwörd"), mail)
    assert check_mailboxes([box.pk]) == {"active": 1}
    box.refresh_from_db()
    assert (box.status, box.error_code) == ("active", "")
