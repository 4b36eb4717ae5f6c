"""Mailboxes: list with filters and cursor pagination, details, settings, delete, warmup,
connection tests and TOTP codes: each a short caller of fleet.mailboxes, the admin's service."""

from __future__ import annotations

from django.db.models import BooleanField, ExpressionWrapper, Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers

from fleet import health, mailboxes
from fleet.api.base import FleetView
from fleet.api.envelope import ok
from fleet.api.pagination import CursorPage
from fleet.api.schema import envelope
from fleet.api.serializers import (
    MailboxFilterSerializer,
    MailboxSelectionSerializer,
    MailboxSerializer,
    MailboxUpdateSerializer,
)
from fleet.models import Mailbox, Role, Workspace

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
        mailboxes.update(mailbox, actor=request.user, via=mailboxes.API, **changes)
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
        mailboxes.delete(mailbox, actor=request.user, via=mailboxes.API)
        return ok(data)


class WarmupSerializer(serializers.Serializer):
    daily_volume = serializers.IntegerField(min_value=0, max_value=2000, required=False)
    response_rate = serializers.IntegerField(min_value=0, max_value=100, required=False)


class MailboxWarmup(MailboxView):
    """POST /mailboxes/{uid}/warmup/start|pause|resume (managers), as the admin's warmup
    actions: one rule in fleet.mailboxes for both."""

    roles = {"POST": Role.MANAGER}

    def warmup(self, operation, **options):
        mailbox = self.get_object()
        operation(mailbox, actor=self.request.user, via=mailboxes.API, **options)
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
    @warmup_schema(
        "start",
        "Start warmup",
        "Managers. A mailbox connected by consent and waiting for approval is approved by this "
        "call (the caller's start confirms the mailbox was expected). A mailbox still "
        "`pending` for another reason answers 409 MAILBOX_NOT_APPROVED; one in `error`, "
        "`reauth_required` or `disabled` answers 409 MAILBOX_NOT_ACTIVE (warmup needs a connected "
        "mailbox).",
    )
    def post(self, request, uid):
        # Starting warmup is how a program confirms a consent-connected mailbox was expected.
        settings = self.validated(WarmupSerializer)
        return self.warmup(mailboxes.start_warmup, approve_if_needed=True, **settings)


class WarmupPause(MailboxWarmup):
    @warmup_schema(
        "pause",
        "Pause warmup",
        "Managers. Only a running warmup pauses (else 400 WARMUP_NOT_RUNNING).",
    )
    def post(self, request, uid):
        return self.warmup(mailboxes.pause_warmup)


class WarmupResume(MailboxWarmup):
    @warmup_schema(
        "resume",
        "Resume warmup",
        "Managers. Only a paused warmup resumes (else 400 WARMUP_NOT_PAUSED), and only on an "
        "approved, active mailbox (else 409).",
    )
    def post(self, request, uid):
        return self.warmup(mailboxes.resume_warmup, **self.validated(WarmupSerializer))


class MailboxStateChange(MailboxView):
    """POST /mailboxes/{uid}/approve|disable|enable (managers): the admin's actions of the same
    name, through the same services."""

    roles = {"POST": Role.MANAGER}

    def change(self, operation):
        mailbox = self.get_object()
        operation(mailbox, actor=self.request.user, via=mailboxes.API)
        return self.respond(self.queryset.get(pk=mailbox.pk))


def state_schema(name: str, summary: str, description: str):
    return extend_schema(
        tags=TAG,
        operation_id=f"mailboxes_{name}",
        summary=summary,
        description=description,
        request=None,
        responses={200: envelope("MailboxEnvelope", MailboxSerializer())},
    )


class MailboxApprove(MailboxStateChange):
    @state_schema(
        "approve",
        "Approve a mailbox",
        "Managers. Confirms that a mailbox connected by an unannounced consent was expected "
        "(`needs_approval`); a pending one becomes active. Nothing changes for a mailbox that "
        "needed no approval.",
    )
    def post(self, request, uid):
        return self.change(mailboxes.approve)


class MailboxDisable(MailboxStateChange):
    @state_schema(
        "disable",
        "Disable a mailbox",
        "Managers. A disabled mailbox is not tested and does not warm up.",
    )
    def post(self, request, uid):
        return self.change(mailboxes.disable)


class MailboxEnable(MailboxStateChange):
    @state_schema(
        "enable",
        "Enable a mailbox",
        "Managers. Back to `pending`, and its connection test is queued at once.",
    )
    def post(self, request, uid):
        return self.change(mailboxes.enable)


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
        mailboxes.queue_connection_test(mailbox, actor=request.user, via=mailboxes.API)
        return self.respond(
            {"uid": mailbox.uid, "queued": True},
            status=202,
            serializer_class=ConnectionTestSerializer,
        )


class SweepSerializer(serializers.Serializer):
    queued = serializers.IntegerField(help_text="Mailboxes queued for a test (not disabled).")


class MailboxSweep(FleetView):
    roles = {"POST": Role.OPERATOR}

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_sweep",
        summary="Sweep now: test the selected mailboxes",
        description="Operators. Queues a connection test of every mailbox the filters in the "
        "body select (all of them combined; none: every mailbox the key may operate), disabled "
        "ones excepted, and answers 202 with how many; each mailbox's `status` and "
        "`last_checked_at` show the outcome, and its health sweeps go on from its own slot.",
        request=MailboxSelectionSerializer,
        responses={202: envelope("SweepEnvelope", SweepSerializer())},
    )
    def post(self, request):
        wanted = self.validated(MailboxSelectionSerializer)
        if request.auth.workspace_id is not None:
            self.check_role(request.auth.workspace_id)  # a viewer's workspace key: 403
        chosen = self.operable(Mailbox.objects.all())
        if "workspace_id" in wanted:
            self.get_object(Workspace.objects.all(), pk=wanted["workspace_id"])  # 404 / 403
            chosen = chosen.filter(workspace_id=wanted["workspace_id"])
        for field in ("status", "error_code", "warmup_status"):
            if field in wanted:
                chosen = chosen.filter(**{field: wanted[field]})
        if "tag" in wanted:
            chosen = chosen.filter(
                pk__in=Mailbox.objects.filter(tags__name__iexact=wanted["tag"]).values("pk")
            )
        queued = health.sweep_now(chosen, actor=request.user, via=mailboxes.API)
        return self.respond({"queued": queued}, status=202, serializer_class=SweepSerializer)


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
        code = mailboxes.reveal_totp(self.get_object(), actor=request.user, via=mailboxes.API)
        return self.respond(code, serializer_class=TotpCodeSerializer)
