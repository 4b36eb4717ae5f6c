"""The sandbox's identity platform: OpenID configuration, the authorize page (sign in as a
directory user, accept or deny), the token endpoint (authorization code with PKCE S256, refresh
token with rotation, client credentials) and admin consent (v1 and v2 URL shapes).

Shapes follow https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow and
https://learn.microsoft.com/entra/identity-platform/v2-admin-consent. Tokens are JWTs signed with
a per-sandbox key (HS256): msal only decodes ID tokens, and `validate_access_token` lets the
loopback SMTP/IMAP servers check XOAUTH2 tokens.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from urllib.parse import urlencode

from sandbox.server import RUNNING, Request, Response, route

RESERVED_SCOPES = {"openid", "profile", "offline_access", "email"}
TOKEN_LIFETIME = 3600
# The demo's grants (`Sandbox.grant_demo_refresh_tokens`): the refresh token
# `sandbox-demo-grant:<username>` of every directory user, redeemable once by any app of the
# directory, which `manage.py seed_demo` stores on the demo's connected OAuth mailboxes (grants
# given before this sandbox started). Rotated on first use like any other.
DEMO_GRANT_PREFIX = "sandbox-demo-grant:"
DEMO_GRANT_ANY_APP = "*"
DEMO_GRANT_SCOPES = [
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
    "offline_access",
    "openid",
    "profile",
]
CODE_LIFETIME = 600


@dataclass
class IdentityState:
    """What the sandbox issued: authorization codes and refresh tokens (single use each)."""

    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    codes: dict[str, dict] = field(default_factory=dict)
    refresh_tokens: dict[str, dict] = field(default_factory=dict)
    # Redemption attempts per refresh token (issued or not): a token redeemed twice shows as 2.
    redemptions: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def redeem(self, token: str, keep: bool = False) -> dict | None:
        """A refresh token's grant. The sandbox rotates strictly by default (a used token is
        refused, so any second use shows); `keep` is Microsoft's own behaviour, which does not
        revoke a refresh token when it is used
        (https://learn.microsoft.com/entra/identity-platform/refresh-tokens#token-lifetime)."""
        with self.lock:
            self.redemptions[token] += 1
            if keep:
                return self.refresh_tokens.get(token)
            return self.refresh_tokens.pop(token, None)

    def take(self, table: dict, key: str) -> dict | None:
        with self.lock:
            return table.pop(key, None)

    def put(self, table: dict, key: str, value: dict) -> None:
        with self.lock:
            table[key] = value


# --- tokens --------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, claims: dict) -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def verified_claims(key: bytes, token: str) -> dict | None:
    claims = _signed_claims(key, token)
    return dict(claims) if claims and claims.get("exp", 0) > time.time() else None


@functools.lru_cache(maxsize=256)
def _signed_claims(key: bytes, token: str) -> dict | None:
    """The claims of a token signed with `key`: checked once per token (every request inside a
    `$batch` carries the envelope's), expiry checked on every use."""
    try:
        head, body, sig = token.split(".")
        expected = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(sig)):
            return None
        claims = json.loads(_unb64(body))
    except (ValueError, TypeError, AttributeError):
        return None
    return claims if isinstance(claims, dict) else None


def validate_access_token(
    username: str, token: str, resource: str = "https://outlook.office.com"
) -> bool:
    """Whether `token` is a live access token of a running sandbox for `username` and the given
    resource (Outlook's SMTP/IMAP by default), and the user's grant is not revoked. The loopback
    SMTP and IMAP servers call this for XOAUTH2."""
    for sandbox in list(RUNNING):
        claims = verified_claims(sandbox.identity.key, token)
        if claims is None:
            continue
        return (
            claims.get("upn", "").lower() == (username or "").lower()
            and claims.get("aud") == resource
            and not sandbox.switches.grant_revoked(username)
        )
    return False


def app_roles(app, resource: str) -> list[str]:
    """The application permissions a client-credentials token carries: those of its resource
    (Graph's for Graph, IMAP.AccessAsApp / SMTP.SendAsApp for Exchange Online)."""
    from sandbox.directory import EXCHANGE_ROLES

    exchange = resource.rstrip("/") in EXCHANGE_RESOURCES
    return [r for r in app.roles if (r in EXCHANGE_ROLES) == exchange]


