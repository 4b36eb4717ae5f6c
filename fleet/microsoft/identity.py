"""Microsoft identity: every OAuth flow Fleet runs goes through msal, here.

- Delegated consent for a mailbox (authorization code + PKCE + nonce): `start_user_flow`,
  `finish_user_flow`.
- Tenant admin consent for an app registration: `admin_consent_url` (msal has no helper; the URL
  shape is https://learn.microsoft.com/entra/identity-platform/v2-admin-consent).
- Token upkeep: `access_token_for` (XOAUTH2 for SMTP/IMAP), `refresh_mailbox_token` (leased;
  the keep-alive of fleet/tokens.py calls it too).
- App-only tokens (client credentials): `app_only_token`.

One ConfidentialClientApplication per credential and call site: msal caches 4xx answers per
application object (a 400 for a minute), and tokens live on our rows, not in msal's cache. The
discovery documents msal reads before its first token call are the one thing kept across
applications (`IdentitySession`): without that, every app-only token cost two round trips.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import msal
from django.conf import settings
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

log = logging.getLogger(__name__)


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


# msal fetches the tenant's OpenID configuration (and, for Microsoft's own hosts, the instance
# discovery document) whenever an application object is made, and keeps it in that object for a
# day. Fleet makes an object per call site, so the answer is kept here instead, per process, for
# the same day: https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc
DISCOVERY_TTL = 24 * 3600
DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/common/discovery/instance")
_discovery: dict[str, tuple[float, Any]] = {}  # url with its query → (monotonic expiry, answer)
_discovery_lock = threading.Lock()


class IdentitySession(MicrosoftSession):
    """msal's HTTP client: Microsoft's chokepoint, with the discovery GETs answered from a
    per-process cache of their 200 answers (the token endpoint's answers are never kept)."""

    def get(self, url, **kwargs):  # msal calls get(url, params=…, headers=…)
        if not urlsplit(url).path.endswith(DISCOVERY_PATHS):
            return super().get(url, **kwargs)
        key = url + "?" + urlencode(sorted((kwargs.get("params") or {}).items()))
        with _discovery_lock:
            kept = _discovery.get(key)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
        response = super().get(url, **kwargs)
        if response.status_code == 200:
            with _discovery_lock:
                _discovery[key] = (time.monotonic() + DISCOVERY_TTL, response)
        return response


def forget_discovery() -> None:
    """Drop the kept discovery answers (a test's sandbox with new addresses, or a fresh start)."""
    with _discovery_lock:
        _discovery.clear()


def build_app(
    credential, token_cache: msal.TokenCache | None = None
) -> msal.ConfidentialClientApplication:
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
            http_client=IdentitySession(),
            token_cache=token_cache,
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


# --- Token upkeep ------------------------------------------------------------------------------
# Access tokens live an hour; refresh tokens 90 days unused and replace themselves on every use
# (https://learn.microsoft.com/entra/identity-platform/refresh-tokens#token-lifetime). So Fleet
# fetches an access token only when a test or a program needs one (`access_token_for`), and keeps
# each refresh token alive with one redemption every TOKEN_KEEPALIVE_DAYS when nothing needed it
# sooner (fleet/tokens.py).
#
# One refresh token is never redeemed twice at once: the refresh takes a lease on the mailbox's
# row (a conditional UPDATE of `token_lease_owner`), makes the HTTP call with no transaction
# open, and writes the rotated refresh token with the access token in one UPDATE fenced on the
# lease. A second caller meanwhile waits for that write instead of redeeming the same token.

# Fresh enough to hand out: valid for at least another minute.
FRESH_FOR = timedelta(seconds=60)
# How long a second caller waits for the refresh another one is making (its HTTP call is bounded
# by MICROSOFT_HTTP_TIMEOUT, twice when msal has to fetch the OpenID configuration first).
WAIT_POLL_MAX = 0.25


def refresh_lease() -> timedelta:
    """A refresh's lease outlasts its HTTP calls, so it never expires while a token is out."""
    lease = max(float(settings.JOB_LEASE_SECONDS), 2 * settings.MICROSOFT_HTTP_TIMEOUT + 5)
    return timedelta(seconds=lease)


def next_keepalive(used_at):
    """When the keep-alive redeems a refresh token used at `used_at`: TOKEN_KEEPALIVE_DAYS later,
    up to a quarter earlier at random, so that mailboxes connected together (an import, a bulk
    add) do not come due together, and drift further apart with every round."""
    days = settings.TOKEN_KEEPALIVE_DAYS
    return used_at + timedelta(days=days * (1 - 0.25 * random.random()))  # noqa: S311


class NoTokenCache(msal.TokenCache):
    """Tokens live on our rows: an msal application reused for thousands of refreshes must not
    collect them in memory as well."""

    def add(self, event, now=None):
        return None


# One msal application per credential and thread for refreshes (msal's HTTP session keeps its
# connection to Microsoft, and discovery happens once). After a failed call the application is
# dropped: msal remembers error answers per application (5 s for a 5xx, 60 s for a 400) and a
# retry of ours must reach Microsoft.
_refresh_apps = threading.local()


def _app_key(credential) -> tuple:
    secret = hashlib.sha256(str(credential.client_secret).encode()).hexdigest()
    return (
        credential.pk,
        credential.client_id,
        credential.tenant_id,
        secret,
        settings.MICROSOFT_AUTHORITY_HOST,
        settings.MICROSOFT_CA_BUNDLE,
    )


def refresh_app(credential) -> msal.ConfidentialClientApplication:
    apps = _refresh_apps.__dict__.setdefault("apps", {})
    key = _app_key(credential)
    if key not in apps:
        if len(apps) >= 64:
            apps.clear()
        apps[key] = build_app(credential, token_cache=NoTokenCache())
    return apps[key]


def forget_app(credential) -> None:
    _refresh_apps.__dict__.setdefault("apps", {}).pop(_app_key(credential), None)


def _fresh(access_token, expires_at) -> bool:
    return bool(access_token) and expires_at is not None and expires_at > timezone.now() + FRESH_FOR


def _token_row(pk: int) -> dict | None:
    from fleet.models import Mailbox

    return (
        Mailbox.objects.filter(pk=pk)
        .values("access_token", "token_expires_at", "refresh_token", "status", "error_code")
        .first()
    )


def _claim_or_wait(mailbox, owner: str) -> str | None:
    """Take the refresh lease of `mailbox` (None), or the access token another caller's refresh
    saved meanwhile."""
    from django.db.models import Q

    from fleet.models import Mailbox

    deadline = time.monotonic() + 2 * settings.MICROSOFT_HTTP_TIMEOUT + 5
    pause = 0.02
    while True:
        row = _token_row(mailbox.pk)
        if row is None:  # deleted meanwhile: as `Mailbox.objects.get` says it
            raise Mailbox.DoesNotExist(f"Mailbox {mailbox.pk} no longer exists")
        if _fresh(row["access_token"], row["token_expires_at"]):
            mailbox.access_token, mailbox.token_expires_at = (
                row["access_token"],
                row["token_expires_at"],
            )
            mailbox.refresh_token = row["refresh_token"]
            return str(row["access_token"])
        if row["status"] == Mailbox.Status.REAUTH_REQUIRED and not row["access_token"]:
            raise FleetError(errors.REAUTH_REQUIRED, "Microsoft refused this mailbox's grant")
        now = timezone.now()
        # Only while the token is still stale: a refresh that was saved since the read above
        # (and released its lease) must not be followed by a second one.
        stale = (
            Q(access_token="")
            | Q(token_expires_at__isnull=True)
            | Q(token_expires_at__lte=now + FRESH_FOR)
        )
        claimed = (
            Mailbox.objects.filter(pk=mailbox.pk)
            .filter(stale)
            .filter(Q(token_lease_owner="") | Q(token_lease_expires_at__lt=now))
            .update(token_lease_owner=owner, token_lease_expires_at=now + refresh_lease())
        )
        if claimed:
            return None
        if time.monotonic() > deadline:
            raise FleetError(
                errors.MICROSOFT_UNAVAILABLE,
                "Another worker is refreshing this mailbox's token and has not finished",
            )
        time.sleep(pause)
        pause = min(pause * 2, WAIT_POLL_MAX)


def release_lease(pk: int, owner: str, **changes: Any) -> int:
    """Give a mailbox's token lease back (with `changes`), if `owner` still holds it."""
    from fleet.models import Mailbox

    return Mailbox.objects.filter(pk=pk, token_lease_owner=owner).update(
        token_lease_owner="", token_lease_expires_at=None, **changes
    )


def refresh_mailbox_token(mailbox, *, owner: str | None = None) -> str:
    """Redeem the mailbox's refresh token for a new access token and save both, the rotated
    refresh token included, with the time of the redemption and the next keep-alive. A revoked
    or expired grant moves the mailbox to `reauth_required` and raises
    FleetError(REAUTH_REQUIRED); a transient failure raises MICROSOFT_UNAVAILABLE.

    `owner`: the caller already holds the row's token lease (a keep-alive task); otherwise the
    lease is taken here, or the token another caller is refreshing right now is waited for."""
    from fleet.models import Mailbox

    held = owner is not None  # transient failures: the holder decides when to try again
    if owner is None:
        owner = f"refresh-{uuid.uuid4().hex}"
        waited = _claim_or_wait(mailbox, owner)
        if waited is not None:
            return waited
    row = (
        Mailbox.objects.select_related("credential")
        .filter(pk=mailbox.pk, token_lease_owner=owner)
        .first()
    )
    if row is None:
        if not Mailbox.objects.filter(pk=mailbox.pk).exists():
            raise Mailbox.DoesNotExist(f"Mailbox {mailbox.pk} no longer exists")
        raise FleetError(
            errors.MICROSOFT_UNAVAILABLE, "Another worker took over this mailbox's token refresh"
        )
    if not row.refresh_token:
        release_lease(row.pk, owner, token_keepalive_due_at=None)
        raise FleetError(errors.REAUTH_REQUIRED, "No refresh token is stored")
    if row.credential is None:
        release_lease(row.pk, owner, token_keepalive_due_at=None)
        raise FleetError(errors.MICROSOFT_OAUTH_NOT_CONFIGURED)
    try:
        app = refresh_app(row.credential)
        with translated_failures():
            result = app.acquire_token_by_refresh_token(str(row.refresh_token), OUTLOOK_SCOPES)
    except FleetError:
        forget_app(row.credential)
        if not held:
            release_lease(row.pk, owner)
        raise
    if "error" in result:
        forget_app(row.credential)
        failure = error_for(result)
        if failure.error is errors.REAUTH_REQUIRED:
            release_lease(row.pk, owner, access_token="", token_keepalive_due_at=None)
            if row.status != Mailbox.Status.REAUTH_REQUIRED:
                Mailbox.set_status_many(
                    [row], Mailbox.Status.REAUTH_REQUIRED, failure.error, failure.detail, via="task"
                )
        elif not held:
            release_lease(row.pk, owner)
        mailbox.refresh_from_db()
        raise failure
    now = timezone.now()
    saved = {
        "access_token": result["access_token"],
        "token_expires_at": expiry(result),
        "refresh_token_used_at": now,
        "token_keepalive_due_at": next_keepalive(now),
    }
    if result.get("refresh_token"):
        saved["refresh_token"] = result["refresh_token"]
    if not release_lease(row.pk, owner, updated_at=now, **saved):
        # Only if the lease ran out during the call (a stalled process): the answer is not ours
        # to save any more. Microsoft keeps the old refresh token valid, so nothing is lost.
        log.warning("token lease of mailbox %s expired before its refresh was saved", row.pk)
        raise FleetError(errors.MICROSOFT_UNAVAILABLE, "The token refresh took too long")
    for field, value in saved.items():
        setattr(mailbox, field, value)
    return str(result["access_token"])


def access_token_for(mailbox) -> str:
    """A valid Outlook access token for XOAUTH2 (SMTP/IMAP): the saved one until a minute before
    it expires, else a refresh (one at a time per mailbox, across threads, processes and hosts).
    Raises FleetError (REAUTH_REQUIRED, MICROSOFT_UNAVAILABLE, …), or Mailbox.DoesNotExist when
    the mailbox was deleted meanwhile."""
    if _fresh(mailbox.access_token, mailbox.token_expires_at):
        return str(mailbox.access_token)
    return refresh_mailbox_token(mailbox)


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
