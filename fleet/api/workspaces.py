"""Workspaces: list and read with any key; create and delete with a platform key; rename and
set the webhook as an owner."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework.views import APIView

from fleet import errors
from fleet.api.auth import PlatformKeyOnly, get_scoped, scoped
from fleet.api.envelope import ApiError, ok
from fleet.api.schema import envelope
from fleet.api.serializers import (
    MAX_ID,
    WebhookSerializer,
    WebhookWriteSerializer,
    WorkspaceSerializer,
    WorkspaceWriteSerializer,
    webhook_data,
    workspace_data,
)
from fleet.models import Membership, Role, Workspace
from fleet.webhook_targets import validate_webhook_url

TAG = ["Workspaces"]


def workspace_in_reach(request, pk: int, role: str) -> Workspace:
    """A workspace key naming another workspace is refused outright (403, decided without a
    lookup, so nothing is revealed); otherwise 404 outside the key's reach, 403 below `role`."""
    key = request.auth
    if key.workspace_id is not None and pk != key.workspace_id:
        raise ApiError(errors.OUTSIDE_KEY_WORKSPACE, 403)
    if pk > MAX_ID:
        raise ApiError(errors.NOT_FOUND, 404)
    return get_scoped(request, Workspace.objects.all(), role, pk=pk)


class WorkspaceList(APIView):
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
        workspaces = scoped(request, Workspace.objects.all()).order_by("name", "pk")
        return ok([workspace_data(w, request.auth) for w in workspaces])

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
        serializer = WorkspaceWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            workspace = Workspace.objects.create(**serializer.validated_data)
            Membership.objects.create(user=request.user, workspace=workspace, role=Role.OWNER)
        return ok(workspace_data(workspace, request.auth), status=201)


class WorkspaceDetail(APIView):
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
        return ok(workspace_data(workspace_in_reach(request, pk, Role.VIEWER), request.auth))

    @extend_schema(
        tags=TAG,
        operation_id="workspaces_update",
        summary="Update workspace",
        description="Owners: rename, or change the slug.",
        request=WorkspaceWriteSerializer(partial=True),
        responses={200: envelope("WorkspaceEnvelope", WorkspaceSerializer())},
    )
    def patch(self, request, pk: int):
        workspace = workspace_in_reach(request, pk, Role.OWNER)
        serializer = WorkspaceWriteSerializer(workspace, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        for field, value in serializer.validated_data.items():
            setattr(workspace, field, value)
        workspace.save(update_fields=[*serializer.validated_data] or None)
        return ok(workspace_data(workspace, request.auth))

    @extend_schema(
        tags=TAG,
        operation_id="workspaces_delete",
        summary="Delete workspace",
        description="Platform keys of the workspace's owners only. Deletes its mailboxes, "
        "credentials and history.",
        responses={200: envelope("WorkspaceDeletedEnvelope", WorkspaceSerializer())},
    )
    def delete(self, request, pk: int):
        workspace = workspace_in_reach(request, pk, Role.OWNER)
        data = workspace_data(workspace, request.auth)
        workspace.delete()
        return ok(data)


class WorkspaceWebhook(APIView):
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
        workspace = workspace_in_reach(request, pk, Role.OWNER)
        serializer = WebhookWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        url = serializer.validated_data["url"]
        secret = serializer.validated_data.get("secret")
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
        workspace.webhook_url = url
        if secret is not None:
            workspace.webhook_secret = secret
        workspace.reenable_webhook()
        workspace.save()
        return ok(webhook_data(workspace))
