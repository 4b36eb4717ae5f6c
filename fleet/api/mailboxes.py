"""Mailboxes: list with filters and cursor pagination, details, settings, delete."""

from __future__ import annotations

from django.db.models import BooleanField, ExpressionWrapper, Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from fleet import mailboxes
from fleet.api.auth import get_scoped, require_role, scoped
from fleet.api.envelope import ok
from fleet.api.pagination import CursorPage
from fleet.api.schema import envelope
from fleet.api.serializers import (
    MailboxFilterSerializer,
    MailboxSerializer,
    MailboxUpdateSerializer,
    mailbox_data,
)
from fleet.models import Mailbox, Role

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


def mailbox_by_uid(request, uid, role: str = Role.VIEWER) -> Mailbox:
    return get_scoped(request, mailbox_rows(Mailbox.objects.all()), role, uid=uid)


LIST_PARAMETERS = [
    OpenApiParameter("workspace_id", int, description="Only this workspace's mailboxes."),
    OpenApiParameter("status", str, enum=Mailbox.Status.values),
    OpenApiParameter("tag", str, description="A tag name (case-insensitive)."),
    OpenApiParameter("error_code", str, description="A code from the error catalogue."),
    OpenApiParameter("warmup_status", str, enum=Mailbox.Warmup.values),
    OpenApiParameter("cursor", str, description="From `pagination.next` of the previous page."),
    OpenApiParameter("limit", int, description="Page size, 1 to 200 (default 50)."),
]


class MailboxList(APIView):
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
        filters = MailboxFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data
        mailboxes = scoped(request, Mailbox.objects.all())
        if "workspace_id" in wanted:
            mailboxes = mailboxes.filter(workspace_id=wanted["workspace_id"])
        for field in ("status", "error_code", "warmup_status"):
            if field in wanted:
                mailboxes = mailboxes.filter(**{field: wanted[field]})
        if "tag" in wanted:
            mailboxes = mailboxes.filter(tags__name__iexact=wanted["tag"])
        paginator = CursorPage()
        page = paginator.paginate_queryset(mailbox_rows(mailboxes), request, view=self)
        return paginator.get_paginated_response([mailbox_data(m) for m in page])


class MailboxDetail(APIView):
    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_get",
        summary="Get mailbox details",
        description="Never returns a secret: `password_set`, `totp_secret_set` and "
        "`oauth_connected` say whether one is stored.",
        responses={200: envelope("MailboxEnvelope", MailboxSerializer())},
    )
    def get(self, request, uid):
        return ok(mailbox_data(mailbox_by_uid(request, uid)))

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_update",
        summary="Update mailbox",
        description="Operators: display name and tags. Managers: warmup settings too.",
        request=MailboxUpdateSerializer,
        responses={200: envelope("MailboxEnvelope", MailboxSerializer())},
    )
    def patch(self, request, uid):
        mailbox = mailbox_by_uid(request, uid, Role.OPERATOR)
        serializer = MailboxUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = serializer.validated_data
        if {"warmup_daily_volume", "warmup_response_rate"} & set(changes):
            require_role(request, mailbox.workspace_id, Role.MANAGER)  # as in the admin
        mailboxes.update(mailbox, actor=request.user, via=mailboxes.API, **changes)
        return ok(mailbox_data(mailbox_by_uid(request, uid)))

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_delete",
        summary="Delete mailbox",
        description="Managers. Its history stays (the events keep the address).",
        responses={200: envelope("MailboxDeletedEnvelope", MailboxSerializer())},
    )
    def delete(self, request, uid):
        mailbox = mailbox_by_uid(request, uid, Role.MANAGER)
        data = mailbox_data(mailbox)
        mailboxes.delete(mailbox, actor=request.user, via=mailboxes.API)
        return ok(data)


WARMUP_SETTINGS = ("warmup_daily_volume", "warmup_response_rate")


class WarmupSerializer(serializers.Serializer):
    daily_volume = serializers.IntegerField(min_value=0, max_value=2000, required=False)
    response_rate = serializers.IntegerField(min_value=0, max_value=100, required=False)


