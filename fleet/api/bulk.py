"""Graph app-only bulk add (Woodpecker's bulk-add API) through `fleet.bulk_add`, the admin's service.

`POST /mailboxes/microsoft/bulk` checks the body and the credential (nothing runs when either is
wrong), starts the run with `bulk_add.start_run` and then waits, up to API_BULK_WAIT_SECONDS, for
the task worker to finish it, reading the run's row: the run belongs to the worker, never to the
request thread (a web process must not talk to Graph for minutes, and a dropped request must not
drop the run). Done in time: 201 when every mailbox connected, 207 when any did not, with the
per-mailbox results. Not done: 202 with the run's `poll_url` (also in `Location`), where
`GET /mailboxes/microsoft/bulk/{run_uid}` answers 200 with progress and, once done, the results.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db.models import F
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers
from rest_framework.parsers import JSONParser

from fleet import bulk_add, errors
from fleet.api.base import FleetView
from fleet.api.envelope import ApiError, ok
from fleet.api.schema import WORKSPACE_ID_PARAM, ErrorSerializer, envelope
from fleet.api.serializers import MAX_ID, BlankAsNullChoiceField, ErrorRefSerializer
from fleet.models import BulkAddResult, BulkAddRun, Role

TAG = ["Mailboxes"]
ENDED = (BulkAddRun.Status.FINISHED, BulkAddRun.Status.FAILED)
# How often a waiting request reads the run's row: a worker writes it once per chunk of 20.
POLL_INTERVAL = 0.25


# --- The request ---------------------------------------------------------------------------------

ACCOUNT_SCHEMA = {
    "type": "object",
    "properties": {
        "mailbox_email": {
            "type": "string",
            "format": "email",
            "maxLength": 254,
            "description": "Mailbox email address",
        },
        "display_name": {
            "type": "string",
            "nullable": True,
            "maxLength": 255,
            "description": "Display name used for the mailbox",
        },
    },
    "required": ["mailbox_email"],
}


@extend_schema_field(
    {
        "type": "array",
        "items": ACCOUNT_SCHEMA,
        "minItems": 1,
        "maxItems": bulk_add.MAX_ACCOUNTS,
        "description": "Microsoft mailboxes to connect. Every problem (a malformed or missing "
        "address, a duplicate, a name over 255 characters) is listed in `error.fields.accounts` "
        "and nothing runs.",
    }
)
class AccountsField(serializers.Field):
    """Woodpecker's `accounts`, read by the admin's parser (`bulk_add.parse_records`), so that the
    API and the admin accept and refuse the same lists with the same messages."""

    def to_internal_value(self, data) -> list[bulk_add.Account]:
        if not isinstance(data, list):
            raise serializers.ValidationError(
                "Expected a list of accounts, each with mailbox_email and optionally display_name."
            )
        try:
            return bulk_add.parse_records(data)
        except bulk_add.AccountsInvalid as invalid:
            raise serializers.ValidationError(invalid.problems) from None


class StrictIdField(serializers.IntegerField):
    """A JSON integer only: DRF's IntegerField would also take "123", which the schema does
    not allow."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only: DRF's BooleanField would also take "yes" or 1."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class BulkAddSerializer(serializers.Serializer):
    auth_type = serializers.ChoiceField(
        choices=["APP_ONLY"],
        default="APP_ONLY",
        help_text="Authentication type. Defaults to APP_ONLY; only APP_ONLY is supported.",
    )
    credential_id = StrictIdField(
        min_value=1,
        max_value=MAX_ID,
        required=False,
        allow_null=True,
        help_text="A Graph app-only credential of the workspace (`GET /credentials`). May be "
        "left out only when the workspace has exactly one valid Graph credential.",
    )
    accounts = AccountsField()
    convert = StrictBooleanField(
        default=False,
        help_text="Also switch mailboxes already connected by Microsoft OAuth consent to Graph "
        "app-only (their token upkeep stops). Without it they are kept as they are and reported "
        "`ALREADY_CONNECTED`.",
    )


# --- The answer ----------------------------------------------------------------------------------


