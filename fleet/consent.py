"""Consent requests and the Microsoft OAuth connect flows, for the admin now and the JSON API later.

A consent request tracks one consent that has to happen, `queued → pending → processing →
completed` (or `failed`, `cancelled`, `expired`):

- `user`: a mailbox owner's delegated consent through our OAuth app. Its link (`consent_link`) is
  a Fleet URL that starts a fresh sign-in each time it is opened (`begin`), so the link can be
  handed out for days while each OAuth `state` lives 15 minutes and is good once.
- `admin`: a tenant administrator's consent for an app registration (admin-consent endpoint).
- `external`: a third party's consent URL (e.g. a sequencer's), completed by a person by hand.

`complete` is the OAuth callback: it claims the state, redeems the code through msal (PKCE and
nonce checked there), checks the signed-in address, stores the tokens and records the outcome.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from fleet import audit, errors, health, mailboxes
from fleet.credentials import request_verification
from fleet.errors import FleetError
from fleet.microsoft import identity
from fleet.models import ConsentRequest, Credential, Mailbox, WebhookDelivery, Workspace
from fleet.tasks import enqueue_on_commit, finish_consent_move
from fleet.text import storable

log = logging.getLogger(__name__)


@dataclass
class ConsentResult:
    """What the person who consented is told on the result page."""

    consent_request: ConsentRequest | None = None
    mailbox: Mailbox | None = None
    error: FleetError | None = None
    admin_consent_link: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


# --- set-up -----------------------------------------------------------------------------------
def oauth_credential(workspace: Workspace) -> Credential:
    """The workspace's OAuth app (the newest usable one), or MICROSOFT_OAUTH_NOT_CONFIGURED."""
    credential = (
        Credential.objects.filter(workspace=workspace, kind=Credential.Kind.OAUTH_APP)
        .exclude(status=Credential.Status.INVALID)
        .exclude(client_id="")
        .order_by("-created_at")
        .first()
    )
    if credential is None:
        raise FleetError(errors.MICROSOFT_OAUTH_NOT_CONFIGURED)
    return credential


def redirect_uri(credential: Credential) -> str:
    """The callback registered on the app (Entra ID → Authentication → Redirect URIs)."""
    return credential.redirect_uri or f"{settings.FLEET_BASE_URL}{reverse('oauth_callback')}"


def consent_link(consent_request: ConsentRequest, base_url: str | None = None) -> str:
    """The link to hand out: Fleet's start page for user/admin kinds, the third party's URL for
    external ones."""
    if consent_request.kind == ConsentRequest.Kind.EXTERNAL:
        return consent_request.consent_url
    base = (base_url or settings.FLEET_BASE_URL).rstrip("/")
    return f"{base}{reverse('consent_start', args=[consent_request.uid])}"


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


# --- initiate ---------------------------------------------------------------------------------
def find_mailbox(workspace: Workspace, *, mailbox_uid=None, username="", domain="") -> Mailbox:
    """A mailbox of the workspace by uid, or by username + domain (InboxKit's consent-request API)."""
    mailboxes = Mailbox.objects.filter(workspace=workspace)
    if mailbox_uid:
        mailbox = mailboxes.filter(uid=mailbox_uid).first()
    elif username and domain:
        mailbox = mailboxes.filter(email__iexact=f"{username.strip()}@{domain.strip()}").first()
    else:
        raise FleetError(errors.VALIDATION_ERROR, "Give mailbox_uid, or username and domain")
    if mailbox is None:
        raise FleetError(errors.NOT_FOUND, "No such mailbox in this workspace")
    return mailbox


def initiate(workspace: Workspace, *, base_url: str | None = None, **fields: Any) -> ConsentRequest:
    """Create a consent request in `queued` (the fields are prepare()'s). Raises FleetError
    (VALIDATION_ERROR, NOT_FOUND, MICROSOFT_OAUTH_NOT_CONFIGURED, INVALID_CREDENTIAL_ID) and then
    creates nothing."""
    return record(prepare(workspace, **fields), base_url=base_url)


