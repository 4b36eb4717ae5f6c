"""Who may do what, and where: the one role rule, for the admin, the API and the services.

A person's role in a workspace is their Membership's (owner everywhere for superusers, nothing
for inactive or anonymous users). An API key acts as its user: a platform key with the user's
role in each of their workspaces, a workspace key in its own workspace only and with at most the
role it was given (`ApiKey.cap`). Which rows a role reaches is `Model.objects.restrict(user,
role)`; the ordering of roles (`Role.at_least`, `Role.lower_of`, …) lives on `Role` in
fleet/models.py so that models can use it without importing this module.

A user's roles are read in one query and kept on the user object. Each request loads its user
afresh (the admin's session user, the API key's user), so that is one query per request however
many checks a page or an answer makes; code that changes memberships and then checks again on the
same object calls `forget_roles`.
"""

from __future__ import annotations

from django.db.models import QuerySet

from fleet.models import ApiKey, Membership, Role

_CACHE = "_fleet_roles"


def roles_of(user) -> dict[int, str]:
    """The user's role per workspace id (superusers: only their memberships; see role_of)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return {}
    cached = getattr(user, _CACHE, None)
    if cached is None:
        cached = dict(
            Membership.objects.filter(user_id=user.pk).values_list("workspace_id", "role")
        )
        setattr(user, _CACHE, cached)
    return cached


def forget_roles(user) -> None:
    """Read the user's memberships again at the next check (after changing them)."""
    if user is not None and hasattr(user, _CACHE):
        delattr(user, _CACHE)


def role_of(user, workspace_id: int) -> str | None:
    """The user's role in that workspace: owner for superusers, None for outsiders."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return Role.OWNER
    return roles_of(user).get(workspace_id)


def has_role(user, role: str, workspace_id: int | None = None) -> bool:
    """Whether the user holds at least `role` in that workspace (in any, when None)."""
    if workspace_id is not None:
        return Role.includes(role_of(user, workspace_id), role)
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or any(Role.includes(r, role) for r in roles_of(user).values())


def roles_up_to(user, workspace_id: int) -> list[str]:
    """The roles the user may hand on in that workspace (to an API key): none higher than
    their own."""
    return Role.up_to(role_of(user, workspace_id))


# --- API keys ------------------------------------------------------------------------------------


def key_role(key: ApiKey, workspace_id: int) -> str | None:
    """What the key may do in that workspace: None outside its reach."""
    return key.cap(workspace_id, role_of(key.user, workspace_id))


def key_allows(key: ApiKey, workspace_id: int, role: str) -> bool:
    return Role.includes(key_role(key, workspace_id), role)


def key_scope(queryset: QuerySet, key: ApiKey, role: str = Role.VIEWER) -> QuerySet:
    """The rows the key reaches with at least `role`: its user's rows (`restrict`), narrowed
    to a workspace key's own workspace and empty when the key's own role is lower."""
    queryset = queryset.restrict(key.user, role)
    if key.workspace_id is not None:
        if not Role.includes(key.role, role):
            return queryset.none()
        queryset = queryset.filter(**{queryset.model.workspace_lookup: key.workspace_id})
    return queryset


# --- Who is told -----------------------------------------------------------------------------------


def holders(workspace_id: int, role: str) -> QuerySet[Membership]:
    """The memberships of the workspace's active users who hold at least `role` there (the
    people a workspace's alerts go to; superusers only through a membership of their own)."""
    return Membership.objects.filter(
        workspace_id=workspace_id, role__in=Role.at_least(role), user__is_active=True
    )


def may_change_alert_emails(user, membership: Membership) -> bool:
    """A member turns their own alert e-mails on or off; managers (and owners) anyone's in
    their workspace."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return membership.user_id == user.pk or has_role(user, Role.MANAGER, membership.workspace_id)