# Exchange Online's resource for client credentials (`https://outlook.office365.com/.default`);
# delegated tokens name https://outlook.office.com.
EXCHANGE_RESOURCES = ("https://outlook.office365.com", "https://outlook.office.com")


def resource_of(scopes: list[str]) -> str:
    """The audience of a token: the resource URL shared by the scopes (one resource per token)."""
    for scope in scopes:
        if "://" in scope:
            return scope.rsplit("/", 1)[0]
    return "https://graph.microsoft.com"


def issue_tokens(
    request: Request, user, client_id: str, scopes: list[str], nonce: str = ""
) -> dict:
    sandbox = request.sandbox
    now = int(time.time())
    lifetime = sandbox.switches.token_lifetime
    resource = resource_of(scopes)
    named = [s for s in scopes if s not in RESERVED_SCOPES]
    access = sign(
        sandbox.identity.key,
        {
            "aud": resource,
            "iss": f"https://sts.sandbox/{user.tenant.id}/",
            "iat": now,
            "exp": now + lifetime,
            "appid": client_id,
            "upn": user.username,
            "oid": user.oid,
            "tid": user.tenant.id,
            "scp": " ".join(s.rsplit("/", 1)[-1] for s in named),
            "jti": secrets.token_hex(8),
        },
    )
    answer = {
        "token_type": "Bearer",
        "scope": " ".join(named),
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access,
    }
    if "openid" in scopes:
        answer["id_token"] = sign(
            sandbox.identity.key,
            {
                "aud": client_id,
                "iss": f"{sandbox.base_url}/{user.tenant.id}/v2.0",
                "iat": now,
                "nbf": now,
                "exp": now + TOKEN_LIFETIME,
                "name": user.name,
                "preferred_username": user.username,
                "oid": user.oid,
                "sub": _b64(hashlib.sha256(f"{user.oid}:{client_id}".encode()).digest()),
                "tid": user.tenant.id,
                "ver": "2.0",
                **({"nonce": nonce} if nonce else {}),
            },
        )
        answer["client_info"] = _b64(json.dumps({"uid": user.oid, "utid": user.tenant.id}).encode())
    if "offline_access" in scopes:
        refresh = secrets.token_urlsafe(48)
        sandbox.identity.put(
            sandbox.identity.refresh_tokens,
            refresh,
            {"username": user.username, "client_id": client_id, "scopes": scopes},
        )
        answer["refresh_token"] = refresh
    return answer


def token_error(error: str, code: int, description: str, status: int = 400) -> Response:
    return Response.json(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description}",
            "error_codes": [code],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        },
        status,
    )


