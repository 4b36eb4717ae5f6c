"""Exchange Online's sign-in rules for the sandbox's SMTP and IMAP servers, beyond delegated
XOAUTH2 (identity.validate_access_token):

- App-only XOAUTH2 (client credentials): a token for `https://outlook.office365.com` with the
  application permission of the protocol (`SMTP.SendAsApp`, `IMAP.AccessAsApp`), of the
  mailbox's tenant, from an app whose service principal Exchange lets at that mailbox
  (`New-ServicePrincipal` + `Add-MailboxPermission`, or RBAC for Applications). Anything else is
  Exchange's plain authentication failure, as Microsoft answers it.
  https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
- Basic auth turned off for a tenant (`basic_auth_off`): app passwords get
  `550 5.7.30 Basic authentication is not supported for Client Submission` on SMTP and a plain
  `NO LOGIN failed.` on IMAP.
- The demo's planned drop (`drop_passwords`, from `drop_at`): the user's app password gets
  `535 5.7.3 Authentication unsuccessful` (SMTP) and `NO LOGIN failed.` (IMAP), as after the
  user changed it.
"""

from __future__ import annotations

from sandbox.identity import verified_claims
from sandbox.mailservers import (
    IMAP_LOGIN_FAILED,
    SMTP_BAD_CREDENTIALS,
    SMTP_BASIC_AUTH_UNSUPPORTED,
)
from sandbox.server import RUNNING

PROTOCOL_ROLE = {"smtp": "SMTP.SendAsApp", "imap": "IMAP.AccessAsApp"}
APP_ONLY_AUDIENCE = "https://outlook.office365.com"


def validate_app_token(username: str, token: str, protocol: str) -> bool:
    """Whether an app-only token may sign in to `username`'s mailbox over `protocol`."""
    for sandbox in list(RUNNING):
        claims = verified_claims(sandbox.identity.key, token)
        if claims is None:
            continue
        if "upn" in claims or claims.get("aud", "").rstrip("/") != APP_ONLY_AUDIENCE:
            return False
        user = sandbox.directory.user(username)
        if user is None or user.tenant.id != claims.get("tid"):
            return False
        if PROTOCOL_ROLE.get(protocol) not in claims.get("roles", []):
            return False
        return claims.get("appid") in user.tenant.exchange_apps and not user.exchange_excluded
    return False


def basic_auth_reply(username: str, protocol: str) -> str | None:
    """Exchange's answer to an app-password sign-in where the tenant turned Basic auth off, or
    where the demo's planned drop (`drop_passwords`) has come: the password no longer works."""
    for sandbox in list(RUNNING):
        if sandbox.switches.password_refused(username):
            return SMTP_BAD_CREDENTIALS if protocol == "smtp" else IMAP_LOGIN_FAILED
        user = sandbox.directory.user(username)
        tenant = (
            user.tenant
            if user
            else sandbox.directory.tenant_for_domain(username.rsplit("@", 1)[-1])
        )
        switched = sandbox.switches.basic_auth_off
        off = tenant is not None and (
            tenant.basic_auth_off or tenant.id in switched or bool(set(tenant.domains) & switched)
        )
        if off:
            return SMTP_BASIC_AUTH_UNSUPPORTED if protocol == "smtp" else IMAP_LOGIN_FAILED
    return None
