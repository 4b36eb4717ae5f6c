"""Mailboxes: list with filters and cursor pagination, details, settings, delete."""

from __future__ import annotations

import time

from django.db import transaction
from django.db.models import BooleanField, ExpressionWrapper, Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers

from fleet import errors
from fleet.admin.mailboxes import AccountTOTP
from fleet.api.base import FleetView
from fleet.api.envelope import ApiError, ok
from fleet.api.pagination import CursorPage
from fleet.api.schema import envelope
from fleet.api.serializers import (
    MailboxFilterSerializer,
    MailboxSerializer,
    MailboxUpdateSerializer,
)
from fleet.models import Mailbox, MailboxEvent, Role, Tag
from fleet.tasks import check_mailboxes, enqueue_on_commit

TAG = ["Mailboxes"]
SECRETS = ["password", "totp_secret", "refresh_token", "access_token"]


def mailbox_rows(queryset):
    """Mailboxes as the API shows them: tags in one extra query, secrets never loaded (only
    whether each is set)."""
    return (
        queryset.prefetch_related("tags")
        .defer(*SECRETS)
        .annotate(
            **{
                f"{name}_is_set": ExpressionWrapper(~Q(**{name: ""}), output_field=BooleanField())
                for name in ("password", "totp_secret", "refresh_token")
            }
        )
    )


class MailboxView(FleetView):
    """One mailbox, named by the URL's uid."""

    queryset = mailbox_rows(Mailbox.objects.all())
    lookup_field = "uid"
    serializer_class = MailboxSerializer


LIST_PARAMETERS = [
    OpenApiParameter("workspace_id", int, description="Only this workspace's mailboxes."),
    OpenApiParameter("status", str, enum=Mailbox.Status.values),
    OpenApiParameter("tag", str, description="A tag name (case-insensitive)."),
    OpenApiParameter("error_code", str, description="A code from the error catalogue."),
    OpenApiParameter("warmup_status", str, enum=Mailbox.Warmup.values),
    OpenApiParameter("cursor", str, description="From `pagination.next` of the previous page."),
    OpenApiParameter("limit", int, description="Page size, 1 to 200 (default 50)."),
]


class MailboxList(FleetView):
    queryset = Mailbox.objects.all()
    serializer_class = MailboxSerializer

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_list",
        summary="List mailboxes",
        parameters=LIST_PARAMETERS,
        responses={
            200: envelope("MailboxListEnvelope", MailboxSerializer(many=True), paginated=True)
        },
    )
    def get(self, request):
        wanted = self.validated(MailboxFilterSerializer, request.query_params)
        mailboxes = self.queryset
        if "workspace_id" in wanted:
            mailboxes = mailboxes.filter(workspace_id=wanted["workspace_id"])
        for field in ("status", "error_code", "warmup_status"):
            if field in wanted:
                mailboxes = mailboxes.filter(**{field: wanted[field]})
        if "tag" in wanted:
            mailboxes = mailboxes.filter(tags__name__iexact=wanted["tag"])
        paginator = CursorPage()
        page = paginator.paginate_queryset(mailbox_rows(mailboxes), request, view=self)
        return paginator.get_paginated_response(self.serialize(page, many=True))


class MailboxDetail(MailboxView):
    roles = {"GET": Role.VIEWER, "PATCH": Role.OPERATOR, "DELETE": Role.MANAGER}

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_get",
        summary="Get mailbox details",
        description="Never returns a secret: `password_set`, `totp_secret_set` and "
        "`oauth_connected` say whether one is stored.",
        responses={200: envelope("MailboxEnvelope", MailboxSerializer())},
    )
    def get(self, request, uid):
        return self.respond(self.get_object())

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_update",
        summary="Update mailbox",
        description="Operators: display name and tags. Managers: warmup settings too.",
        request=MailboxUpdateSerializer,
        responses={200: envelope("MailboxEnvelope", MailboxSerializer())},
    )
    def patch(self, request, uid):
        mailbox = self.get_object()
        changes = self.validated(MailboxUpdateSerializer)
        if {"warmup_daily_volume", "warmup_response_rate"} & set(changes):
            self.check_role(mailbox.workspace_id, Role.MANAGER)  # as in the admin
        with transaction.atomic():
            fields = [f for f in ("display_name", *WARMUP_SETTINGS) if f in changes]
            for field in fields:
                setattr(mailbox, field, changes[field])
            if fields:
                mailbox.save(update_fields=[*fields, "updated_at"])
            if "tags" in changes:
                mailbox.tags.set(tags_named(mailbox.workspace_id, changes["tags"]))
        return self.respond(self.queryset.get(pk=mailbox.pk))

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_delete",
        summary="Delete mailbox",
        description="Managers. Its history stays (the events keep the address).",
        responses={200: envelope("MailboxDeletedEnvelope", MailboxSerializer())},
    )
    def delete(self, request, uid):
        mailbox = self.get_object()
        data = self.serialize(mailbox)
        with transaction.atomic():
            MailboxEvent.objects.create(
                workspace_id=mailbox.workspace_id,
                mailbox=mailbox,
                email=mailbox.email,
                kind=MailboxEvent.Kind.NOTE,
                message=f"Deleted through the API (key {request.auth.prefix}…)",
                actor=request.user,
            )
            mailbox.delete()
        return ok(data)


WARMUP_SETTINGS = ("warmup_daily_volume", "warmup_response_rate")