def prepare(
    workspace: Workspace,
    *,
    kind: str = ConsentRequest.Kind.USER,
    mailbox_uid=None,
    username: str = "",
    domain: str = "",
    consent_url: str = "",
    request_data: dict | None = None,
    credential: Credential | None = None,
    new_mailbox: bool = False,
    actor=None,
) -> ConsentRequest:
    """Check a new consent request and build it, unsaved: writes nothing (a form's clean() may
    call it). Raises FleetError as initiate() does."""
    if kind not in ConsentRequest.Kind.values:
        raise FleetError(
            errors.VALIDATION_ERROR, f"kind must be one of {ConsentRequest.Kind.values}"
        )
    if request_data is not None and not isinstance(request_data, dict):
        raise FleetError(errors.VALIDATION_ERROR, "request_data must be an object")
    mailbox = None
    if not new_mailbox and (kind != ConsentRequest.Kind.ADMIN):
        mailbox = find_mailbox(workspace, mailbox_uid=mailbox_uid, username=username, domain=domain)
    if kind == ConsentRequest.Kind.USER:
        credential = oauth_credential(workspace)
    elif kind == ConsentRequest.Kind.ADMIN:
        if credential is None or credential.workspace_id != workspace.pk:
            raise FleetError(
                errors.INVALID_CREDENTIAL_ID, "Admin consent needs a credential of this workspace"
            )
    elif not consent_url.startswith("https://"):
        raise FleetError(errors.VALIDATION_ERROR, "consent_url must be an https:// URL")
    return ConsentRequest(
        workspace=workspace,
        kind=kind,
        mailbox=mailbox,
        credential=credential,
        username=username if mailbox is None else "",
        domain=domain if mailbox is None else "",
        consent_url=consent_url,
        request_data=request_data or {},
        created_by=actor,
    )


def record(request: ConsentRequest, *, base_url: str | None = None) -> ConsentRequest:
    """Save a prepared request in `queued`, valid for CONSENT_REQUEST_TTL_DAYS, with the link
    people open (external requests keep their own consent_url)."""
    request.expires_at = timezone.now() + timedelta(days=settings.CONSENT_REQUEST_TTL_DAYS)
    request.save()
    if request.kind != ConsentRequest.Kind.EXTERNAL:
        request.consent_url = consent_link(request, base_url)
        request.save(update_fields=["consent_url"])
    audit.record(
        "consentrequest.created", request, actor=request.created_by,
        changes=audit.set_fields(
            request, ["kind", "mailbox_id", "username", "domain", "credential_id", "consent_url"]
        ),
    )
    return request


# --- the OAuth round trip ---------------------------------------------------------------------
def begin(consent_request: ConsentRequest, *, prompt: str | None = None) -> str:
    """Start a sign-in for this request: the Microsoft URL to send the browser to. A failed user
    consent may be tried again while the request has not expired."""
    cr = consent_request
    now = timezone.now()
    retryable = cr.status == ConsentRequest.Status.FAILED
    if (
        cr.kind == ConsentRequest.Kind.EXTERNAL
        or not (cr.is_open or retryable)
        or (cr.expires_at and cr.expires_at <= now)
    ):
        raise FleetError(errors.CONSENT_REQUEST_CLOSED)
    credential = cr.credential
    if credential is None:
        raise FleetError(errors.MICROSOFT_OAUTH_NOT_CONFIGURED)
    callback = redirect_uri(credential)
    if cr.kind == ConsentRequest.Kind.ADMIN:
        state = secrets.token_urlsafe(32)
        scopes = (
            identity.GRAPH_APP_SCOPES
            if credential.kind == Credential.Kind.GRAPH_APP_ONLY
            else identity.OUTLOOK_SCOPES
        )
        url = identity.admin_consent_url(credential, callback, state, scopes)
        flow = {"state": state, "admin": True}
    else:
        hint = cr.mailbox.email if cr.mailbox_id else ""
        flow = identity.start_user_flow(credential, callback, login_hint=hint, prompt=prompt)
        url = flow["auth_uri"]
    with transaction.atomic():
        cr.set_status(ConsentRequest.Status.PENDING)
        cr.oauth_state = state_hash(flow["state"])
        cr.state_expires_at = now + timedelta(seconds=settings.OAUTH_STATE_TTL)
        cr.auth_flow = json.dumps(flow)
        cr.save(update_fields=["oauth_state", "state_expires_at", "auth_flow", "updated_at"])
    return url