# --- discovery -----------------------------------------------------------------------------------
@route("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration")
def openid_configuration(request: Request, tenant: str) -> Response:
    sandbox = request.sandbox
    with sandbox.lock:
        sandbox.counts["discovery"] += 1
    known = sandbox.directory.tenant(tenant)
    if tenant not in ("common", "organizations", "consumers") and known is None:
        return token_error("invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
    issuer_tenant = known.id if known else "{tenantid}"
    api, browser = sandbox.base_url, sandbox.browser_url
    return Response.json(
        {
            "issuer": f"{api}/{issuer_tenant}/v2.0",
            # The only endpoints a browser opens: on the http loopback listener in the demo.
            "authorization_endpoint": f"{browser}/{tenant}/oauth2/v2.0/authorize",
            "token_endpoint": f"{api}/{tenant}/oauth2/v2.0/token",
            "end_session_endpoint": f"{browser}/{tenant}/oauth2/v2.0/logout",
            "jwks_uri": f"{api}/{tenant}/discovery/v2.0/keys",
            "userinfo_endpoint": f"{sandbox.graph_url}/oidc/userinfo",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "sandbox.fleet",
        }
    )


# --- pages ---------------------------------------------------------------------------------------
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{title} — Microsoft sandbox</title><meta name="viewport" content="width=device-width">
<style>body{{font-family:system-ui,sans-serif;background:#f3f3f3;margin:0}}
main{{max-width:26rem;margin:4rem auto;background:#fff;padding:2rem 2.5rem;box-shadow:0 2px 6px #0003}}
h1{{font-size:1.4rem;font-weight:600}}label{{display:block;margin:.8rem 0 .2rem}}
input[type=text],input[type=password]{{width:100%;padding:.4rem;font-size:1rem;box-sizing:border-box}}
.perm{{background:#f6f6f6;padding:.6rem 1rem;font-size:.9rem}}.error{{color:#a80000}}
button{{padding:.5rem 1.4rem;font-size:1rem;margin:1.2rem .5rem 0 0;cursor:pointer}}
button[value=accept]{{background:#0067b8;color:#fff;border:0}}small{{color:#666}}</style></head>
<body><main><p><small>Microsoft sandbox (Fleet) — not Microsoft</small></p><h1>{title}</h1>{content}</main></body></html>"""


def consent_page(
    request: Request, title: str, intro: str, scopes: list[str], error: str = ""
) -> Response:
    params = {
        **request.query,
        **{k: v for k, v in request.form.items() if k not in ("username", "password", "action")},
    }
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params.items()
    )
    username = request.form.get("username") or request.query.get("login_hint", "")
    perms = "".join(f"<li>{escape(s)}</li>" for s in scopes if s not in ("openid", "profile"))
    content = f"""{f'<p class="error">{escape(error)}</p>' if error else ""}
<p>{intro}</p><div class="perm"><p>It will be able to:</p><ul>{perms}</ul></div>
<form method="post">{hidden}
<label for="username">Account</label><input type="text" id="username" name="username" value="{escape(username)}" autocomplete="username">
<label for="password">Password</label><input type="password" id="password" name="password" autocomplete="current-password">
<small>Directory users' password: sandbox</small><br>
<button type="submit" name="action" value="accept">Accept</button>
<button type="submit" name="action" value="deny">Cancel</button></form>"""
    return Response.html(PAGE.format(title=escape(title), content=content), 400 if error else 200)


def error_page(message: str, status: int = 400) -> Response:
    return Response.html(
        PAGE.format(
            title="Sorry, but we're having trouble signing you in",
            content=f'<p class="error">{escape(message)}</p>',
        ),
        status,
    )


def redirect_with(redirect_uri: str, params: dict) -> Response:
    joiner = "&" if "?" in redirect_uri else "?"
    return Response.redirect(
        f"{redirect_uri}{joiner}{urlencode({k: v for k, v in params.items() if v is not None})}"
    )


def signed_in_user(request: Request, tenant: str):
    """The directory user the form signs in, or an error text."""
    sandbox = request.sandbox
    user = sandbox.directory.user(request.form.get("username", ""))
    if user is None or not hmac.compare_digest(user.password, request.form.get("password", "")):
        return None, "Your account or password is incorrect."
    allowed = sandbox.directory.tenant(tenant)
    if (tenant == "organizations" and user.tenant.consumer) or (
        tenant == "consumers" and not user.tenant.consumer
    ):
        return None, f"AADSTS50020: {user.username} cannot sign in to this application's audience."
    if allowed is not None and allowed is not user.tenant:
        return None, f"AADSTS50020: {user.username} is not in tenant {allowed.name}."
    return user, ""


# --- authorization code flow -------------------------------------------------------------------
@route("GET", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/authorize", api=False)
def authorize_page(request: Request, tenant: str) -> Response:
    q = request.query
    app = request.sandbox.directory.apps.get(q.get("client_id", ""))
    if app is None:
        return error_page(
            f"AADSTS700016: Application with identifier '{q.get('client_id', '')}' was not found in the directory."
        )
    if q.get("response_type") != "code" or not q.get("redirect_uri"):
        return error_page(
            "AADSTS900144: The request body must contain response_type=code and a redirect_uri."
        )
    if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
        return error_page("AADSTS9002325: Proof Key for Code Exchange (S256) is required.")
    return consent_page(
        request,
        "Permissions requested",
        f"<b>{escape(app.name)}</b> wants to access your mailbox.",
        q.get("scope", "").split(),
    )


@route("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/authorize", api=False)
def authorize_answer(request: Request, tenant: str) -> Response:
    sandbox, f = request.sandbox, request.form
    app = sandbox.directory.apps.get(f.get("client_id", ""))
    if app is None or not f.get("redirect_uri"):
        return error_page("AADSTS900144: The sign-in form is incomplete.")
    scopes = f.get("scope", "").split()
    back = {"state": f.get("state")}
    if f.get("action") != "accept" or sandbox.switches.deny_consent:
        return redirect_with(
            f["redirect_uri"],
            {
                "error": "access_denied",
                "error_description": "AADSTS65004: User declined to consent to access the app.",
                **back,
            },
        )
    user, problem = signed_in_user(request, tenant)
    if user is None:
        return consent_page(
            request,
            "Permissions requested",
            f"<b>{escape(app.name)}</b> wants to access your mailbox.",
            scopes,
            problem,
        )
    if sandbox.switches.require_admin_approval or (
        not user.tenant.user_consent_allowed and app.client_id not in user.tenant.consented_apps
    ):
        return redirect_with(
            f["redirect_uri"],
            {
                "error": "consent_required",
                "error_description": f"AADSTS65001: The user or administrator has not consented to use the application with ID '{app.client_id}'. Send an interactive authorization request for this user and resource.",
                **back,
            },
        )
    code = secrets.token_urlsafe(32)
    sandbox.identity.put(
        sandbox.identity.codes,
        code,
        {
            "client_id": app.client_id,
            "redirect_uri": f["redirect_uri"],
            "challenge": f.get("code_challenge", ""),
            "scopes": scopes,
            "nonce": f.get("nonce", ""),
            "username": user.username,
            "expires": time.time() + CODE_LIFETIME,
        },
    )
    client_info = _b64(json.dumps({"uid": user.oid, "utid": user.tenant.id}).encode())
    return redirect_with(
        f["redirect_uri"],
        {"code": code, **back, "session_state": secrets.token_hex(8), "client_info": client_info},
    )


def client_of(request: Request):
    """The calling app, authenticated by client_secret_basic or client_secret_post, or the token
    endpoint's error answer (unknown app, expired secret, wrong secret)."""
    client_id, secret = request.form.get("client_id", ""), request.form.get("client_secret", "")
    auth = request.headers.get("authorization", "")
    if auth.startswith("Basic "):
        from urllib.parse import unquote_plus

        raw = base64.b64decode(auth[6:]).decode()
        client_id, _, secret = (unquote_plus(p) for p in raw.partition(":"))
    app = request.sandbox.directory.apps.get(client_id)
    if app is None:
        return None, token_error(
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory.",
        )
    if any(hmac.compare_digest(old, secret) for old in app.expired_secrets):
        return None, token_error(
            "invalid_client",
            7000222,
            f"The provided client secret keys for app '{client_id}' are expired.",
            401,
        )
    if not hmac.compare_digest(app.client_secret, secret):
        return None, token_error("invalid_client", 7000215, "Invalid client secret provided.", 401)
    return app, None


@route("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token")
def token(request: Request, tenant: str) -> Response:
    sandbox, f = request.sandbox, request.form
    with sandbox.lock:
        sandbox.counts["token"] += 1
    if sandbox.switches.token_latency:
        time.sleep(sandbox.switches.token_latency)
    app, refused = client_of(request)
    if app is None:
        return refused
    grant = f.get("grant_type")
    if grant == "authorization_code":
        code = sandbox.identity.take(sandbox.identity.codes, f.get("code", ""))
        if code is None or code["expires"] < time.time() or code["client_id"] != app.client_id:
            return token_error(
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired or was already used.",
            )
        if code["redirect_uri"] != f.get("redirect_uri"):
            return token_error(
                "invalid_grant",
                50148,
                "The redirect_uri does not match the one of the authorization request.",
            )
        verifier = f.get("code_verifier", "")
        if _b64(hashlib.sha256(verifier.encode()).digest()) != code["challenge"]:
            return token_error(
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            )
        user = sandbox.directory.user(code["username"])
        return Response.json(
            issue_tokens(request, user, app.client_id, code["scopes"], code["nonce"])
        )
    if grant == "refresh_token":
        # Rotation: a refresh token is good once; the answer carries its successor.
        with sandbox.lock:
            sandbox.counts["refresh"] += 1
        old = sandbox.identity.redeem(
            f.get("refresh_token", ""), keep=sandbox.switches.keep_used_refresh_tokens
        )
        if old is None or old["client_id"] not in (app.client_id, DEMO_GRANT_ANY_APP):
            return token_error(
                "invalid_grant", 70043, "The refresh token has expired or is invalid."
            )
        if sandbox.switches.grant_revoked(old["username"]):
            return token_error(
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
            )
        user = sandbox.directory.user(old["username"])
        scopes = f.get("scope", "").split() or old["scopes"]
        scopes = sorted(set(scopes) | {"offline_access", "openid", "profile"})
        return Response.json(issue_tokens(request, user, app.client_id, scopes))
    if grant == "client_credentials":
        known = sandbox.directory.tenant(tenant)
        if known is None:
            return token_error(
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found; client credentials need a tenant.",
            )
        if app.client_id not in known.consented_apps:
            return token_error(
                "invalid_grant",
                65001,
                f"The user or administrator has not consented to use the application with ID '{app.client_id}'.",
            )
        now = int(time.time())
        resource = resource_of(f.get("scope", "").split())
        access = sign(
            sandbox.identity.key,
            {
                "aud": resource,
                "appid": app.client_id,
                "tid": known.id,
                "roles": app_roles(app, resource),
                "iat": now,
                "exp": now + TOKEN_LIFETIME,
            },
        )
        return Response.json(
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME,
                "ext_expires_in": TOKEN_LIFETIME,
                "access_token": access,
            }
        )
    return token_error(
        "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'."
    )


# --- admin consent -------------------------------------------------------------------------------
@route("GET", r"/(?P<tenant>[^/]+)(?P<v2>/v2\.0)?/adminconsent", api=False)
def admin_consent_page(request: Request, tenant: str, v2: str | None) -> Response:
    app = request.sandbox.directory.apps.get(request.query.get("client_id", ""))
    if app is None or not request.query.get("redirect_uri"):
        return error_page("AADSTS700016: Unknown application or missing redirect_uri.")
    scopes = (
        request.query.get("scope", "").split()
        if v2
        else ["(the permissions the app registration lists)"]
    )
    return consent_page(
        request,
        "Permissions requested — accept for your organisation",
        f"<b>{escape(app.name)}</b> asks an administrator to consent on behalf of the whole organisation.",
        scopes,
    )


@route("POST", r"/(?P<tenant>[^/]+)(?P<v2>/v2\.0)?/adminconsent", api=False)
def admin_consent_answer(request: Request, tenant: str, v2: str | None) -> Response:
    sandbox, f = request.sandbox, request.form
    app = sandbox.directory.apps.get(f.get("client_id", ""))
    if app is None or not f.get("redirect_uri"):
        return error_page("AADSTS700016: Unknown application or missing redirect_uri.")
    back = {"state": f.get("state")}
    if f.get("action") != "accept" or sandbox.switches.deny_consent:
        return redirect_with(
            f["redirect_uri"],
            {
                "error": "access_denied",
                "error_description": "AADSTS65004: The administrator declined to consent.",
                **back,
            },
        )
    user, problem = signed_in_user(request, tenant)
    if user is None:
        return consent_page(
            request,
            "Permissions requested — accept for your organisation",
            "",
            f.get("scope", "").split(),
            problem,
        )
    if not user.admin:
        return redirect_with(
            f["redirect_uri"],
            {
                "error": "access_denied",
                "error_description": f"AADSTS90094: {user.username} is not an administrator; an admin must grant permission for the organisation.",
                **back,
            },
        )
    with sandbox.identity.lock:
        user.tenant.consented_apps.add(app.client_id)
    answer = {"admin_consent": "True", "tenant": user.tenant.id, **back}
    if v2:
        answer["scope"] = f.get("scope", "")
    return redirect_with(f["redirect_uri"], answer)
