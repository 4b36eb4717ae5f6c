"""Checking an app registration against Microsoft and recording the outcome on its row."""

from __future__ import annotations

from django.utils import timezone

from fleet.errors import FleetError
from fleet.microsoft import identity
from fleet.models import Credential


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