class DeliverabilitySerializer(serializers.Serializer):
    spf_correct = serializers.BooleanField(help_text="Whether SPF is configured correctly")
    dkim_correct = serializers.BooleanField(help_text="Whether DKIM is configured correctly")
    dmarc_correct = serializers.BooleanField(
        help_text="Whether the domain publishes one DMARC record with a policy (Fleet)"
    )
    mx_correct = serializers.BooleanField(
        help_text="Whether the domain's MX points at Exchange Online (Fleet)"
    )


class BulkAddResultSerializer(serializers.Serializer):
    """Woodpecker's per-mailbox result, plus two Fleet fields."""

    success = serializers.BooleanField(help_text="Whether the mailbox was connected")
    id = serializers.IntegerField(
        source="mailbox_id",
        allow_null=True,
        help_text="Connected mailbox ID, or null when the mailbox failed",
    )
    email = serializers.CharField(help_text="Mailbox email address")
    name = serializers.CharField(allow_null=True, help_text="Mailbox display name")
    deliverability = DeliverabilitySerializer(
        source="*",
        allow_null=True,
        help_text="SPF/DKIM of the mailbox's domain, or null when it failed",
    )
    error = serializers.CharField(
        source="error_code",
        allow_null=True,
        help_text="Per-mailbox error code (Fleet's error catalogue)",
    )
    mailbox_uid = serializers.UUIDField(
        allow_null=True, help_text="Fleet: the mailbox's uid for `/mailboxes/{uid}`, or null."
    )
    error_detail = serializers.CharField(
        allow_null=True,
        help_text="Fleet: what Microsoft said, e.g. the primary address for WRONG_ALIAS.",
    )

    def to_representation(self, result: BulkAddResult) -> dict:
        """Woodpecker's rules: blanks are null; a mailbox that failed has no id, deliverability
        or uid; an unknown SPF/DKIM answer counts as not correct."""
        data = super().to_representation(result)
        for blank_is_null in ("name", "error", "error_detail"):
            data[blank_is_null] = data[blank_is_null] or None
        if result.success:
            data["deliverability"] = {k: bool(v) for k, v in data["deliverability"].items()}
        else:
            data.update(id=None, deliverability=None, mailbox_uid=None)
        return data


class BulkAddRunSerializer(serializers.Serializer):
    uid = serializers.UUIDField()
    workspace_id = serializers.IntegerField()
    credential_id = serializers.IntegerField(allow_null=True)
    status = serializers.ChoiceField(
        choices=BulkAddRun.Status.choices,
        help_text="queued → running → finished; `failed` when the run could not go on (e.g. no "
        "token: its code is in `error` and on every mailbox not yet done).",
    )
    outcome = BlankAsNullChoiceField(
        choices=BulkAddRun.Outcome.choices, allow_null=True, help_text="Null until the run ends."
    )
    done = serializers.SerializerMethodField(help_text="True once the run has ended.")
    total = serializers.IntegerField()
    processed = serializers.IntegerField()
    connected = serializers.IntegerField()
    failed = serializers.IntegerField()
    error = ErrorRefSerializer(allow_null=True)
    poll_url = serializers.SerializerMethodField(help_text="GET it for progress and the results.")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_done(self, run: BulkAddRun) -> bool:
        return run.status in ENDED

    @extend_schema_field(OpenApiTypes.URI)
    def get_poll_url(self, run: BulkAddRun) -> str:
        return poll_url(self.context["request"], run)


BULK_ENVELOPE = envelope(
    "BulkAddEnvelope",
    BulkAddResultSerializer(
        many=True,
        help_text="Woodpecker's response body: one result per account, in the order sent, for the "
        "accounts done so far (all of them once the run has ended).",
    ),
    run=BulkAddRunSerializer(help_text="The run: progress, outcome and where to poll it."),
)


class InvalidCredentialSerializer(serializers.Serializer):
    success = serializers.BooleanField(help_text="Always false.")
    error = ErrorSerializer()
    message = serializers.CharField(
        help_text="INVALID_CREDENTIAL_ID: Woodpecker's 422 body, kept for its clients."
    )


def poll_url(request, run: BulkAddRun) -> str:
    return request.build_absolute_uri(f"/api/v1/mailboxes/microsoft/bulk/{run.uid}")


def answer(view: FleetView, run: BulkAddRun, status: int):
    """The finished accounts in Woodpecker's shape (in one query, the mailbox's uid joined in),
    and the run."""
    results = (
        run.results.filter(done=True).annotate(mailbox_uid=F("mailbox__uid")).order_by("position")
    )
    return ok(
        view.serialize(results, many=True, serializer_class=BulkAddResultSerializer),
        status=status,
        run=view.serialize(run, serializer_class=BulkAddRunSerializer),
    )


