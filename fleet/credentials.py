"""Checking an app registration against Microsoft and recording the outcome on its row.

*Verify* gets an app-only Graph token, then finds out which application permissions the app
really holds, by calls that need each one (Microsoft asks clients to treat access tokens as
opaque: https://learn.microsoft.com/entra/identity-platform/access-tokens):

- `User.Read.All`: `GET /users?$top=1&$select=id,mail,userPrincipalName`
- `MailboxSettings.Read`: that user's (or a workspace mailbox's) `mailboxSettings`
- `SMTP.SendAsApp`, `IMAP.AccessAsApp`: an app-only XOAUTH2 sign-in to that mailbox over SMTP and
  IMAP. Exchange answers a missing role and a missing mailbox grant alike, so when the sign-in is
  refused the token's `roles` claim, where it is a readable JWT, tells which of the two it was.

A missing Graph permission makes the credential `invalid` (APP_PERMISSION_MISSING naming it); a
missing Exchange one is a warning on the credential (only app-only SMTP/IMAP and the move need
them).

A verification asked for (`request_verification`) is marked on the credential's row
(`verification_requested_at`) until its outcome is recorded; the task doing it holds the row's
lease (fleet/leases.py). If its worker dies, or Microsoft could not be reached, the reaper
(`reclaim_expired`) queues it again."""

from __future__ import annotations

import base64
import json
import logging
from datetime import datetime, timedelta

from django.db.models import F
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from fleet import errors, leases, mailproto
from fleet.errors import FleetError
from fleet.microsoft import graph, identity
from fleet.microsoft.http import MicrosoftError
from fleet.models import Credential, Mailbox

log = logging.getLogger(__name__)

DENIED = {"Authorization_RequestDenied"}


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
    """Get an app-only Graph token (client credentials) and check the app's permissions: `valid`,
    or `invalid` with the error. A transient failure leaves the status as it was and is raised
    for the task to retry."""
    graph.forget_token(credential)
    graph.forget_token(credential, graph.EXCHANGE)
    try:
        graph.app_token(credential)
    except FleetError as failure:
        if not failure.error.permanent:
            raise
        return record_outcome(credential, failure)
    if credential.kind != Credential.Kind.GRAPH_APP_ONLY:
        return record_outcome(credential, None)
    credential.permissions = check_permissions(credential)
    credential.tenant_guid = tenant_guid(credential) or credential.tenant_guid
    credential.save(update_fields=["permissions", "tenant_guid"])
    missing = [p for p in Credential.GRAPH_PERMISSIONS if credential.permissions.get(p) is False]
    if missing:
        return record_outcome(
            credential,
            FleetError(
                errors.APP_PERMISSION_MISSING,
                f"The app lacks the Microsoft Graph application permission {', '.join(missing)} "
                "(admin consent needed).",
            ),
        )
    outcome = record_outcome(credential, None)
    from fleet.move import refresh_domain_tenants

    try:  # what the move plan groups by; a failure here is not the credential's
        refresh_domain_tenants(credential.workspace)
    except (FleetError, MicrosoftError) as exc:
        log.warning(
            "domain tenants of workspace %s not refreshed: %s", credential.workspace_id, exc
        )
    return outcome


def tenant_guid(credential: Credential) -> str:
    """The credential's tenant as a GUID (its tenant_id may be a verified domain)."""
    try:
        return identity.tenant_of_domain(credential.tenant_id).tenant_id
    except MicrosoftError:
        return ""


def check_permissions(credential: Credential) -> dict:
    """{permission: True | False | None}, None where the call that needs it could not be made,
    and `checked_with`: the mailbox the mailbox-level checks used."""
    client = graph.GraphClient(credential)
    found: dict = dict.fromkeys((*Credential.GRAPH_PERMISSIONS, *Credential.EXCHANGE_PERMISSIONS))
    sample = ""
    user_id = ""
    try:
        page = client.get("/users?$top=1&$select=id,mail,userPrincipalName") or {}
        found["User.Read.All"] = True
        first = (page.get("value") or [{}])[0]
        user_id = first.get("id", "")
        sample = (first.get("mail") or first.get("userPrincipalName") or "").lower()
    except MicrosoftError as error:
        found["User.Read.All"] = False if error.code in DENIED or error.status == 403 else None
    if not sample:  # no user list: one of the workspace's Microsoft 365 mailboxes
        sample = workspace_sample(credential)
        user_id = user_id or sample
    if user_id:
        try:
            client.get(f"{graph.user_path(user_id)}/mailboxSettings")
            found["MailboxSettings.Read"] = True
        except MicrosoftError as error:
            if error.code in DENIED:
                found["MailboxSettings.Read"] = False
            elif error.code in graph.MAILBOX_NOT_ENABLED_CODES or error.status == 404:
                found["MailboxSettings.Read"] = True  # allowed to ask; that user has no mailbox
            # ErrorAccessDenied: an access policy leaves this mailbox out; cannot tell.
    if sample:
        found.update(exchange_permissions(credential, sample))
    found["checked_with"] = sample
    return found


def workspace_sample(credential: Credential) -> str:
    return (
        Mailbox.objects.filter(workspace_id=credential.workspace_id)
        .exclude(provider=Mailbox.Provider.OUTLOOK_COM)
        .order_by("pk")
        .values_list("email", flat=True)
        .first()
        or ""
    ).lower()


def exchange_permissions(credential: Credential, address: str) -> dict:
    """SMTP.SendAsApp and IMAP.AccessAsApp by an app-only XOAUTH2 sign-in to `address`."""
    from fleet.providers import server_settings

    try:
        token = graph.app_token(credential, graph.EXCHANGE)
    except FleetError:
        return {}
    readable, hinted = roles_hint(token)
    if readable and not hinted & set(Credential.EXCHANGE_PERMISSIONS):
        # The token itself says the app holds neither role: Exchange would refuse the sign-in.
        return dict.fromkeys(Credential.EXCHANGE_PERMISSIONS, False)
    known = (
        Mailbox.objects.filter(workspace_id=credential.workspace_id, email__iexact=address)
        .values(
            "smtp_host", "smtp_port", "smtp_security", "imap_host", "imap_port", "imap_security"
        )
        .first()
    )
    where = known or server_settings(address)
    login = mailproto.Login(address, access_token=token, app_only=True)
    checks = {
        "SMTP.SendAsApp": lambda: mailproto.check_smtp(
            mailproto.Server(where["smtp_host"], where["smtp_port"], where["smtp_security"]), login
        ),
        "IMAP.AccessAsApp": lambda: mailproto.check_imap(
            mailproto.Server(where["imap_host"], where["imap_port"], where["imap_security"]), login
        ),
    }
    found = {}
    for permission, sign_in in checks.items():
        try:
            sign_in()
            found[permission] = True
        except mailproto.MailCheckError as exc:
            if exc.error is errors.APP_NOT_GRANTED_ON_MAILBOX:
                # Refused: the role is missing, or only this mailbox's grant is.
                found[permission] = permission in hinted
            else:
                found[permission] = None  # the server could not be asked
    return found


def roles_hint(token: str) -> tuple[bool, set[str]]:
    """(readable, roles): the `roles` claim of a token that happens to be a readable JWT. A hint
    only: Microsoft may make its tokens unreadable at any time, and then the calls decide."""
    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError, UnicodeDecodeError):
        return False, set()
    if not isinstance(claims, dict):
        return False, set()
    roles = claims.get("roles")
    return True, {r for r in roles if isinstance(r, str)} if isinstance(roles, list) else set()


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