def complete(params: dict) -> ConsentResult:
    """The OAuth callback (user and admin consent). Never raises: the outcome says what
    happened, for the result page."""
    state = params.get("state") or ""
    if not state:
        return ConsentResult(error=FleetError(errors.STATE_INVALID, "The answer carries no state"))
    with transaction.atomic():
        cr = (
            ConsentRequest.objects.select_for_update(of=("self",))
            .select_related("workspace", "credential", "mailbox")
            .filter(oauth_state=state_hash(state))
            .first()
        )
        if cr is None:  # forged, or already used (single use: the state is cleared below)
            return ConsentResult(error=FleetError(errors.STATE_INVALID))
        flow = json.loads(str(cr.auth_flow) or "{}")
        expired = cr.state_expires_at is None or cr.state_expires_at <= timezone.now()
        cr.oauth_state, cr.auth_flow, cr.state_expires_at = None, "", None
        cr.save(update_fields=["oauth_state", "auth_flow", "state_expires_at", "updated_at"])
        if expired:
            # The request stays open: opening its link again starts a fresh sign-in.
            return ConsentResult(cr, error=FleetError(errors.STATE_EXPIRED))
        if not cr.is_open:
            return ConsentResult(cr, error=FleetError(errors.CONSENT_REQUEST_CLOSED))
        cr.set_status(ConsentRequest.Status.PROCESSING)
    try:
        if flow.get("admin"):
            return _complete_admin(cr, params)
        return _complete_user(cr, flow, params)
    except Exception as exc:
        # Whatever went wrong, the request leaves `processing`: FAILED, with a message that can
        # be stored (Microsoft's error_description is quoted and comes from the browser).
        if isinstance(exc, FleetError):
            failure = FleetError(exc.error, storable(exc.message))
        else:
            log.exception("OAuth callback of consent request %s crashed", cr.pk)
            failure = FleetError(errors.INTERNAL_ERROR)
        cr.set_status(ConsentRequest.Status.FAILED, failure.error, failure.message)
        outcome = ConsentResult(cr, mailbox=cr.mailbox, error=failure)
        if failure.error is errors.ADMIN_APPROVAL_REQUIRED and cr.credential_id:
            outcome.admin_consent_link = consent_link(admin_request_for(cr.credential))
        return outcome


def _complete_user(cr: ConsentRequest, flow: dict, params: dict) -> ConsentResult:
    signed = identity.finish_user_flow(cr.credential, flow, dict(params))
    mailbox = cr.mailbox
    # The address this consent is for: a known mailbox's, or the one the API caller announced
    # for a new mailbox (Mailivery's `email`).
    expected = mailbox.email if mailbox is not None else cr.request_data.get("email", "")
    if expected and expected.lower() != signed.username.lower():
        raise FleetError(
            errors.MAILBOX_MISMATCH,
            f"You signed in as {signed.username}, but this link connects {expected}. "
            "Nothing was stored.",
        )
    with transaction.atomic():
        if mailbox is None:
            mailbox = Mailbox.objects.filter(
                workspace=cr.workspace, email__iexact=signed.username
            ).first()
        created = mailbox is None
        if created:
            mailbox = mailboxes.new(
                cr.workspace,
                signed.username,
                Mailbox.AuthMethod.OAUTH,
                tenant_id=signed.tenant_id,
                status=Mailbox.Status.PENDING,
                needs_approval=True,
            )
        mailbox.auth_method = Mailbox.AuthMethod.OAUTH
        if created:
            # Mailivery's Microsoft connect API: the name and warmup settings the caller gave when asking for the link.
            wanted = cr.request_data
            mailbox.display_name = wanted.get("display_name") or ""
            if wanted.get("email_per_day") is not None:
                mailbox.warmup_daily_volume = wanted["email_per_day"]
            if wanted.get("response_rate") is not None:
                mailbox.warmup_response_rate = wanted["response_rate"]
        mailbox.display_name = mailbox.display_name or signed.display_name
        mailbox.credential = cr.credential
        mailbox.graph_user_id = signed.object_id
        mailbox.refresh_token = signed.refresh_token
        mailbox.access_token = signed.access_token
        mailbox.token_expires_at = signed.expires_at
        mailbox.refresh_token_used_at = timezone.now()
        mailbox.token_keepalive_due_at = identity.next_keepalive(mailbox.refresh_token_used_at)
        mailbox.save()
        if created:
            # Mailivery's Microsoft connect API: an unannounced mailbox waits for a manager to confirm it was expected.
            mailbox.set_status(
                Mailbox.Status.PENDING,
                message=f"Connected by Microsoft OAuth consent as {signed.username}; "
                "waiting for a manager's approval",
            )
            WebhookDelivery.objects.emit(
                cr.workspace, "mailbox.pending", {"mailbox": mailbox.webhook_data()}
            )
        else:
            mailbox.set_status(
                Mailbox.Status.ACTIVE,
                message=f"Connected by Microsoft OAuth consent as {signed.username}",
            )
        cr.mailbox = mailbox
        cr.save(update_fields=["mailbox", "updated_at"])
        cr.set_status(ConsentRequest.Status.COMPLETED)
        audit.record(
            "mailbox.created" if created else "mailbox.connected", mailbox, actor=None,
            changes=audit.set_fields(mailbox, [*mailboxes.CREATED_FIELDS, "access_token"]),
        )
        audit.record(
            "consentrequest.completed", cr, actor=None,
            changes={"status": {"before": "processing", "after": cr.status}},
        )
        after_consent(mailbox, cr)
    return ConsentResult(cr, mailbox=mailbox)