def wait_for(run: BulkAddRun, seconds: float) -> BulkAddRun:
    """Read the run's row until the worker has ended it or `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while run.status not in ENDED:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(POLL_INTERVAL, left))
        run.refresh_from_db()
    return run


def ended_status(run: BulkAddRun) -> int:
    """Woodpecker's bulk-add API: 201 when all submitted mailboxes were connected, 207 when at least one was
    not."""
    return 201 if run.outcome == BulkAddRun.Outcome.ALL_CONNECTED else 207


LOCATION_HEADER = OpenApiParameter(
    "Location",
    str,
    OpenApiParameter.HEADER,
    response=[201, 202, 207],
    description="The run's poll URL.",
)


class BulkAddMicrosoft(FleetView):
    roles = {"POST": Role.OPERATOR}
    parser_classes = [JSONParser]

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_microsoft_bulk",
        summary="Add Microsoft mailboxes in bulk",
        description="Woodpecker's bulk-add API: connect up to 500 Microsoft mailboxes with Microsoft Graph "
        "app-only authentication, as the admin's bulk add. Operators.\n\n"
        "The body is checked first: a body that is not JSON or empty, an `auth_type` other than "
        "APP_ONLY or any bad account → 400, listing every problem; then the credential: none "
        "given and not exactly one valid Graph credential in the workspace, or one that is not "
        "a usable Graph credential of this workspace → 422 `INVALID_CREDENTIAL_ID` (with seed "
        "004's top-level `message`). Nothing runs in either case.\n\n"
        "Otherwise the run starts in the task worker and the request waits for it up to "
        "API_BULK_WAIT_SECONDS (default 25): ended in time → **201** when all mailboxes were "
        "connected, **207** when at least one was not; `data` is Woodpecker's array of "
        "per-mailbox results and `run` the run. Still running → **202** with `run.poll_url` "
        "(also in `Location`) to GET until `run.done`.",
        parameters=[WORKSPACE_ID_PARAM, LOCATION_HEADER],
        request=BulkAddSerializer,
        responses={
            201: OpenApiResponse(BULK_ENVELOPE, description="All submitted mailboxes connected."),
            207: OpenApiResponse(
                BULK_ENVELOPE,
                description="At least one mailbox could not be connected: see each result.",
            ),
            202: OpenApiResponse(
                BULK_ENVELOPE,
                description="Still running after API_BULK_WAIT_SECONDS: poll `run.poll_url`.",
            ),
            422: OpenApiResponse(
                InvalidCredentialSerializer,
                description="INVALID_CREDENTIAL_ID: the submitted batch cannot be processed.",
            ),
        },
    )
    def post(self, request):
        workspace = self.target_workspace()
        if not request.data:  # no body, `{}`, `[]` or `null`: Woodpecker's "empty JSON" 400
            raise ApiError(errors.API_MALFORMED_REQUEST, 400)
        data = self.validated(BulkAddSerializer)
        credential = bulk_add.resolve_credential(workspace, data.get("credential_id"))
        run = bulk_add.start_run(
            workspace, credential, data["accounts"], request.user, convert=data["convert"],
            via="api",
        )
        run = wait_for(run, settings.API_BULK_WAIT_SECONDS)
        status = ended_status(run) if run.status in ENDED else 202
        response = answer(self, run, status)
        response["Location"] = poll_url(request, run)
        return response


class BulkAddRunDetail(FleetView):
    queryset = BulkAddRun.objects.all()
    lookup_field = "uid"
    lookup_url_kwarg = "run_uid"

    @extend_schema(
        tags=TAG,
        operation_id="mailboxes_microsoft_bulk_get",
        summary="Bulk add: progress and results",
        description="A bulk add run started by `POST /mailboxes/microsoft/bulk`: always 200, "
        "with `run` (status, outcome, counts) and in `data` Woodpecker's per-mailbox results of "
        "the accounts done so far (all of them once `run.done`). Viewers; another workspace's "
        "run is 404.",
        responses={200: BULK_ENVELOPE},
    )
    def get(self, request, run_uid):
        return answer(self, self.get_object(), 200)
