"""Credentials (Microsoft app registrations): list without secrets, create."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers

from fleet import audit, errors
from fleet.api.base import FleetView
from fleet.api.envelope import ApiError
from fleet.api.schema import WORKSPACE_ID_PARAM, envelope
from fleet.api.serializers import MAX_ID, CredentialCreateSerializer, CredentialSerializer
from fleet.credentials import request_verification
from fleet.models import Credential, Role

TAG = ["Credentials"]


class CredentialFilterSerializer(serializers.Serializer):
    workspace_id = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    kind = serializers.ChoiceField(choices=Credential.Kind.choices, required=False)
    status = serializers.ChoiceField(choices=Credential.Status.choices, required=False)


class CredentialView(FleetView):
    queryset = Credential.objects.all()
    serializer_class = CredentialSerializer


class CredentialList(CredentialView):
    roles = {"GET": Role.VIEWER, "POST": Role.MANAGER}

    @extend_schema(
        tags=TAG,
        operation_id="credentials_list",
        summary="List credentials",
        description="Never returns a client secret: `client_secret_set` says whether one is set.",
        parameters=[
            OpenApiParameter("workspace_id", int),
            OpenApiParameter("kind", str, enum=Credential.Kind.values),
            OpenApiParameter("status", str, enum=Credential.Status.values),
        ],
        responses={200: envelope("CredentialListEnvelope", CredentialSerializer(many=True))},
    )
    def get(self, request):
        filters = self.validated(CredentialFilterSerializer, request.query_params)
        credentials = self.queryset.filter(**filters)
        return self.respond(credentials.order_by("workspace_id", "name", "pk"), many=True)

    @extend_schema(
        tags=TAG,
        operation_id="credentials_create",
        summary="Create credential",
        description="Managers. The client secret is stored encrypted and never shown again.",
        parameters=[WORKSPACE_ID_PARAM],
        request=CredentialCreateSerializer,
        responses={201: envelope("CredentialEnvelope", CredentialSerializer())},
    )
    def post(self, request):
        workspace = self.target_workspace()
        data = self.validated(CredentialCreateSerializer)
        values = {k: v for k, v in data.items() if v is not None}
        credential = Credential(workspace=workspace, **values)
        credential.full_clean()  # the model's own rules, the same as in the admin
        with transaction.atomic():
            credential.save()
            audit.record(
                "credential.created", credential, actor=request.user, via="api",
                changes=audit.set_fields(credential, [*values, "workspace_id"]),
            )
        return self.respond(credential, status=201)


class CredentialDetail(CredentialView):
    @extend_schema(
        tags=TAG,
        operation_id="credentials_get",
        summary="Get credential",
        description="Its status after a verification, and the error code if it failed.",
        responses={200: envelope("CredentialEnvelope", CredentialSerializer())},
    )
    def get(self, request, pk: int):
        return self.respond(self.get_object())


class CredentialVerify(CredentialView):
    roles = {"POST": Role.MANAGER}

    @extend_schema(
        tags=TAG,
        operation_id="credentials_verify",
        summary="Verify credential",
        description="Managers. Queues a check with Microsoft (an app-only Graph token through "
        "client credentials), as the admin's Verify action: answers 202 at once; "
        "`GET /credentials/{id}` shows `status` and `last_verified_at` once it ran. Graph "
        "app-only credentials only (400 for OAuth apps, which are checked by a consent).",
        request=None,
        responses={202: envelope("CredentialEnvelope", CredentialSerializer())},
    )
    def post(self, request, pk: int):
        credential = self.get_object()
        if credential.kind != Credential.Kind.GRAPH_APP_ONLY:
            raise ApiError(
                errors.VALIDATION_ERROR,
                400,
                "Only Graph app-only credentials are verified this way; an OAuth app is checked "
                "by a consent (POST /mailboxes/connect/outlook).",
            )
        request_verification(credential)
        return self.respond(credential, status=202)
