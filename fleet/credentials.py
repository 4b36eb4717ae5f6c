"""Checking an app registration against Microsoft and recording the outcome on its row.

A verification asked for (`request_verification`) is marked on the credential's row
(`verification_requested_at`) until its outcome is recorded; the task doing it holds the row's
lease (fleet/leases.py). If its worker dies, or Microsoft could not be reached, the reaper
(`reclaim_expired`) queues it again."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import F
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from fleet import leases
from fleet.errors import FleetError
from fleet.microsoft import identity
from fleet.models import Credential


def request_verification(credential: Credential) -> None:
    """Have the credential checked with Microsoft by a worker, once the transaction commits."""
    from fleet.tasks import enqueue_on_commit, verify_credential

    Credential.objects.filter(pk=credential.pk).update(verification_requested_at=timezone.now())
    enqueue_on_commit(verify_credential, credential.pk)


def verify_requested(credential_id: int, owner: str) -> str:
    """The task: take the credential's lease, verify, record, give the lease back. Returns the
    status (or why nothing was done)."""
    # A lease a dead worker left is the reaper's to take back (it notes the dead task).
    if not leases.claim(
        Credential.objects.filter(pk=credential_id, lease_owner=""),
        owner,
        verification_requested_at=Coalesce("verification_requested_at", Now()),
    ):
        return "busy" if Credential.objects.filter(pk=credential_id).exists() else "gone"
    credential = Credential.objects.get(pk=credential_id)
    try:
        with leases.Heartbeat(Credential, credential.pk, owner):
            status = verify(credential).status
    except Exception:
        # Microsoft could not be reached: the request stays, and the reaper asks again.
        leases.release(Credential, credential.pk, owner)
        raise
    leases.release(Credential, credential.pk, owner, verification_requested_at=None)
    return status


def verify(credential: Credential) -> Credential:
    """Get an app-only Graph token (client credentials): `valid`, or `invalid` with the error.
    A transient failure leaves the status as it was and is raised for the task to retry."""
    try:
        identity.app_only_token(credential)
    except FleetError as failure:
        if not failure.error.permanent:
            raise
        return record_outcome(credential, failure)
    return record_outcome(credential, None)


def record_outcome(credential: Credential, failure: FleetError | None) -> Credential:
    """`valid` after a token was had, `invalid` with the catalogue code after a permanent
    refusal (bulk adds record theirs too, so the admin shows why a run failed)."""
    if failure is not None:
        credential.status = Credential.Status.INVALID
        credential.last_error = failure.code
        credential.last_error_message = failure.message
    else:
        credential.status = Credential.Status.VALID
        credential.last_error = credential.last_error_message = ""
    credential.last_verified_at = timezone.now()
    credential.save(
        update_fields=["status", "last_error", "last_error_message", "last_verified_at"]
    )
    return credential


def reclaim_expired(now: datetime) -> int:
    """The reaper's part: a verification whose worker died (lease expired) or that is still asked
    for with no task waiting (its task lost, or Microsoft unreachable last time) is queued again."""
    from fleet.tasks import enqueue_on_commit, verify_credential

    requeued = set()
    expired = Credential.objects.filter(lease_expires_at__lt=now).exclude(lease_owner="")
    for pk, owner in expired.values_list("pk", "lease_owner"):
        taken = Credential.objects.filter(
            pk=pk, lease_owner=owner, lease_expires_at__lt=now
        ).update(lease_owner="", lease_expires_at=None, lease_reclaims=F("lease_reclaims") + 1)
        if taken:
            leases.fail_task_rows(
                [owner],
                f"Its worker stopped while verifying credential {pk}; Fleet's reaper queued "
                "the verification again.",
            )
            enqueue_on_commit(verify_credential, pk)
            requeued.add(pk)
    asked = Credential.objects.filter(
        lease_owner="",
        verification_requested_at__lt=now - timedelta(seconds=leases.lease_seconds()),
    ).exclude(pk__in=requeued)
    for pk in asked.values_list("pk", flat=True):
        locked = Credential.objects.filter(pk=pk, lease_owner="")
        if leases.requeue_if_lost(locked, verify_credential, pk, now=now):
            requeued.add(pk)
    return len(requeued)
