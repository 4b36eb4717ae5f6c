"""The audit log for programs: `GET /api/v1/audit-log`, newest first, cursor-paginated, with
the admin's filters. Viewers and above of a workspace read its entries; a platform key reads
those of all its user's workspaces, a workspace key its own workspace's (FleetView scopes)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers

from fleet import audit
from fleet.api.base import FleetView
from fleet.api.pagination import CursorPage
from fleet.api.schema import envelope
from fleet.api.serializers import MAX_ID
from fleet.models import AuditEntry


class AuditEntrySerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_name", help_text='A username, or "system".')

    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "created_at",
            "workspace_id",
            "actor",
            "actor_id",
            "api_key_prefix",
            "via",
            "client_address",
            "request_id",
            "object_type",
            "object_id",
            "object_repr",
            "action",
            "changes",
        ]


class AuditFilterSerializer(serializers.Serializer):
    workspace_id = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    actor = serializers.CharField(
        required=False, max_length=150, help_text='A username, or "system".'
    )
    action = serializers.ChoiceField(choices=audit.ACTIONS, required=False)
    object_type = serializers.ChoiceField(choices=audit.OBJECT_TYPES, required=False)
    object_id = serializers.CharField(required=False, max_length=64)
    via = serializers.ChoiceField(choices=AuditEntry.Via.choices, required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    cursor = serializers.CharField(required=False, max_length=500)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200)

    def validate(self, data):
        if "since" in data and "until" in data and data["until"] < data["since"]:
            raise serializers.ValidationError({"until": ["Must not be before since."]})
        if "since" in data and "until" in data and data["until"] - data["since"] > timedelta(
            days=3660
        ):
            raise serializers.ValidationError({"since": ["A range of at most ten years."]})
        return data


class AuditPage(CursorPage):
    # The order of the (workspace, created_at, id) index: each page is one range read of it.
    ordering = ("-created_at", "-id")


class AuditLogList(FleetView):
    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer

    @extend_schema(
        tags=["Audit log"],
        operation_id="audit_log_list",
        summary="List audit entries",
        description="Who changed what, when, from which address and through what (admin, API "
        "or a task), newest first. Secrets are never shown: a secret field's change reads "
        '"changed".',
        parameters=[
            OpenApiParameter("workspace_id", int),
            OpenApiParameter("actor", str, description='A username, or "system".'),
            OpenApiParameter("action", str, enum=audit.ACTIONS),
            OpenApiParameter("object_type", str, enum=audit.OBJECT_TYPES),
            OpenApiParameter("object_id", str, description="e.g. a mailbox's uid."),
            OpenApiParameter("via", str, enum=AuditEntry.Via.values),
            OpenApiParameter("since", str, description="ISO 8601 date-time."),
            OpenApiParameter("until", str, description="ISO 8601 date-time."),
            OpenApiParameter("cursor", str, description="From `pagination.next`."),
            OpenApiParameter("limit", int, description="Page size, 1 to 200 (default 50)."),
        ],
        responses={
            200: envelope(
                "AuditEntryListEnvelope", AuditEntrySerializer(many=True), paginated=True
            )
        },
    )
    def get(self, request):
        wanted = self.validated(AuditFilterSerializer, request.query_params)
        entries = self.queryset
        if "workspace_id" in wanted:
            entries = entries.filter(workspace_id=wanted["workspace_id"])
        if wanted.get("actor") == AuditEntry.SYSTEM:
            entries = entries.filter(actor=None)
        elif "actor" in wanted:
            user = get_user_model().objects.filter(username=wanted["actor"]).first()
            # By id (indexed) while the user exists; by the name kept on the entry after.
            entries = entries.filter(
                **({"actor_id": user.pk} if user else {"actor_name": wanted["actor"]})
            )
        for name in ("action", "object_type", "object_id", "via"):
            if name in wanted:
                entries = entries.filter(**{name: wanted[name]})
        if "since" in wanted:
            entries = entries.filter(created_at__gte=wanted["since"])
        if "until" in wanted:
            entries = entries.filter(created_at__lt=wanted["until"])
        paginator = AuditPage()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(self.serialize(page, many=True))
