"""A digest survives a worker killed with SIGKILL while it sends: real `db_worker` processes, a
real `run_periodic` (the reaper), a real SMTP server that has the e-mail but holds back its
answer. The digest is sent again by another worker (one extra copy: at most once more per
crash, as fleet/alerts.py says), and its items go in no other digest."""

from __future__ import annotations

import pytest

from fleet import errors
from fleet.models import AlertDigest, AlertItem, Mailbox, Membership, Role
from tests.conftest import make_user
from tests.smtp_sink import SmtpSink

# PostgreSQL only, transactional (pytestmark), with its worker processes (fleet).
from tests.test_job_recovery import TAKEOVER_LIMIT, fleet, pytestmark, wait_for  # noqa: F401


@pytest.fixture
def stalling_smtp(monkeypatch):
    with SmtpSink(stall_first=60) as sink:
        for name, value in {
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": sink.host,
            "EMAIL_PORT": str(sink.port),
            "EMAIL_TIMEOUT": "120",
        }.items():
            monkeypatch.setenv(name, value)
        yield sink


def test_a_worker_killed_mid_send_costs_one_extra_copy_and_loses_nothing(
    fleet, stalling_smtp, ws_a
):
    manager = make_user("mona", email="mona@agency.example")
    Membership.objects.create(user=manager, workspace=ws_a, role=Role.MANAGER)
    Mailbox.objects.create(
        workspace=ws_a, email="ann@alpha.example", auth_method="app_password", status="active"
    ).set_status("error", errors.INVALID_CREDENTIALS)

    fleet.worker("doomed")
    fleet.reaper()  # run_periodic: the digests at once, then the reaper every second
    wait_for(lambda: stalling_smtp.messages, 60, "the first copy at the SMTP server")
    digest = AlertDigest.objects.get()
    assert digest.lease_owner  # held by the doomed worker, which waits for the 250

    fleet.kill("doomed")
    fleet.worker("survivor")
    wait_for(
        lambda: AlertDigest.objects.filter(pk=digest.pk, status="sent").exists(),
        TAKEOVER_LIMIT + 30,
        "the digest sent again by the survivor",
    )
    assert [m.rcpt_tos for m in stalling_smtp.messages] == [["mona@agency.example"]] * 2
    digest.refresh_from_db()
    assert (digest.attempts, digest.lease_reclaims, digest.lease_owner) == (2, 1, "")
    assert list(AlertItem.objects.values_list("digest_id", flat=True)) == [digest.pk]
    assert AlertDigest.objects.count() == 1
