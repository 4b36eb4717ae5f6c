"""Moving app-password mailboxes off Basic auth, through `fleet.move` (the admin's service):

- `GET /mailboxes/move-plan` (viewers): the workspace's plan, per domain.
- `POST /mailboxes/move-to-oauth` (operators): starts the move (or returns the open one) and
  answers 202 with the run; the task worker runs it.
- `GET /mailboxes/move-to-oauth/{run_uid}` (viewers): progress and one item per mailbox.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.parsers import JSONParser

from fleet import move
from fleet.api.base import FleetView
from fleet.api.envelope import ApiError, ok
from fleet.api.schema import WORKSPACE_ID_PARAM, envelope
from fleet.api.serializers import ErrorRefSerializer, error_ref
from fleet.errors import FleetError
from fleet.models import Mailbox, MoveItem, MoveRun, Role

TAG = ["Mailboxes"]


class MoveRequestSerializer(serializers.Serializer):
    mailbox_uids = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        allow_empty=False,
        max_length=10000,
        help_text="Only these app-password mailboxes (default: all of the workspace's).",
    )


class DomainPlanSerializer(serializers.Serializer):
    domain = serializers.CharField()
    group = serializers.ChoiceField(choices=MoveItem.Group.choices)
    reason = serializers.CharField()
    count = serializers.IntegerField()
    credential_id = serializers.IntegerField(allow_null=True)


class MovePlanSerializer(serializers.Serializer):
    workspace_id = serializers.IntegerField()
    total = serializers.IntegerField(help_text="App-password mailboxes (disabled ones included).")
    app_only = serializers.IntegerField()
    consent = serializers.IntegerField()
    blocked = serializers.IntegerField()
    domains = DomainPlanSerializer(many=True)


class MoveItemSerializer(serializers.Serializer):
    email = serializers.CharField()
    mailbox_uid = serializers.UUIDField(allow_null=True)
    group = serializers.ChoiceField(choices=MoveItem.Group.choices)
    state = serializers.ChoiceField(choices=MoveItem.State.choices)
    error = ErrorRefSerializer(allow_null=True)
    detail = serializers.CharField()
    consent_url = serializers.CharField(allow_null=True)


class MoveRunSerializer(serializers.Serializer):
    uid = serializers.UUIDField()
    workspace_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=MoveRun.Status.choices)
    done = serializers.BooleanField()
    total = serializers.IntegerField()
    processed = serializers.IntegerField()
    moved = serializers.IntegerField()
    consent_sent = serializers.IntegerField(help_text="Waiting for the owner's consent.")
    failed = serializers.IntegerField(help_text="Not moved (left as they were) or blocked.")
    error = ErrorRefSerializer(allow_null=True)
    poll_url = serializers.CharField()
    items = MoveItemSerializer(many=True)


def plan_data(workspace) -> dict:
    plan = move.plan(workspace)
    return {
        "workspace_id": workspace.pk,
        "total": plan.total,
        "app_only": plan.count(MoveItem.Group.APP_ONLY),
        "consent": plan.count(MoveItem.Group.CONSENT),
        "blocked": plan.count(MoveItem.Group.BLOCKED),
        "domains": [
            {
                "domain": d.domain,
                "group": d.group,
                "reason": d.reason,
                "count": d.count,
                "credential_id": d.credential.pk if d.credential else None,
            }
            for d in plan.domains
        ],
    }


def run_data(request, run: MoveRun) -> dict:
    items = run.items.select_related("mailbox", "consent_request").order_by("pk")[:10000]
    return {
        "uid": str(run.uid),
        "workspace_id": run.workspace_id,
        "status": run.status,
        "done": run.done,
        "total": run.total,
        "processed": run.processed,
        "moved": run.moved,
        "consent_sent": run.consent_sent,
        "failed": run.failed,
        "error": error_ref(run.error_code, run.error_message),
        "poll_url": request.build_absolute_uri(f"/api/v1/mailboxes/move-to-oauth/{run.uid}"),
        "items": [
            {
                "email": i.email,
                "mailbox_uid": str(i.mailbox.uid) if i.mailbox else None,
                "group": i.group,
                "state": i.state,
                "error": error_ref(i.error_code),
                "detail": i.error_detail,
                "consent_url": i.consent_request.consent_url if i.consent_request else None,
            }
            for i in items
        ],
    }


MOVE_ENVELOPE = envelope("MoveRunEnvelope", MoveRunSerializer())


class MovePlanView(FleetView):
    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_move_plan",
        summary="Move plan off Basic auth",
        description="The workspace's app-password mailboxes grouped, per domain, by what moves "
        "them: `app_only` (the tenant's Graph app-only credential holds IMAP.AccessAsApp and "
        "SMTP.SendAsApp), `consent` (the owner consents), `blocked` (with the reason).",
        parameters=[WORKSPACE_ID_PARAM],
        responses={200: envelope("MovePlanEnvelope", MovePlanSerializer())},
    )
    def get(self, request):
        return ok(plan_data(self.target_workspace()))


class MoveToOAuth(FleetView):
    parser_classes = [JSONParser]
    roles = {"POST": Role.OPERATOR}

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_move_to_oauth",
        summary="Move app-password mailboxes to OAuth",
        description="Operators. Starts the move of the workspace's app-password mailboxes (or "
        "of `mailbox_uids`), as the admin's move plan does, and answers 202 with the run (an "
        "open move of the workspace is returned instead of a second one). App-only mailboxes "
        "are switched only after an app-only XOAUTH2 test passed; consent ones get a consent "
        "link each (`items[].consent_url`). Poll `poll_url`.",
        parameters=[WORKSPACE_ID_PARAM],
        request=MoveRequestSerializer,
        responses={202: MOVE_ENVELOPE},
    )
    def post(self, request):
        workspace = self.target_workspace()
        body = MoveRequestSerializer(data=request.data if request.data is not None else {})
        body.is_valid(raise_exception=True)
        ids = None
        if "mailbox_uids" in body.validated_data:
            ids = list(
                Mailbox.objects.filter(
                    workspace=workspace, uid__in=body.validated_data["mailbox_uids"]
                ).values_list("pk", flat=True)
            )
        try:
            run = move.start_move(workspace, request.user, ids)
        except FleetError as failure:
            raise ApiError(failure.error, 400, failure.message) from None
        response = ok(run_data(request, run), status=202)
        response["Location"] = f"/api/v1/mailboxes/move-to-oauth/{run.uid}"
        return response


class MoveRunDetail(FleetView):
    queryset = MoveRun.objects.all()
    lookup_field = "uid"
    lookup_url_kwarg = "run_uid"
    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_move_to_oauth_get",
        summary="Move run: progress and items",
        responses={200: MOVE_ENVELOPE},
    )
    def get(self, request, run_uid):
        run = self.get_object()
        return ok(run_data(request, run))
