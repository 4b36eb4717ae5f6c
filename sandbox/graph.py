"""Graph routes of the sandbox, as Fleet uses them:

- `GET /me` (delegated tokens) — https://learn.microsoft.com/graph/api/user-get
- `GET /users/{id | userPrincipalName}` — the same page
- `GET /users?$filter=proxyAddresses/any(x:x eq 'smtp:…')` — an advanced query: like Graph, it
  needs `ConsistencyLevel: eventual` and `$count=true`
  (https://learn.microsoft.com/graph/aad-advanced-queries)
- `GET /users/{id}/mailboxSettings` — `MailboxNotEnabledForRESTAPI` for a user without an
  Exchange Online mailbox, `ErrorAccessDenied` when an application access policy leaves the
  mailbox out (https://learn.microsoft.com/graph/auth-limit-mailbox-access)
- `POST /$batch` — at most 20 requests, each answered with its own status, headers (Retry-After)
  and body (https://learn.microsoft.com/graph/json-batching)

App-only tokens are checked like Graph does: the audience, the tenant (a token reaches its own
tenant's users only) and the application permissions (`roles`).
"""

from __future__ import annotations

import json
import random
import re
from urllib.parse import parse_qsl, unquote, urlsplit

from sandbox.identity import verified_claims
from sandbox.server import Request, Response, route

GRAPH = "https://graph.microsoft.com"
MAX_BATCH = 20
PROXY_FILTER = re.compile(r"proxyAddresses/any\(\s*(\w+)\s*:\s*\1\s+eq\s+'((?:[^']|'')*)'\s*\)\Z")


def graph_error(status: int, code: str, message: str, **headers) -> Response:
    return Response.json({"error": {"code": code, "message": message}}, status, **headers)


def bearer_claims(request: Request) -> dict | None:
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Bearer "):
        return None
    claims = verified_claims(request.sandbox.identity.key, auth[7:])
    return claims if claims and claims.get("aud") == GRAPH else None


def unauthorized() -> Response:
    return graph_error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")


def caller(request: Request, permission: str):
    """(tenant, None) for a token that may `permission` (an app role, or a delegated user),
    else (None, the error response)."""
    claims = bearer_claims(request)
    if claims is None:
        return None, unauthorized()
    if "upn" not in claims and permission not in claims.get("roles", []):
        return None, graph_error(
            403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
        )
    tenant = request.sandbox.directory.tenant(claims.get("tid", ""))
    if tenant is None:
        return None, unauthorized()
    return tenant, None


def user_json(user, select: str = "") -> dict:
    data = {
        "id": user.oid,
        "displayName": user.name,
        "mail": user.username,
        "userPrincipalName": user.user_principal_name,
        "proxyAddresses": user.proxy_addresses,
    }
    if select:
        wanted = {s.strip() for s in select.split(",")} | {"id"}
        return {k: v for k, v in data.items() if k in wanted}
    data.pop("proxyAddresses")  # not among Graph's default properties
    return data


@route("GET", r"/v1\.0/me", graph=True)
def me(request: Request) -> Response:
    claims = bearer_claims(request)
    if claims is None:
        return unauthorized()
    if "upn" not in claims:
        return graph_error(
            400, "BadRequest", "/me request is only valid with delegated authentication flow."
        )
    user = request.sandbox.directory.user(claims["upn"])
    if user is None:
        return graph_error(404, "Request_ResourceNotFound", "The user does not exist.")
    return Response.json(
        {
            "@odata.context": f"{request.sandbox.graph_url}/$metadata#users/$entity",
            **user_json(user),
        }
    )


@route("GET", r"/v1\.0/users/(?P<key>[^/]+)", graph=True)
def get_user(request: Request, key: str) -> Response:
    tenant, refused = caller(request, "User.Read.All")
    if refused:
        return refused
    user = request.sandbox.directory.user_by_id_or_upn(unquote(key), tenant)
    if user is None:
        return graph_error(
            404,
            "Request_ResourceNotFound",
            f"Resource '{unquote(key)}' does not exist or one of its queried reference-property "
            "objects are not present.",
        )
    return Response.json(
        {
            "@odata.context": f"{request.sandbox.graph_url}/$metadata#users/$entity",
            **user_json(user, request.query.get("$select", "")),
        }
    )


