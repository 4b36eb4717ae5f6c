"""Bulk reconnect and mailbox health, through `fleet.reconnect` and `fleet.uptime` (the admin's
services):

- `POST /mailboxes/reconnect` (operators): a consent request for every OAuth mailbox of the
  workspace (narrowed by the body's filters) in `reauth_required`, open ones reused; 201 with the
  run and its consent requests (links to hand out).
- `GET /mailboxes/reconnect/{run_uid}` (viewers): the same, with progress from the mailboxes.
- `GET /mailboxes/{uid}/health` (viewers): 30-day uptime and the last connection tests.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.parsers import JSONParser

from fleet import errors, reconnect, uptime
from fleet.api.base import FleetView
from fleet.api.envelope import ok
from fleet.api.schema import WORKSPACE_ID_PARAM, envelope
from fleet.api.serializers import ErrorRefSerializer, error_ref
from fleet.errors import FleetError
from fleet.models import Mailbox, ReconnectRun, Role

TAG = ["Mailboxes"]
MAX_SHOWN = 10000  # consent requests in one answer (a run of more lists the first ones)


class ReconnectRequestSerializer(serializers.Serializer):
    mailbox_uids = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        allow_empty=False,
        max_length=10000,
        help_text="Only these mailboxes (default: every failing one of the workspace).",
    )
    tag = serializers.CharField(max_length=64, required=False, help_text="Only with this tag.")
    domain = serializers.CharField(
        max_length=253, required=False, help_text="Only addresses of this domain."
    )
    error_code = serializers.CharField(
        max_length=64, required=False, help_text="Only mailboxes with this code (e.g. REAUTH_REQUIRED)."
    )


class ReconnectConsentSerializer(serializers.Serializer):
    uid = serializers.UUIDField(help_text="The consent request (`/mailboxes/consent-request/{uid}`).")
    mailbox_uid = serializers.UUIDField(allow_null=True)
    email = serializers.CharField()
    consent_url = serializers.CharField(help_text="The link the mailbox's owner opens.")
    status = serializers.CharField(help_text="The consent request's status.")
    mailbox_status = serializers.CharField(help_text="`active` once reconnected.")
    expires_at = serializers.DateTimeField(allow_null=True)
    reused = serializers.BooleanField(help_text="It was already open: the same link as before.")


class ReconnectRunSerializer(serializers.Serializer):
    uid = serializers.UUIDField(allow_null=True, help_text="Null when nothing needed reconnecting.")
    workspace_id = serializers.IntegerField()
    total = serializers.IntegerField()
    reconnected = serializers.IntegerField(help_text="Mailboxes of the run active again.")
    poll_url = serializers.CharField(allow_null=True)
    consent_requests = ReconnectConsentSerializer(many=True)


def run_data(request, run: ReconnectRun) -> dict:
    progress = reconnect.progress(run)
    return {
        "uid": str(run.uid),
        "workspace_id": run.workspace_id,
        "total": progress.total,
        "reconnected": progress.reconnected,
        "poll_url": request.build_absolute_uri(f"/api/v1/mailboxes/reconnect/{run.uid}"),
        "consent_requests": [
            {
                "uid": str(item.consent_request.uid),
                "mailbox_uid": str(item.mailbox.uid) if item.mailbox else None,
                "email": item.email,
                "consent_url": item.consent_request.consent_url,
                "status": item.consent_request.status,
                "mailbox_status": item.mailbox.status if item.mailbox else "deleted",
                "expires_at": item.consent_request.expires_at,
                "reused": item.reused,
            }
            for item in reconnect.items(run)[:MAX_SHOWN]
            if item.consent_request is not None
        ],
    }


RUN_ENVELOPE = envelope("ReconnectRunEnvelope", ReconnectRunSerializer())


class MailboxReconnect(FleetView):
    parser_classes = [JSONParser]
    roles = {"POST": Role.OPERATOR}

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_reconnect",
        summary="Reconnect all failing mailboxes",
        description="Operators. Every OAuth mailbox of the workspace in `reauth_required` "
        "(narrowed by the body's filters, all of them combined) gets a user-consent request "
        "with its address as login_hint; one that already has an open request keeps it "
        "(`reused`). 201 with the consent requests and their links; 200 with none when no "
        "mailbox needs it. When the owner consents, the mailbox is tested and becomes `active` "
        "again: poll `poll_url` for progress. 400 MICROSOFT_OAUTH_NOT_CONFIGURED without an "
        "OAuth app.",
        parameters=[WORKSPACE_ID_PARAM],
        request=ReconnectRequestSerializer,
        responses={201: RUN_ENVELOPE, 200: RUN_ENVELOPE},
    )
    def post(self, request):
        workspace = self.target_workspace()
        body = self.validated(
            ReconnectRequestSerializer, request.data if request.data is not None else {}
        )
        chosen = Mailbox.objects.filter(workspace=workspace)
        if "mailbox_uids" in body:
            chosen = chosen.filter(uid__in=body["mailbox_uids"])
        if "tag" in body:
            chosen = chosen.filter(tags__name__iexact=body["tag"])
        if "domain" in body:
            chosen = chosen.filter(domain__iexact=body["domain"].strip())
        if "error_code" in body:
            chosen = chosen.filter(error_code=body["error_code"])
        described = ", ".join(f"{k}={v}" for k, v in body.items() if k != "mailbox_uids")
        if "mailbox_uids" in body:
            described = ", ".join(filter(None, [f"{len(body['mailbox_uids'])} uid(s)", described]))
        try:
            run = reconnect.start(
                workspace,
                chosen,
                actor=request.user,
                selection=f"API: {described or 'all failing'}",
                base_url=request.build_absolute_uri("/"),
            )
        except FleetError as failure:
            if failure.error is not errors.NOTHING_TO_RECONNECT:
                raise
            return ok(
                {
                    "uid": None,
                    "workspace_id": workspace.pk,
                    "total": 0,
                    "reconnected": 0,
                    "poll_url": None,
                    "consent_requests": [],
                }
            )
        response = ok(run_data(request, run), status=201)
        response["Location"] = f"/api/v1/mailboxes/reconnect/{run.uid}"
        return response


class ReconnectRunDetail(FleetView):
    queryset = ReconnectRun.objects.all()
    lookup_field = "uid"
    lookup_url_kwarg = "run_uid"

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_reconnect_get",
        summary="Reconnect run: progress and links",
        responses={200: RUN_ENVELOPE},
    )
    def get(self, request, run_uid):
        return ok(run_data(request, self.get_object()))


# --- Health ----------------------------------------------------------------------------------


class CheckSerializer(serializers.Serializer):
    at = serializers.DateTimeField(source="created_at")
    passed = serializers.BooleanField()
    status = serializers.CharField(source="to_status", help_text="The mailbox's status after it.")
    error = ErrorRefSerializer(allow_null=True)


class HealthSerializer(serializers.Serializer):
    uid = serializers.UUIDField()
    status = serializers.CharField()
    error = ErrorRefSerializer(allow_null=True)
    last_checked_at = serializers.DateTimeField(allow_null=True)
    next_check_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When its next health check is due (its workspace's sweep cadence); null "
        "when none is scheduled (disabled, or new and not yet given its slot).",
    )
    window_days = serializers.IntegerField()
    checks = serializers.IntegerField(help_text="Connection tests in the window.")
    passed = serializers.IntegerField()
    uptime = serializers.FloatField(
        allow_null=True,
        help_text="Share of the window's connection tests that passed, in percent (one "
        "decimal); null when it was not tested in the window.",
    )
    disconnections = serializers.IntegerField(
        help_text="Times it fell from active to error or reauth_required in the window."
    )
    last_checks = CheckSerializer(many=True, help_text="The last connection tests, newest first.")


class MailboxHealth(FleetView):
    queryset = Mailbox.objects.only(
        "pk",
        "uid",
        "workspace_id",
        "status",
        "error_code",
        "error_message",
        "last_checked_at",
        "check_due_at",
    )
    lookup_field = "uid"

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_health",
        summary="Mailbox health: uptime and last checks",
        description="Viewers. Uptime is the share of the last 30 days' connection tests that "
        "passed (not time between tests).",
        responses={200: envelope("MailboxHealthEnvelope", HealthSerializer())},
    )
    def get(self, request, uid):
        mailbox = self.get_object()
        found = uptime.for_mailbox(mailbox)
        return ok(
            {
                "uid": str(mailbox.uid),
                "status": mailbox.status,
                "error": error_ref(mailbox.error_code, mailbox.error_message),
                "last_checked_at": mailbox.last_checked_at,
                "next_check_at": mailbox.check_due_at,
                "window_days": uptime.WINDOW_DAYS,
                "checks": found.checks,
                "passed": found.passed,
                "uptime": found.uptime,
                "disconnections": found.disconnections,
                "last_checks": [
                    {
                        "at": e.created_at,
                        "passed": not e.error_code,
                        "status": e.to_status,
                        "error": error_ref(e.error_code, e.message if e.error_code else ""),
                    }
                    for e in found.last_checks
                ],
            }
        )
