"""Microsoft identity: every OAuth flow Fleet runs goes through msal, here.

- Delegated consent for a mailbox (authorization code + PKCE + nonce): `start_user_flow`,
  `finish_user_flow`.
- Tenant admin consent for an app registration: `admin_consent_url` (msal has no helper; the URL
  shape is https://learn.microsoft.com/entra/identity-platform/v2-admin-consent).
- Token upkeep: `refresh_mailbox_token`, `access_token_for` (XOAUTH2 for SMTP/IMAP).
- App-only tokens (client credentials): `app_only_token`.

One ConfidentialClientApplication per credential and call site: msal caches discovery and 4xx
answers per application object, and tokens live on our rows, not in msal's cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import msal
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from fleet import errors
from fleet.errors import FleetError
from fleet.microsoft.http import MicrosoftError, MicrosoftSession, without_trace

# One resource per token: Outlook's SMTP and IMAP scopes together; msal adds the reserved
# `openid profile offline_access` itself (and refuses them in this list).
# https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
OUTLOOK_SCOPES = [
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
]
GRAPH_APP_SCOPES = ["https://graph.microsoft.com/.default"]
# App-only SMTP/IMAP (client credentials): Exchange Online's resource, whose token carries the
# IMAP.AccessAsApp / SMTP.SendAsApp application permissions.
EXCHANGE_APP_SCOPES = ["https://outlook.office365.com/.default"]
# The tenant of personal Microsoft accounts (Outlook.com, Hotmail).
# https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference
CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"

# AADSTS numbers → our catalogue. https://learn.microsoft.com/entra/identity-platform/reference-error-codes
ADMIN_APPROVAL_CODES = {65001, 90094, 90095}
REVOKED_GRANT_CODES = {50173, 700082, 70043, 70000, 700084}
CONSENT_DECLINED_CODES = {65004}
BAD_CLIENT_SECRET_CODES = {7000218}  # no secret sent at all
# Distinct codes for what a manager fixes differently on a credential.
CREDENTIAL_CODES = {
    7000215: errors.CLIENT_SECRET_INVALID,
    7000222: errors.CLIENT_SECRET_EXPIRED,
    700016: errors.APP_NOT_FOUND_IN_TENANT,
    90002: errors.TENANT_NOT_FOUND,
}
TRANSIENT_ERRORS = {"temporarily_unavailable", "server_error"}
AADSTS = re.compile(r"\bAADSTS(\d+)")

KNOWN_MICROSOFT_HOSTS = msal.authority.WELL_KNOWN_AUTHORITY_HOSTS


@dataclass(frozen=True)
class SignedIn:
    """What a successful delegated consent gives: the tokens and who signed in."""

    access_token: str
    refresh_token: str
    expires_at: Any
    username: str
    object_id: str
    tenant_id: str
    display_name: str


def build_app(credential) -> msal.ConfidentialClientApplication:
    """A fresh msal application for this credential (discovery happens here, over HTTPS)."""
    if credential is None:
        raise FleetError(errors.MICROSOFT_OAUTH_NOT_CONFIGURED)
    host = urlsplit(settings.MICROSOFT_AUTHORITY_HOST).hostname or ""
    with translated_failures():
        return msal.ConfidentialClientApplication(
            credential.client_id,
            client_credential=str(credential.client_secret),
            authority=f"{settings.MICROSOFT_AUTHORITY_HOST}/{credential.tenant_id}",
            # Instance discovery asks login.microsoftonline.com about the host: only for
            # Microsoft's own hosts (the sandbox and national-cloud mirrors are configured).
            instance_discovery=host in KNOWN_MICROSOFT_HOSTS,
            http_client=MicrosoftSession(),
            token_cache=None,
        )


class translated_failures:
    """Context manager: transport and protocol failures inside msal become FleetErrors."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, FleetError):
            return False
        if isinstance(exc, MicrosoftError):
            raise FleetError(errors.MICROSOFT_UNAVAILABLE, exc.message) from exc
        if isinstance(exc, msal.exceptions.MsalServiceError):  # msal's view of a 5xx
            raise FleetError(errors.MICROSOFT_UNAVAILABLE, str(exc)) from exc
        if isinstance(exc, (ValueError, RuntimeError)):
            # msal raises these for a failed discovery, a state or nonce mismatch. A failed
            # discovery keeps Microsoft's answer (with its AADSTS code, e.g. 90002 for an
            # unknown tenant) in the chained exception.
            for code in chained_aadsts(exc):
                if code in CREDENTIAL_CODES:
                    raise FleetError(CREDENTIAL_CODES[code], str(exc)[:500]) from exc
            raise FleetError(errors.MICROSOFT_OAUTH_FAILED, str(exc)[:500]) from exc
        return False


def chained_aadsts(exc: BaseException | None) -> list[int]:
    """AADSTS numbers in an exception's text and in the exceptions it was raised from."""
    found: list[int] = []
    while exc is not None:
        found += [int(n) for n in AADSTS.findall(str(exc))]
        exc = exc.__cause__ or exc.__context__
    return found