def tags_named(workspace_id: int, names: list[str]) -> list[Tag]:
    """The workspace's tags with these names (case-insensitive), creating the missing ones."""
    wanted = {name.lower(): name for name in names}
    if not wanted:
        return []
    same_name = Q()
    for name in wanted:
        same_name |= Q(name__iexact=name)
    existing = {
        tag.name.lower(): tag for tag in Tag.objects.filter(same_name, workspace_id=workspace_id)
    }
    created = [
        Tag.objects.create(workspace_id=workspace_id, name=name)
        for lower, name in wanted.items()
        if lower not in existing
    ]
    return [*existing.values(), *created]


class WarmupSerializer(serializers.Serializer):
    daily_volume = serializers.IntegerField(min_value=0, max_value=2000, required=False)
    response_rate = serializers.IntegerField(min_value=0, max_value=100, required=False)


class MailboxWarmup(MailboxView):
    """POST /mailboxes/{uid}/warmup/start|pause|resume (managers), through Mailbox.set_warmup,
    as the admin's warmup actions."""

    roles = {"POST": Role.MANAGER}
    action = ""

    def warmup(self, request):
        mailbox = self.get_object()
        settings = self.validated(WarmupSerializer, request.data if self.action != "pause" else {})
        if self.action == "resume" and mailbox.warmup_status != Mailbox.Warmup.PAUSED:
            raise ApiError(
                errors.VALIDATION_ERROR,
                400,
                f"Warmup is {mailbox.warmup_status}, not paused: use warmup/start.",
            )
        with transaction.atomic():
            if self.action == "start" and mailbox.needs_approval:
                # Seed 002: starting warmup is how the caller confirms the mailbox was expected.
                mailbox.approve(actor=request.user)
            mailbox.set_warmup(
                Mailbox.Warmup.PAUSED if self.action == "pause" else Mailbox.Warmup.ACTIVE,
                daily_volume=settings.get("daily_volume"),
                response_rate=settings.get("response_rate"),
                actor=request.user,
            )
        return self.respond(self.queryset.get(pk=mailbox.pk))


def warmup_schema(action: str, summary: str, description: str):
    return extend_schema(
        tags=TAG,
        operation_id=f"mailboxes_warmup_{action}",
        summary=summary,
        description=description,
        request=WarmupSerializer if action != "pause" else None,
        responses={200: envelope("MailboxEnvelope", MailboxSerializer())},
    )


class WarmupStart(MailboxWarmup):
    action = "start"

    @warmup_schema(
        "start",
        "Start warmup",
        "Managers. A mailbox connected by consent and waiting for approval is approved by this "
        "call (seed 002: starting warmup confirms the mailbox was expected). A mailbox still "
        "`pending` for another reason answers 409 MAILBOX_NOT_APPROVED.",
    )
    def post(self, request, uid):
        return self.warmup(request)


class WarmupPause(MailboxWarmup):
    action = "pause"

    @warmup_schema("pause", "Pause warmup", "Managers.")
    def post(self, request, uid):
        return self.warmup(request)


class WarmupResume(MailboxWarmup):
    action = "resume"

    @warmup_schema("resume", "Resume warmup", "Managers. Only a paused warmup resumes (else 400).")
    def post(self, request, uid):
        return self.warmup(request)


class ConnectionTestSerializer(serializers.Serializer):
    uid = serializers.UUIDField()
    queued = serializers.BooleanField()


class MailboxConnectionTest(MailboxView):
    roles = {"POST": Role.OPERATOR}

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_test_connection",
        summary="Test the mailbox's connection",
        description="Operators. Queues an SMTP and IMAP sign-in test (as the admin's Test "
        "connection action) and answers 202 at once; the mailbox's `status`, `error` and "
        "`last_checked_at` show the outcome once it ran.",
        request=None,
        responses={202: envelope("ConnectionTestEnvelope", ConnectionTestSerializer())},
    )
    def post(self, request, uid):
        mailbox = self.get_object()
        if mailbox.status == Mailbox.Status.DISABLED:
            raise ApiError(
                errors.VALIDATION_ERROR, 400, "A disabled mailbox is not tested; enable it first."
            )
        enqueue_on_commit(check_mailboxes, [mailbox.pk], request.user.pk)
        return self.respond(
            {"uid": mailbox.uid, "queued": True},
            status=202,
            serializer_class=ConnectionTestSerializer,
        )


class TotpCodeSerializer(serializers.Serializer):
    code = serializers.CharField()
    valid_for = serializers.IntegerField(help_text="Seconds until the code changes.")


class MailboxTotp(MailboxView):
    roles = {"POST": Role.OPERATOR}
    queryset = Mailbox.objects.all()  # the secret is needed here

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_totp_code",
        summary="Current TOTP code",
        description="Operators. The mailbox's current TOTP code (not its secret); each call is "
        "recorded in the mailbox's history, as in the admin. 404 when it has no TOTP secret.",
        request=None,
        responses={200: envelope("TotpCodeEnvelope", TotpCodeSerializer())},
    )
    def post(self, request, uid):
        mailbox = self.get_object()
        if not mailbox.totp_secret:
            raise ApiError(errors.NOT_FOUND, 404, "This mailbox has no TOTP secret.")
        totp = AccountTOTP(str(mailbox.totp_secret))
        code = totp.now()
        MailboxEvent.objects.create(
            workspace_id=mailbox.workspace_id,
            mailbox=mailbox,
            email=mailbox.email,
            kind=MailboxEvent.Kind.TOTP_REVEAL,
            actor=request.user,
            message=f"TOTP code shown (API key {request.auth.prefix}…)",
        )
        valid_for = totp.interval - int(time.time()) % totp.interval
        return self.respond(
            {"code": code, "valid_for": valid_for}, serializer_class=TotpCodeSerializer
        )