def _complete_admin(cr: ConsentRequest, params: dict) -> ConsentResult:
    if params.get("error"):
        raise identity.error_for(params)
    if params.get("admin_consent", "").lower() != "true":
        raise FleetError(errors.MICROSOFT_OAUTH_FAILED, "The answer does not confirm admin consent")
    with transaction.atomic():
        credential = Credential.objects.select_for_update().get(pk=cr.credential_id)
        credential.admin_consented_at = timezone.now()
        tenant = params.get("tenant", "")
        if (
            tenant
            and credential.tenant_id in ("organizations", "common")
            and credential.kind == Credential.Kind.GRAPH_APP_ONLY
        ):
            # App-only tokens are per tenant: the tenant that consented is the one to use.
            credential.tenant_id = tenant
        credential.save(update_fields=["admin_consented_at", "tenant_id"])
        cr.request_data = {**cr.request_data, "tenant": tenant}
        cr.save(update_fields=["request_data", "updated_at"])
        cr.set_status(ConsentRequest.Status.COMPLETED)
        audit.record(
            "credential.admin_consented", credential, actor=None,
            changes={"tenant_id": {"before": None, "after": credential.tenant_id}},
        )
        if credential.kind == Credential.Kind.GRAPH_APP_ONLY:
            request_verification(credential)
    return ConsentResult(cr)


def admin_request_for(credential: Credential) -> ConsentRequest:
    """An open admin-consent request for this credential (reused, not duplicated)."""
    open_one = (
        ConsentRequest.objects.filter(
            credential=credential,
            kind=ConsentRequest.Kind.ADMIN,
            status__in=ConsentRequest.OPEN_STATUSES,
            expires_at__gt=timezone.now(),
        )
        .order_by("-created_at")
        .first()
    )
    return open_one or initiate(
        credential.workspace, kind=ConsentRequest.Kind.ADMIN, credential=credential
    )


def after_consent(mailbox: Mailbox, consent_request: ConsentRequest | None = None) -> None:
    """Test the new grant over SMTP and IMAP with XOAUTH2 once the consent is committed. A
    consent asked for by a move off Basic auth finishes that move (fleet/move.py), which wipes
    the app password only after the test passed."""
    move_item = (consent_request.request_data or {}).get("move_item") if consent_request else None
    if isinstance(move_item, int):
        enqueue_on_commit(finish_consent_move, move_item)
    else:
        health.queue_tests([mailbox], actor=None, via=mailboxes.TASK)


# --- by hand and by time ----------------------------------------------------------------------
@transaction.atomic
def complete_by_hand(consent_request: ConsentRequest, actor=None, via: str | None = None) -> bool:
    """A person confirms that an external consent was given (the third party's page has no
    callback to us). Returns False when the request is not an open external one."""
    if consent_request.kind != ConsentRequest.Kind.EXTERNAL or not consent_request.is_open:
        return False
    before = consent_request.status
    consent_request.set_status(ConsentRequest.Status.COMPLETED)
    audit.record(
        "consentrequest.completed", consent_request, actor=actor, via=via,
        changes={"status": {"before": before, "after": consent_request.status}},
    )
    if consent_request.mailbox_id:
        consent_request.mailbox.note(
            f"External consent completed by hand ({consent_request.consent_url[:100]})", actor
        )
    return True


@transaction.atomic
def cancel(consent_request: ConsentRequest, actor=None, via: str | None = None) -> bool:
    if not consent_request.is_open:
        return False
    before = consent_request.status
    consent_request.set_status(ConsentRequest.Status.CANCELLED)
    audit.record(
        "consentrequest.cancelled", consent_request, actor=actor, via=via,
        changes={"status": {"before": before, "after": consent_request.status}},
    )
    return True


def expire_stale(now=None) -> int:
    """Move open requests past their expiry to `expired`; returns how many."""
    now = now or timezone.now()
    stale = ConsentRequest.objects.filter(
        status__in=ConsentRequest.OPEN_STATUSES, expires_at__lte=now
    )
    count = 0
    for consent_request in stale.iterator():
        before = consent_request.status
        consent_request.set_status(ConsentRequest.Status.EXPIRED)
        audit.record(
            "consentrequest.expired", consent_request, actor=None, via=audit.AuditEntry.Via.TASK,
            changes={"status": {"before": before, "after": consent_request.status}},
        )
        count += 1
    return count