class MailboxWarmup(APIView):
    """POST /mailboxes/{uid}/warmup/start|pause|resume (managers), through Mailbox.set_warmup,
    as the admin's warmup actions."""

    action = ""

    def post(self, request, uid):
        mailbox = mailbox_by_uid(request, uid, Role.MANAGER)
        serializer = WarmupSerializer(data=request.data if self.action != "pause" else {})
        serializer.is_valid(raise_exception=True)
        settings = serializer.validated_data
        if self.action == "start":
            # Starting warmup is how a program confirms a consent-connected mailbox was expected.
            mailboxes.start_warmup(
                mailbox, actor=request.user, via=mailboxes.API, approve_if_needed=True, **settings
            )
        elif self.action == "resume":
            mailboxes.resume_warmup(mailbox, actor=request.user, via=mailboxes.API, **settings)
        else:
            mailboxes.pause_warmup(mailbox, actor=request.user, via=mailboxes.API)
        return ok(mailbox_data(mailbox_by_uid(request, uid)))


def warmup_view(action: str, summary: str, description: str):
    schema = extend_schema(
        tags=TAG,
        operation_id=f"mailboxes_warmup_{action}",
        summary=summary,
        description=description,
        request=WarmupSerializer if action != "pause" else None,
        responses={200: envelope("MailboxEnvelope", MailboxSerializer())},
    )

    def post(self, request, uid):
        return MailboxWarmup.post(self, request, uid)

    view = type(
        f"MailboxWarmup{action.title()}", (MailboxWarmup,), {"action": action, "post": schema(post)}
    )
    return view.as_view()


warmup_start = warmup_view(
    "start",
    "Start warmup",
    "Managers. A mailbox connected by consent and waiting for approval is approved by this "
    "call (the caller's start confirms the mailbox was expected). A mailbox still "
    "`pending` for another reason answers 409 MAILBOX_NOT_APPROVED; one in `error`, "
    "`reauth_required` or `disabled` answers 409 MAILBOX_NOT_ACTIVE (warmup needs a connected "
    "mailbox).",
)
warmup_pause = warmup_view(
    "pause", "Pause warmup", "Managers. Only a running warmup pauses (else 400 WARMUP_NOT_RUNNING)."
)
warmup_resume = warmup_view(
    "resume",
    "Resume warmup",
    "Managers. Only a paused warmup resumes (else 400 WARMUP_NOT_PAUSED), and only on an "
    "approved, active mailbox (else 409).",
)


class MailboxStateChange(APIView):
    """POST /mailboxes/{uid}/approve|disable|enable (managers): the admin's actions of the same
    name, through the same services."""

    operation = staticmethod(mailboxes.approve)

    def post(self, request, uid):
        mailbox = mailbox_by_uid(request, uid, Role.MANAGER)
        type(self).operation(mailbox, actor=request.user, via=mailboxes.API)
        return ok(mailbox_data(mailbox_by_uid(request, uid)))


def state_view(name: str, operation, summary: str, description: str):
    schema = extend_schema(
        tags=TAG,
        operation_id=f"mailboxes_{name}",
        summary=summary,
        description=description,
        request=None,
        responses={200: envelope("MailboxEnvelope", MailboxSerializer())},
    )

    def post(self, request, uid):
        return MailboxStateChange.post(self, request, uid)

    view = type(
        f"Mailbox{name.title()}",
        (MailboxStateChange,),
        {"operation": staticmethod(operation), "post": schema(post)},
    )
    return view.as_view()


approve = state_view(
    "approve",
    mailboxes.approve,
    "Approve a mailbox",
    "Managers. Confirms that a mailbox connected by an unannounced consent was expected "
    "(`needs_approval`); a pending one becomes active. Nothing changes for a mailbox that "
    "needed no approval.",
)
disable = state_view(
    "disable",
    mailboxes.disable,
    "Disable a mailbox",
    "Managers. A disabled mailbox is not tested and does not warm up.",
)
enable = state_view(
    "enable",
    mailboxes.enable,
    "Enable a mailbox",
    "Managers. Back to `pending`, and its connection test is queued at once.",
)


class ConnectionTestSerializer(serializers.Serializer):
    uid = serializers.UUIDField()
    queued = serializers.BooleanField()


class MailboxConnectionTest(APIView):
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
        mailbox = mailbox_by_uid(request, uid, Role.OPERATOR)
        mailboxes.queue_connection_test(mailbox, actor=request.user, via=mailboxes.API)
        return ok({"uid": str(mailbox.uid), "queued": True}, status=202)


class TotpCodeSerializer(serializers.Serializer):
    code = serializers.CharField()
    valid_for = serializers.IntegerField(help_text="Seconds until the code changes.")


class MailboxTotp(APIView):
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
        mailbox = get_scoped(request, Mailbox.objects.all(), Role.OPERATOR, uid=uid)
        shown = mailboxes.reveal_totp(mailbox, actor=request.user, via=mailboxes.API)
        return ok({"code": shown.code, "valid_for": shown.valid_for})