def aadsts_codes(result: dict) -> set[int]:
    """The AADSTS numbers of an error answer: `error_codes` from the token endpoint, or the
    AADSTS prefix of `error_description` on a redirect (which has no `error_codes`)."""
    codes = {int(c) for c in result.get("error_codes") or [] if str(c).isdigit()}
    codes.update(int(n) for n in AADSTS.findall(result.get("error_description") or ""))
    return codes


def error_for(result: dict) -> FleetError:
    """Map an OAuth error answer to our catalogue by its codes, never by its text."""
    codes = aadsts_codes(result)
    error = result.get("error", "")
    detail = without_trace(result.get("error_description") or error)[:500]
    if codes & ADMIN_APPROVAL_CODES:
        return FleetError(errors.ADMIN_APPROVAL_REQUIRED, detail)
    if error == "access_denied" or codes & CONSENT_DECLINED_CODES:
        return FleetError(errors.CONSENT_DENIED, detail)
    if error == "invalid_grant" and codes & REVOKED_GRANT_CODES:
        return FleetError(errors.REAUTH_REQUIRED, detail)
    for code in sorted(codes & CREDENTIAL_CODES.keys()):
        return FleetError(CREDENTIAL_CODES[code], detail)
    if codes & BAD_CLIENT_SECRET_CODES or error in ("invalid_client", "unauthorized_client"):
        return FleetError(errors.CREDENTIAL_REJECTED, detail)
    if error in TRANSIENT_ERRORS:
        return FleetError(errors.MICROSOFT_UNAVAILABLE, detail)
    return FleetError(errors.MICROSOFT_OAUTH_FAILED, detail)


def start_user_flow(
    credential,
    redirect_uri: str,
    *,
    login_hint: str = "",
    prompt: str | None = None,
) -> dict:
    """Begin delegated consent: msal's flow (state, PKCE verifier, nonce) to keep server-side,
    with `auth_uri` for the browser."""
    app = build_app(credential)
    with translated_failures():
        return app.initiate_auth_code_flow(
            OUTLOOK_SCOPES,
            redirect_uri=redirect_uri,
            login_hint=login_hint or None,
            prompt=prompt,
        )


def finish_user_flow(credential, flow: dict, auth_response: dict) -> SignedIn:
    """Redeem the code: msal checks state, sends the PKCE verifier and checks the nonce."""
    app = build_app(credential)
    with translated_failures():
        result = app.acquire_token_by_auth_code_flow(flow, auth_response)
    if "error" in result:
        raise error_for(result)
    claims = result.get("id_token_claims") or {}
    if not result.get("refresh_token") or not claims.get("preferred_username"):
        raise FleetError(
            errors.MICROSOFT_OAUTH_FAILED,
            "Microsoft's answer has no refresh token or no signed-in address "
            "(was offline_access granted?)",
        )
    return SignedIn(
        access_token=result["access_token"],
        refresh_token=result["refresh_token"],
        expires_at=expiry(result),
        username=claims["preferred_username"],
        object_id=claims.get("oid", ""),
        tenant_id=claims.get("tid", ""),
        display_name=claims.get("name", ""),
    )


def expiry(result: dict):
    return timezone.now() + timedelta(seconds=int(result.get("expires_in", 3600)))


def admin_consent_url(credential, redirect_uri: str, state: str, scopes: list[str]) -> str:
    """The v2 admin-consent URL, next to the authorize endpoint that discovery named (so national
    clouds and the sandbox's browser-facing address both work).
    https://learn.microsoft.com/entra/identity-platform/v2-admin-consent"""
    app = build_app(credential)
    authorize = app.authority.authorization_endpoint
    base = authorize.rsplit("/oauth2/", 1)[0]
    query = urlencode(
        {
            "client_id": credential.client_id,
            "scope": " ".join(scopes),
            "redirect_uri": redirect_uri,
            "state": state,
        }
    )
    return f"{base}/v2.0/adminconsent?{query}"


@dataclass(frozen=True)
class AppToken:
    access_token: str
    expires_at: Any  # aware datetime


def app_only_token(credential, scopes: list[str] | None = None) -> AppToken:
    """A token by client credentials (needs the tenant's admin consent) for Graph, or for the
    resource of `scopes` (EXCHANGE_APP_SCOPES for app-only SMTP/IMAP), with its expiry so that
    callers can keep it until then (fleet.microsoft.graph caches it per credential and
    resource)."""
    app = build_app(credential)
    with translated_failures():
        result = app.acquire_token_for_client(scopes or GRAPH_APP_SCOPES)
    if "error" in result:
        raise error_for(result)
    return AppToken(result["access_token"], expiry(result))