@route("GET", r"/v1\.0/users", graph=True)
def list_users(request: Request) -> Response:
    tenant, refused = caller(request, "User.Read.All")
    if refused:
        return refused
    expression = request.query.get("$filter", "")
    if not expression:
        return list_all_users(request, tenant)
    match = PROXY_FILTER.match(expression.strip())
    if match is None:
        return graph_error(
            400, "Request_UnsupportedQuery", f"Unsupported query (sandbox): {expression!r}"
        )
    # Filtering with `any` on proxyAddresses is an advanced query for the sandbox, as the brief
    # of https://learn.microsoft.com/graph/aad-advanced-queries describes for such filters.
    if (
        request.headers.get("consistencylevel", "").lower() != "eventual"
        or request.query.get("$count", "").lower() != "true"
    ):
        return graph_error(
            400,
            "Request_UnsupportedQuery",
            "Unsupported or invalid query filter clause specified for property 'proxyAddresses' "
            "of resource 'User'. (Advanced queries need ConsistencyLevel: eventual and "
            "$count=true.)",
        )
    address = match.group(2).replace("''", "'")
    users = request.sandbox.directory.users_with_proxy_address(address, tenant)
    select = request.query.get("$select", "")
    return Response.json(
        {
            "@odata.context": f"{request.sandbox.graph_url}/$metadata#users",
            "@odata.count": len(users),
            "value": [user_json(u, select) for u in users],
        }
    )


def list_all_users(request: Request, tenant) -> Response:
    """`GET /users?$top=N&$select=…`: the tenant's users, first page only (what a permission
    check needs: https://learn.microsoft.com/graph/api/user-list)."""
    try:
        top = max(1, min(999, int(request.query.get("$top", "100"))))
    except ValueError:
        return graph_error(400, "BadRequest", "Invalid $top.")
    users = [u for u in request.sandbox.directory.users.values() if u.tenant is tenant][:top]
    select = request.query.get("$select", "")
    return Response.json(
        {
            "@odata.context": f"{request.sandbox.graph_url}/$metadata#users",
            "value": [user_json(u, select) for u in users],
        }
    )


@route("GET", r"/v1\.0/users/(?P<key>[^/]+)/mailboxSettings", graph=True)
def mailbox_settings(request: Request, key: str) -> Response:
    tenant, refused = caller(request, "MailboxSettings.Read")
    if refused:
        return refused
    user = request.sandbox.directory.user_by_id_or_upn(unquote(key), tenant)
    if user is None:
        return graph_error(
            404, "ErrorInvalidUser", f"The requested user '{unquote(key)}' is invalid."
        )
    if not user.mailbox:
        return graph_error(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    if user.app_access_denied and "upn" not in (bearer_claims(request) or {}):
        return graph_error(
            403,
            "ErrorAccessDenied",
            "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly "
            "AccessPolicy settings.",
        )
    return Response.json(
        {
            "@odata.context": f"{request.sandbox.graph_url}/$metadata#users('{user.oid}')/mailboxSettings",
            "timeZone": "UTC",
            "language": {"locale": "en-US", "displayName": "English (United States)"},
            "dateFormat": "M/d/yyyy",
            "timeFormat": "h:mm tt",
            "userPurpose": "user",
            "automaticRepliesSetting": {"status": "disabled"},
        }
    )


@route("POST", r"/v1\.0/\$batch")
def batch(request: Request) -> Response:
    """JSON batching: each inner request runs through the same routes (and failure switches)
    with the envelope's Authorization; answers come back in no particular order, as Graph's."""
    sandbox = request.sandbox
    with sandbox.lock:
        sandbox.counts["batch"] += 1
    sandbox = request.sandbox
    if bearer_claims(request) is None:
        return unauthorized()
    try:
        inner = request.json().get("requests")
    except ValueError:
        inner = None
    if not isinstance(inner, list) or not inner:
        return graph_error(400, "BadRequest", "Invalid batch payload: 'requests' is required.")
    if len(inner) > MAX_BATCH:
        return graph_error(
            400,
            "BadRequest",
            f"Batch request exceeds the maximum number of requests ({MAX_BATCH}).",
        )
    ids = [str(r.get("id", "")) for r in inner if isinstance(r, dict)]
    if len(ids) != len(inner) or "" in ids or len(set(ids)) != len(ids):
        return graph_error(400, "BadRequest", "Every request needs a unique id.")
    answers = []
    for item in inner:
        url = urlsplit(str(item.get("url", "")))
        path = url.path if url.path.startswith("/") else "/" + url.path
        headers = {k.lower(): str(v) for k, v in (item.get("headers") or {}).items()}
        headers["authorization"] = request.headers.get("authorization", "")
        body = item.get("body")
        sub = Request(
            method=str(item.get("method", "GET")).upper(),
            path="/v1.0" + path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            form={},
            headers=headers,
            body=json.dumps(body).encode() if body is not None else b"",
            sandbox=sandbox,
            browser=False,
        )
        answer = sandbox.dispatch(sub, inner=True)
        if isinstance(answer.body, (dict, list)):  # as it is: encoded once, with the envelope
            content = answer.body
        else:
            try:
                content = json.loads(answer.encoded() or b"null")
            except ValueError:
                content = answer.encoded().decode(errors="replace")
        answers.append(
            {"id": item["id"], "status": answer.status, "headers": answer.headers, "body": content}
        )
    random.shuffle(answers)
    return Response.json({"responses": answers})
