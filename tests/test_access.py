"""fleet.access, the one role rule, and the API's base view that applies it once per request:
roles per user and per key, their cache (queries per request stay constant), and a view that
declares its roles answering 404 / 403 / 200 for every kind of key."""

import pathlib

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory

from fleet import access
from fleet.api.base import FleetView
from fleet.models import ApiKey, Mailbox, Membership, Role, Workspace
from tests.conftest import issue_key


def test_role_of_each_persona(personas, ws_a, ws_b):
    expected = {
        "alice": {ws_a.pk: Role.OPERATOR, ws_b.pk: None},
        "bob": {ws_a.pk: Role.MANAGER, ws_b.pk: Role.VIEWER},
        "olga": {ws_a.pk: None, ws_b.pk: None},
        "root": {ws_a.pk: Role.OWNER, ws_b.pk: Role.OWNER},
    }
    for name, roles in expected.items():
        for workspace_id, role in roles.items():
            assert access.role_of(personas[name], workspace_id) == role, (name, workspace_id)
    assert access.has_role(personas["bob"], Role.MANAGER, ws_a.pk)
    assert not access.has_role(personas["bob"], Role.OPERATOR, ws_b.pk)
    assert access.has_role(personas["alice"], Role.OPERATOR)  # in any workspace
    assert not access.has_role(personas["alice"], Role.MANAGER)
    assert not access.has_role(personas["olga"], Role.VIEWER)


def test_inactive_users_hold_no_role(personas, ws_a):
    bob = personas["bob"]
    bob.is_active = False
    assert access.role_of(bob, ws_a.pk) is None
    assert not access.has_role(bob, Role.VIEWER)
    root = personas["root"]
    root.is_active = False
    assert access.role_of(root, ws_a.pk) is None


def test_roles_up_to_is_what_a_user_may_hand_on(personas, ws_a, ws_b):
    assert access.roles_up_to(personas["alice"], ws_a.pk) == [Role.VIEWER, Role.OPERATOR]
    assert access.roles_up_to(personas["bob"], ws_b.pk) == [Role.VIEWER]
    assert access.roles_up_to(personas["olga"], ws_a.pk) == []
    assert access.roles_up_to(personas["root"], ws_a.pk) == Role.values


def test_role_ordering_primitives():
    assert Role.lower_of(Role.OWNER, Role.OPERATOR) == Role.OPERATOR
    assert Role.lower_of(Role.VIEWER, Role.MANAGER) == Role.VIEWER
    assert Role.lower_of(None, Role.MANAGER) is None
    assert Role.at_least(Role.MANAGER) == [Role.MANAGER, Role.OWNER]
    assert Role.includes(Role.MANAGER, Role.OPERATOR)
    assert not Role.includes(Role.OPERATOR, Role.MANAGER)
    assert not Role.includes(None, Role.VIEWER)


def test_roles_are_read_once_per_user_object(personas, ws_a, ws_b, django_assert_num_queries):
    bob = personas["bob"]
    with django_assert_num_queries(1):
        for _ in range(5):
            assert access.role_of(bob, ws_a.pk) == Role.MANAGER
            assert access.role_of(bob, ws_b.pk) == Role.VIEWER
            assert access.has_role(bob, Role.VIEWER)
    Membership.objects.filter(user=bob, workspace=ws_b).update(role=Role.OWNER)
    assert access.role_of(bob, ws_b.pk) == Role.VIEWER  # the same request: its first reading
    access.forget_roles(bob)
    assert access.role_of(bob, ws_b.pk) == Role.OWNER


def test_key_roles_are_capped_by_the_key_and_by_the_creator(personas, ws_a, ws_b):
    bob = personas["bob"]  # manager of A, viewer of B
    platform = ApiKey(user=bob)
    owner_key = ApiKey(user=bob, workspace=ws_a, role=Role.OWNER)
    viewer_key = ApiKey(user=bob, workspace=ws_a, role=Role.VIEWER)
    assert access.key_role(platform, ws_a.pk) == Role.MANAGER
    assert access.key_role(platform, ws_b.pk) == Role.VIEWER
    assert access.key_role(owner_key, ws_a.pk) == Role.MANAGER  # never more than its creator
    assert access.key_role(owner_key, ws_b.pk) is None  # outside its workspace
    assert access.key_role(viewer_key, ws_a.pk) == Role.VIEWER
    assert not access.key_allows(viewer_key, ws_a.pk, Role.OPERATOR)


def queries_for(api, key, path) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = api("get", path, key)
    assert response.status_code == 200, response.content
    return len(queries)


def test_queries_per_request_do_not_grow_with_the_workspaces_shown(api, personas):
    """Each workspace in the list shows the key's role there: one membership read for all."""
    _, raw = issue_key(name="crm", user=personas["alice"])
    Workspace.objects.all().delete()

    def join(names):
        for name in names:
            workspace = Workspace.objects.create(name=name, slug=name)
            Membership.objects.create(user=personas["alice"], workspace=workspace, role="viewer")

    join(["w1"])
    api("get", "/api/v1/workspaces", raw)  # its first use writes last_used_at
    one = queries_for(api, raw, "/api/v1/workspaces")
    join(["w2", "w3", "w4", "w5", "w6", "w7"])
    seven = queries_for(api, raw, "/api/v1/workspaces")
    assert len(api("get", "/api/v1/workspaces", raw).json()["data"]) == 7
    assert seven == one