def refresh_mailbox_token(mailbox, app: msal.ConfidentialClientApplication | None = None) -> str:
    """Redeem the mailbox's refresh token for a new access token and save both, the rotated
    refresh token included (Microsoft may rotate it on every use). A revoked or expired grant
    moves the mailbox to `reauth_required` and raises FleetError(REAUTH_REQUIRED).

    The row is locked while refreshing, so that two workers never redeem one refresh token."""
    from fleet.models import Mailbox

    failure = None
    with transaction.atomic():
        locked = (
            Mailbox.objects.select_for_update(of=("self",))
            .select_related("credential")
            .get(pk=mailbox.pk)
        )
        if not locked.refresh_token:
            raise FleetError(errors.REAUTH_REQUIRED, "No refresh token is stored")
        app = app or build_app(locked.credential)
        with translated_failures():
            result = app.acquire_token_by_refresh_token(str(locked.refresh_token), OUTLOOK_SCOPES)
        if "error" in result:
            failure = error_for(result)
        else:
            locked.access_token = result["access_token"]
            locked.token_expires_at = expiry(result)
            if result.get("refresh_token"):
                locked.refresh_token = result["refresh_token"]
            locked.save(
                update_fields=["access_token", "token_expires_at", "refresh_token", "updated_at"]
            )
    if failure is not None:
        if failure.error is errors.REAUTH_REQUIRED:
            locked.access_token = ""
            locked.save(update_fields=["access_token", "updated_at"])
            locked.set_status(Mailbox.Status.REAUTH_REQUIRED, failure.error, failure.detail)
        mailbox.refresh_from_db()
        raise failure
    for field in ("access_token", "token_expires_at", "refresh_token", "status", "error_code"):
        setattr(mailbox, field, getattr(locked, field))
    return str(locked.access_token)


def access_token_for(mailbox) -> str:
    """A valid Outlook access token for XOAUTH2 (SMTP/IMAP), refreshed when it expires within a
    minute. Raises FleetError (REAUTH_REQUIRED, MICROSOFT_UNAVAILABLE, …)."""
    fresh_until = timezone.now() + timedelta(seconds=60)
    if mailbox.access_token and mailbox.token_expires_at and mailbox.token_expires_at > fresh_until:
        return str(mailbox.access_token)
    return refresh_mailbox_token(mailbox)


def refresh_expiring(now=None) -> dict[str, int]:
    """Token upkeep: refresh every OAuth mailbox whose access token expires within
    TOKEN_REFRESH_AHEAD, one msal application per credential. Returns counts by outcome."""
    from django.db.models import Q

    from fleet.models import Mailbox

    now = now or timezone.now()
    due = (
        Mailbox.objects.filter(auth_method=Mailbox.AuthMethod.OAUTH, credential__isnull=False)
        .exclude(refresh_token="")
        .exclude(status__in=[Mailbox.Status.REAUTH_REQUIRED, Mailbox.Status.DISABLED])
        .filter(
            Q(token_expires_at__isnull=True)
            | Q(token_expires_at__lte=now + timedelta(seconds=settings.TOKEN_REFRESH_AHEAD))
        )
        .select_related("credential")
        .order_by("credential_id", "pk")
    )
    counts = {"refreshed": 0, "reauth_required": 0, "failed": 0}
    apps: dict[int, msal.ConfidentialClientApplication] = {}
    for mailbox in due.iterator():
        try:
            if mailbox.credential_id not in apps:
                apps[mailbox.credential_id] = build_app(mailbox.credential)
            refresh_mailbox_token(mailbox, apps[mailbox.credential_id])
            counts["refreshed"] += 1
        except FleetError as failure:
            # Transient failures are tried again on the next run; revoked grants are recorded.
            key = "reauth_required" if failure.error is errors.REAUTH_REQUIRED else "failed"
            counts[key] += 1
    return counts


@dataclass(frozen=True)
class DomainTenant:
    domain: str
    tenant_id: str  # "" when Microsoft knows no tenant for the domain
    consumer: bool  # the tenant of personal Microsoft accounts (Outlook.com)


def tenant_of_domain(domain: str) -> DomainTenant:
    """The Entra ID tenant that has verified `domain`, from the domain's OpenID configuration
    (its `issuer` names the tenant GUID; no token or permission needed).
    https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc#find-your-apps-openid-configuration-document-uri
    Raises MicrosoftError when Microsoft cannot be asked now (a transient failure)."""
    domain = domain.lower().strip()
    url = f"{settings.MICROSOFT_AUTHORITY_HOST}/{domain}/v2.0/.well-known/openid-configuration"
    response = MicrosoftSession().get(url, headers={"Accept": "application/json"})
    if response.status_code in (400, 404):  # AADSTS90002: no tenant has verified it
        return DomainTenant(domain, "", False)
    if response.status_code != 200:
        from fleet.microsoft.http import error_from_response

        raise error_from_response(response)
    issuer = str((response.json() or {}).get("issuer", ""))
    # https://login.microsoftonline.com/{tenant GUID}/v2.0 (GUID-shaped; the sandbox's are not hex)
    match = re.search(r"/(\w{8}-\w{4}-\w{4}-\w{4}-\w{12})/v2\.0/?\Z", issuer)
    tenant = match.group(1).lower() if match else ""
    return DomainTenant(domain, tenant, tenant == CONSUMER_TENANT_ID)
