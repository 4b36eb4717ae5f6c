"""The base of every API view: the role each HTTP method needs, and the key's reach decided once.

As NetBox's `BaseViewSet.initial`, `initial()` narrows the view's `queryset` to what the request's
key reaches (`fleet.access.key_scope`), before the handler runs; handlers read `self.queryset`
and `get_object()` and never scope anything themselves. An object outside the key's reach is a
404 (ids cannot be probed); one the key sees but whose workspace needs a higher role than the
key has there for this method is a 403 PERMISSION_DENIED.

    class MailboxDetail(FleetView):
        roles = {"GET": Role.VIEWER, "PATCH": Role.OPERATOR, "DELETE": Role.MANAGER}
        queryset = Mailbox.objects.all()
        lookup_field = "uid"
"""

from __future__ import annotations

from django.db.models import Model, QuerySet
from rest_framework.views import APIView

from fleet import access, errors
from fleet.api.envelope import ApiError, ok
from fleet.api.serializers import MAX_ID
from fleet.models import Role, Workspace


def workspace_id_of(obj: Model) -> int:
    return obj.pk if isinstance(obj, Workspace) else obj.workspace_id


class FleetView(APIView):
    roles: dict[str, str] = {}  # HTTP method → the role it needs; unlisted methods: viewer
    queryset: QuerySet | None = None
    lookup_field = "pk"
    lookup_url_kwarg: str | None = None  # the URL's name for it, when not lookup_field
    serializer_class = None  # what answers show, for `respond()`

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)  # key, permissions, rate limit
        self.role = self.roles.get(request.method, Role.VIEWER)
        if self.queryset is not None:
            # The instance's own copy: the class attribute stays unscoped for the next request.
            self.queryset = self.scope(self.queryset)

    # --- Reach -----------------------------------------------------------------------------------

    def scope(self, queryset: QuerySet) -> QuerySet:
        """`queryset`'s rows that the key sees (to read; `check_role` decides about more)."""
        return access.key_scope(queryset.all(), self.request.auth, Role.VIEWER)

    def operable(self, queryset: QuerySet, role: str | None = None) -> QuerySet:
        """`queryset`'s rows in the workspaces where the key may act with `role` (default: this
        method's): what a bulk operation over a selection may touch."""
        return access.key_scope(queryset.all(), self.request.auth, role or self.role)

    def get_object(self, queryset: QuerySet | None = None, **lookup) -> Model:
        """The object the URL names (or `lookup` names in `queryset`, scoped here): 404 when the
        key cannot see it, 403 when it can but this method needs a higher role there."""
        queryset = self.queryset if queryset is None else self.scope(queryset)
        if not lookup:
            value = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
            if self.lookup_field == "pk" and not 0 < value <= MAX_ID:
                raise ApiError(errors.NOT_FOUND, 404)
            lookup = {self.lookup_field: value}
        obj = queryset.filter(**lookup).first()
        if obj is None:
            raise ApiError(errors.NOT_FOUND, 404)
        if self.role != Role.VIEWER:  # seeing it is what the scope decided
            self.check_role(workspace_id_of(obj))
        return obj

    def check_role(self, workspace_id: int, role: str | None = None) -> None:
        """403 unless the key may act with `role` (default: this method's) in that workspace."""
        role = role or self.role
        if not access.key_allows(self.request.auth, workspace_id, role):
            raise ApiError(
                errors.PERMISSION_DENIED,
                403,
                f"{errors.PERMISSION_DENIED.message}: this needs the {role} role.",
            )

    def target_workspace(self) -> Workspace:
        """The workspace a create/connect/import call acts in, with this method's role: the
        workspace key's own, or for a platform key the `workspace_id` query parameter, which may
        be left out when the key's user has exactly one workspace where they hold the role."""
        key = self.request.auth
        raw = self.request.query_params.get("workspace_id")
        wanted = None
        if raw not in (None, ""):
            try:
                wanted = int(raw)
                if not 0 < wanted <= MAX_ID:
                    raise ValueError
            except ValueError:
                raise ApiError(
                    errors.VALIDATION_ERROR,
                    400,
                    "workspace_id: A valid workspace id is required.",
                    fields={"workspace_id": ["A valid workspace id is required."]},
                ) from None
        if key.workspace_id is not None:
            if wanted is not None and wanted != key.workspace_id:
                raise ApiError(errors.OUTSIDE_KEY_WORKSPACE, 403)
            self.check_role(key.workspace_id)
            return key.workspace
        if wanted is not None:
            return self.get_object(Workspace.objects.all(), pk=wanted)
        candidates = list(access.key_scope(Workspace.objects.all(), key, self.role)[:2])
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise ApiError(
                errors.PERMISSION_DENIED,
                403,
                f"{errors.PERMISSION_DENIED.message}: no workspace where this key has the "
                f"{self.role} role.",
            )
        raise ApiError(errors.WORKSPACE_REQUIRED, 400)

    # --- Requests and answers ---------------------------------------------------------------------------------

    def validated(self, serializer_class, data=None, **kwargs) -> dict:
        """The request's body (or `data`, e.g. the query parameters) as `serializer_class`
        accepts it; 400 VALIDATION_ERROR naming the fields otherwise."""
        serializer = serializer_class(
            data=self.request.data if data is None else data,
            context=self.get_serializer_context(),
            **kwargs,
        )
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def get_serializer_context(self) -> dict:
        return {"request": self.request, "view": self}

    def serialize(self, instance, *, many: bool = False, serializer_class=None):
        serializer_class = serializer_class or self.serializer_class
        return serializer_class(instance, many=many, context=self.get_serializer_context()).data

    def respond(self, instance, *, status: int = 200, many: bool = False, serializer_class=None):
        """The success envelope around `instance` as `serializer_class` shows it."""
        return ok(
            self.serialize(instance, many=many, serializer_class=serializer_class), status=status
        )
