"""Workspaces: list and read with any key; create and delete with a platform key; rename and
set the webhook as an owner."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from drf_spectacular.utils import extend_schema

from fleet import access, audit, errors, health
from fleet.api.auth import PlatformKeyOnly
from fleet.api.base import FleetView
from fleet.api.envelope import ApiError, ok
from fleet.api.schema import envelope
from fleet.api.serializers import (
    WebhookSerializer,
    WebhookWriteSerializer,
    WorkspaceSerializer,
    WorkspaceWriteSerializer,
)
from fleet.models import Membership, Role, Workspace
from fleet.webhook_targets import validate_webhook_url

TAG = ["Workspaces"]


class WorkspaceView(FleetView):
    queryset = Workspace.objects.all()
    serializer_class = WorkspaceSerializer

    def get_object(self, queryset=None, **lookup) -> Workspace:
        """A workspace key naming another workspace is refused outright (403, decided without a
        lookup, so nothing is revealed); otherwise 404 outside the key's reach, 403 below the
        method's role."""
        key = self.request.auth
        if key.workspace_id is not None and self.kwargs["pk"] != key.workspace_id:
            raise ApiError(errors.OUTSIDE_KEY_WORKSPACE, 403)
        return super().get_object(queryset, **lookup)


class WorkspaceList(WorkspaceView):
    def get_permissions(self):
        if self.request.method == "POST":
            return [*super().get_permissions(), PlatformKeyOnly()]
        return super().get_permissions()

    @extend_schema(
        tags=TAG,
        operation_id="workspaces_list",
        summary="List workspaces",
        description="The workspaces the key reaches: a workspace key its own, a platform key "
        "those of its user.",
        responses={200: envelope("WorkspaceListEnvelope", WorkspaceSerializer(many=True))},
    )
    def get(self, request):
        return self.respond(self.queryset.order_by("name", "pk"), many=True)

    @extend_schema(
        tags=TAG,
        operation_id="workspaces_create",
        summary="Create workspace",
        description="Platform keys of platform operators (superusers) only, as in the admin; "
        "the key's user becomes the owner.",
        request=WorkspaceWriteSerializer,
        responses={201: envelope("WorkspaceEnvelope", WorkspaceSerializer())},
    )
    def post(self, request):
        if not request.user.is_superuser:
            raise ApiError(
                errors.PERMISSION_DENIED,
                403,
                f"{errors.PERMISSION_DENIED.message}: workspaces are created by platform "
                "operators (superusers).",
            )
        data = self.validated(WorkspaceWriteSerializer)
        with transaction.atomic():
            workspace = Workspace.objects.create(**data)
            membership = Membership.objects.create(
                user=request.user, workspace=workspace, role=Role.OWNER
            )
            audit.record(
                "workspace.created", workspace, actor=request.user, via="api",
                changes=audit.set_fields(workspace, ["name", "slug"]),
            )
            audit.record(
                "membership.created", membership, actor=request.user, via="api",
                changes=audit.set_fields(membership, ["user_id", "role"]),
            )
        access.forget_roles(request.user)
        return self.respond(workspace, status=201)


class WorkspaceDetail(WorkspaceView):
    roles = {"GET": Role.VIEWER, "PATCH": Role.OWNER, "DELETE": Role.OWNER}

    def get_permissions(self):
        if self.request.method == "DELETE":
            return [*super().get_permissions(), PlatformKeyOnly()]
        return super().get_permissions()

    @extend_schema(
        tags=TAG,
        operation_id="workspaces_get",
        summary="Get workspace details",
        responses={200: envelope("WorkspaceEnvelope", WorkspaceSerializer())},
    )
    def get(self, request, pk: int):
        return self.respond(self.get_object())

    @extend_schema(
        tags=TAG,
        operation_id="workspaces_update",
        summary="Update workspace",
        description="Owners: rename, change the slug, or set `health_check_interval_hours` "
        "(every mailbox is tested once per interval, at least 1 hour).",
        request=WorkspaceWriteSerializer(partial=True),
        responses={200: envelope("WorkspaceEnvelope", WorkspaceSerializer())},
    )
    def patch(self, request, pk: int):
        workspace = self.get_object()
        changes = self.validated(WorkspaceWriteSerializer, instance=workspace, partial=True)
        interval = changes.pop("health_check_interval", None)
        before = audit.snapshot(workspace, changes)
        for field, value in changes.items():
            setattr(workspace, field, value)
        with transaction.atomic():
            workspace.save(update_fields=[*changes] or None)
            if changes := audit.diff(workspace, before):
                audit.record(
                    "workspace.updated", workspace, actor=request.user, via="api", changes=changes
                )
            if interval is not None:
                health.set_interval(workspace, interval)
        return self.respond(workspace)

    @extend_schema(
        tags=TAG,
        operation_id="workspaces_delete",
        summary="Delete workspace",
        description="Platform keys of the workspace's owners only. Deletes its mailboxes, "
        "credentials and history.",
        responses={200: envelope("WorkspaceDeletedEnvelope", WorkspaceSerializer())},
    )
    def delete(self, request, pk: int):
        workspace = self.get_object()
        data = self.serialize(workspace)
        with transaction.atomic():
            audit.record("workspace.deleted", workspace, actor=request.user, via="api")
            workspace.delete()
        return ok(data)


class WorkspaceWebhook(WorkspaceView):
    roles = {"POST": Role.OWNER}
    serializer_class = WebhookSerializer

    @extend_schema(
        tags=TAG,
        operation_id="workspaces_webhook_update",
        summary="Update workspace webhook",
        description="Owners: set the URL that receives signed events and its signing secret "
        "(write-only). An empty URL turns webhooks off. Setting either turns deliveries back on "
        "after a 410.",
        request=WebhookWriteSerializer,
        responses={200: envelope("WebhookEnvelope", WebhookSerializer())},
    )
    def post(self, request, pk: int):
        workspace = self.get_object()
        data = self.validated(WebhookWriteSerializer)
        url, secret = data["url"], data.get("secret")
        try:
            validate_webhook_url(url)  # https, public addresses only (no SSRF)
        except DjangoValidationError as refusal:
            message = refusal.messages[0]
            raise ApiError(
                errors.VALIDATION_ERROR, 400, f"url: {message}", fields={"url": [message]}
            ) from None
        if url and not (secret or workspace.webhook_secret):
            raise ApiError(
                errors.VALIDATION_ERROR,
                400,
                "secret: Set a signing secret: receivers need it to verify deliveries.",
                fields={"secret": ["Required with a URL when no secret is set yet."]},
            )
        before = audit.snapshot(workspace, ["webhook_url", "webhook_secret", "webhook_enabled"])
        workspace.webhook_url = url
        if secret is not None:
            workspace.webhook_secret = secret
        workspace.reenable_webhook()
        with transaction.atomic():
            workspace.save()
            audit.record(
                "workspace.webhook_updated", workspace, actor=request.user, via="api",
                changes=audit.diff(workspace, before),
            )
        return self.respond(workspace)
