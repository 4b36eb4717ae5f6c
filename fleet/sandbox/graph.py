"""Graph routes of the sandbox (https://learn.microsoft.com/graph/api/user-get). Later issues add
user lookups, proxyAddresses filters, mailbox settings and `$batch` here with `@route`."""

from __future__ import annotations

from fleet.sandbox.identity import verified_claims
from fleet.sandbox.server import Request, Response, route

GRAPH = "https://graph.microsoft.com"


def graph_error(status: int, code: str, message: str) -> Response:
    return Response.json({"error": {"code": code, "message": message}}, status)


def bearer_claims(request: Request) -> dict | None:
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Bearer "):
        return None
    claims = verified_claims(request.sandbox.identity.key, auth[7:])
    return claims if claims and claims.get("aud") == GRAPH else None


def user_json(user) -> dict:
    return {
        "id": user.oid,
        "displayName": user.name,
        "mail": user.username,
        "userPrincipalName": user.username,
    }


@route("GET", r"/v1\.0/me")
def me(request: Request) -> Response:
    claims = bearer_claims(request)
    if claims is None:
        return graph_error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
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