def test_queries_per_request_do_not_grow_with_role_checks(api, api_keys, mailboxes, ws_a):
    """A manager's PATCH checks two roles (operator for the call, manager for the warmup
    fields); a mailbox list of many rows checks none per row."""
    uid = mailboxes["a"].uid
    api("get", "/api/v1/mailboxes", api_keys["bob_platform"])  # its first use writes last_used_at
    before = queries_for(api, api_keys["bob_platform"], "/api/v1/mailboxes")
    for n in range(10):
        Mailbox.objects.create(workspace=ws_a, email=f"m{n}@alpha.example", auth_method="oauth")
    assert queries_for(api, api_keys["bob_platform"], "/api/v1/mailboxes") == before

    with CaptureQueriesContext(connection) as name_only:
        api(
            "patch",
            f"/api/v1/mailboxes/{uid}",
            api_keys["bob_platform"],
            data={"display_name": "A"},
        )
    with CaptureQueriesContext(connection) as with_warmup:
        response = api(
            "patch",
            f"/api/v1/mailboxes/{uid}",
            api_keys["bob_platform"],
            data={"display_name": "B", "warmup_daily_volume": 10},
        )
    assert response.status_code == 200
    memberships = [q["sql"] for q in with_warmup.captured_queries if "fleet_membership" in q["sql"]]
    # The scope's subquery and one read of the user's roles, however many checks.
    assert len(memberships) == len(
        [q for q in name_only.captured_queries if "fleet_membership" in q["sql"]]
    )


def test_admin_reads_roles_once_per_page(client_for, personas, mailboxes):
    client = client_for(personas["bob"])
    with CaptureQueriesContext(connection) as queries:
        page = client.get("/admin/fleet/mailbox/")
    assert page.status_code == 200
    role_reads = [
        q["sql"]
        for q in queries.captured_queries
        if 'FROM "fleet_membership" WHERE "fleet_membership"."user_id"' in q["sql"]
    ]
    assert len(role_reads) == 1, role_reads


# --- The base view -------------------------------------------------------------------------------


class Probe(FleetView):
    """A view that only declares its roles: what it answers is decided by FleetView."""

    roles = {"GET": Role.VIEWER, "PATCH": Role.OPERATOR, "DELETE": Role.MANAGER}
    queryset = Mailbox.objects.all()
    lookup_field = "uid"

    def get(self, request, uid):
        return Response({"email": self.get_object().email})

    patch = delete = get


# key → mailbox → (GET, PATCH, DELETE)
ALL, NONE = (200, 200, 200), (404, 404, 404)
PROBE = {
    "root_platform": {"a": ALL, "b": ALL},
    "bob_platform": {"a": ALL, "b": (200, 403, 403)},  # manager of A, viewer of B
    "alice_platform": {"a": (200, 200, 403), "b": NONE},  # operator of A
    "olga_platform": {"a": NONE, "b": NONE},
    "a_manager": {"a": ALL, "b": NONE},
    "a_operator": {"a": (200, 200, 403), "b": NONE},
    "a_viewer": {"a": (200, 403, 403), "b": NONE},
    "b_viewer": {"a": NONE, "b": (200, 403, 403)},
}


def test_base_view_answers_by_declared_role_and_key_reach(api_keys, mailboxes):
    """All cells in one run, in turn: a workspace key's request must not narrow the next one's
    (the view's class-level queryset stays unscoped)."""
    view = Probe.as_view()
    factory = APIRequestFactory()
    seen = {}
    for key_name, row in PROBE.items():
        for name, statuses in row.items():
            mailbox = mailboxes[name]
            for method, status in zip(("get", "patch", "delete"), statuses, strict=True):
                request = getattr(factory, method)("/probe", HTTP_X_API_KEY=api_keys[key_name])
                response = view(request, uid=mailbox.uid)
                seen[key_name, name, method] = response.status_code
                assert response.status_code == status, (key_name, name, method, response.data)
                if status == 200:
                    assert response.data == {"email": mailbox.email}
                else:
                    code = "NOT_FOUND" if status == 404 else "PERMISSION_DENIED"
                    assert response.data["error"]["code"] == code
    assert len(seen) == 8 * 2 * 3
    assert Probe.queryset.query.where.children == []  # never scoped in place


def test_base_view_refuses_requests_without_a_valid_key(api_keys, mailboxes):
    view = Probe.as_view()
    factory = APIRequestFactory()
    uid = mailboxes["a"].uid
    missing = view(factory.get("/probe"), uid=uid)
    assert (missing.status_code, missing.data["error"]["code"]) == (401, "API_KEY_MISSING")
    revoked = view(factory.get("/probe", HTTP_X_API_KEY=api_keys["revoked"]), uid=uid)
    assert (revoked.status_code, revoked.data["error"]["code"]) == (401, "API_KEY_REVOKED")


def test_no_api_view_scopes_by_itself():
    """Scoping happens in fleet/api/base.py (FleetView) only."""
    api_dir = pathlib.Path(__file__).resolve().parent.parent / "fleet" / "api"
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(api_dir.glob("*.py"))
        if path.name != "base.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(call in line for call in ("restrict(", "key_scope(", "key_allows("))
    ]
    assert offenders == []


@pytest.mark.parametrize("key_name", ["a_manager", "bob_platform"])
def test_a_creator_who_leaves_takes_the_keys_rights(key_name, api_keys, mailboxes, personas):
    view = Probe.as_view()
    factory = APIRequestFactory()
    uid = mailboxes["a"].uid
    assert view(factory.get("/p", HTTP_X_API_KEY=api_keys[key_name]), uid=uid).status_code == 200
    Membership.objects.filter(user=personas["bob"], workspace__slug="alpha").delete()
    assert view(factory.get("/p", HTTP_X_API_KEY=api_keys[key_name]), uid=uid).status_code == 404
