"""Microsoft OAuth connect (SendKit's and Mailivery's connect APIs) and consent requests (InboxKit's consent-request API), on the same
service as the admin: `fleet.consent`."""

from __future__ import annotations

import json

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers

from fleet import consent, errors
from fleet.api.base import FleetView
from fleet.api.envelope import ApiError, ok
from fleet.api.pagination import CursorPage
from fleet.api.schema import WORKSPACE_ID_PARAM, ErrorEnvelopeSerializer, envelope
from fleet.api.serializers import MAX_ID, ErrorRefSerializer
from fleet.models import ConsentRequest, Mailbox, Role

# SendKit's text, word for word.
INSTRUCTIONS = (
    "Open this URL in a browser. After authorizing, the mailbox will be created automatically "
    "in your workspace."
)


class ConnectOutlookSerializer(serializers.Serializer):
    # A consent request for a new mailbox, with its sign-in URL (`auth_url` in the context).

    authUrl = serializers.SerializerMethodField(
        help_text="Microsoft's sign-in page; valid for 15 minutes."
    )
    instructions = serializers.SerializerMethodField()
    consent_request_uid = serializers.UUIDField(source="uid")
    consent_url = serializers.URLField(
        help_text="Fleet's link for the same consent: starts a fresh sign-in each time it is "
        "opened, until the consent request expires."
    )
    expires_at = serializers.DateTimeField()

    @extend_schema_field(OpenApiTypes.URI)
    def get_authUrl(self, consent_request: ConsentRequest) -> str:  # SendKit's OAuth connect API spells it so
        return self.context["auth_url"]

    def get_instructions(self, consent_request: ConsentRequest) -> str:
        return INSTRUCTIONS


class ConnectView(FleetView):
    roles = {"POST": Role.OPERATOR}

    def start_new_mailbox_consent(self, workspace, request_data: dict | None = None):
        """A consent request for a mailbox that does not exist yet, and its Microsoft sign-in
        URL. Once the owner consents, the mailbox is created `pending` and waits for approval
        (or for a warmup start through the API, which is that approval)."""
        with transaction.atomic():
            consent_request = consent.initiate(
                workspace,
                new_mailbox=True,
                request_data=request_data,
                actor=self.request.user,
                base_url=self.request.build_absolute_uri("/"),
            )
            auth_url = consent.begin(consent_request)
        context = {**self.get_serializer_context(), "auth_url": auth_url}
        return ok(ConnectOutlookSerializer(consent_request, context=context).data)


class ConnectOutlook(ConnectView):
    @extend_schema(
        tags=["Mailboxes"],
        operation_id="mailboxes_connect_outlook",
        summary="Get Outlook OAuth consent URL",
        description="Returns a Microsoft OAuth authorization URL for connecting an "
        "Outlook/Office365 mailbox. The user must open this URL in a browser to authorize. "
        "Operators. MICROSOFT_OAUTH_NOT_CONFIGURED (400) when the workspace has no OAuth app "
        "credential. 503 when Microsoft does not answer.",
        parameters=[WORKSPACE_ID_PARAM],
        request=None,
        responses={
            200: envelope("ConnectOutlookEnvelope", ConnectOutlookSerializer()),
            503: ErrorEnvelopeSerializer,
        },
    )
    def post(self, request):
        return self.start_new_mailbox_consent(self.target_workspace())


class MetaField(serializers.JSONField):
    """Mailivery's `meta` object: a JSON object, or in a form a JSON text (or `meta[key]`
    fields, as PHP-style clients send nested objects)."""

    def get_value(self, dictionary):
        if hasattr(dictionary, "getlist") and "meta" not in dictionary:
            nested = {
                key[5:-1]: dictionary.get(key)
                for key in dictionary
                if key.startswith("meta[") and key.endswith("]")
            }
            if nested:
                return nested
        return super().get_value(dictionary)

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                self.fail("invalid")
        data = super().to_internal_value(data)
        if not isinstance(data, dict):
            raise serializers.ValidationError("Expected an object.")
        if len(json.dumps(data)) > 10_000:
            raise serializers.ValidationError("At most 10000 characters of JSON.")
        return data


class ConnectMicrosoftSerializer(serializers.Serializer):
    """Mailivery's body (JSON or multipart/form-data)."""

    first_name = serializers.CharField(max_length=255, required=False)
    last_name = serializers.CharField(
        max_length=255, required=False, allow_null=True, allow_blank=True
    )
    name = serializers.CharField(
        max_length=255, required=False, help_text="The full name; may be given instead."
    )
    email = serializers.EmailField(max_length=255)
    email_per_day = serializers.IntegerField(
        min_value=0, max_value=2000, required=False, allow_null=True, help_text="Warmup volume."
    )
    response_rate = serializers.IntegerField(
        min_value=0, max_value=100, required=False, allow_null=True, help_text="Percent."
    )
    meta = MetaField(help_text="Any object; kept on the consent request and sent back.")

    def validate(self, attrs):
        if not (attrs.get("first_name") or attrs.get("name")):
            raise serializers.ValidationError({"first_name": ["This field is required."]})
        return attrs


class ConnectMicrosoft(ConnectView):
    @extend_schema(
        tags=["Mailboxes"],
        operation_id="mailboxes_connect_microsoft",
        summary="Connect a Microsoft mailbox",
        description="Mailivery's Microsoft connect API: validates the mailbox's details and returns the OAuth URL. "
        "After the owner consents, the mailbox is created `pending`, the workspace's webhook "
        "receives `mailbox.pending`, and `POST /mailboxes/{uid}/warmup/start` confirms it. "
        "The email must not belong to a mailbox of the workspace yet. Send an `X-Request-Id` "
        "header to find the call in the server's log. Operators.",
        parameters=[
            WORKSPACE_ID_PARAM,
            OpenApiParameter(
                "X-Request-Id",
                str,
                OpenApiParameter.HEADER,
                description="Any unique string, timestamp or UUID, for logging.",
            ),
        ],
        request={
            "application/json": ConnectMicrosoftSerializer,
            "multipart/form-data": ConnectMicrosoftSerializer,
        },
        responses={
            200: envelope("ConnectOutlookEnvelope", ConnectOutlookSerializer()),
            503: ErrorEnvelopeSerializer,
        },
    )
    def post(self, request):
        workspace = self.target_workspace()
        data = self.validated(ConnectMicrosoftSerializer)
        if Mailbox.objects.filter(workspace=workspace, email__iexact=data["email"]).exists():
            raise ApiError(
                errors.VALIDATION_ERROR,
                400,
                "email: A mailbox with this email already exists in this workspace.",
                fields={"email": ["A mailbox with this email already exists in this workspace."]},
            )
        display_name = data.get("name") or " ".join(
            part for part in (data.get("first_name"), data.get("last_name")) if part
        )
        request_data = {
            "email": data["email"],
            "display_name": display_name,
            "email_per_day": data.get("email_per_day"),
            "response_rate": data.get("response_rate"),
            "meta": data["meta"],
            "request_id": getattr(request._request, "request_id", ""),
        }
        return self.start_new_mailbox_consent(workspace, request_data)


# --- Consent requests (InboxKit's consent-request API) ----------------------------------------------------------------

INITIATED = "Consent request initiated successfully"  # InboxKit's text


class InitiateSerializer(serializers.Serializer):
    mailbox_uid = serializers.UUIDField(required=False)
    username = serializers.CharField(max_length=64, required=False)
    domain = serializers.CharField(max_length=253, required=False)
    kind = serializers.ChoiceField(
        choices=ConsentRequest.Kind.choices,
        required=False,
        help_text="Default: `external` when a consent_url is given, else `user` (our OAuth app).",
    )
    consent_url = serializers.URLField(max_length=2000, required=False, allow_blank=True)
    request_data = serializers.DictField(required=False)

    def validate(self, attrs):
        if not attrs.get("mailbox_uid") and not (attrs.get("username") and attrs.get("domain")):
            raise serializers.ValidationError(
                {"mailbox_uid": ["Give mailbox_uid, or username and domain."]}
            )
        return attrs


class ConsentRequestSerializer(serializers.Serializer):
    uid = serializers.UUIDField()
    workspace_id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=ConsentRequest.Kind.choices)
    status = serializers.ChoiceField(choices=ConsentRequest.Status.choices)
    mailbox_uid = serializers.UUIDField(source="mailbox.uid", allow_null=True)
    mailbox_email = serializers.CharField(source="mailbox.email", allow_null=True)
    username = serializers.CharField(allow_blank=True)
    domain = serializers.CharField(allow_blank=True)
    consent_url = serializers.CharField(allow_blank=True)
    request_data = serializers.DictField()
    error = ErrorRefSerializer(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)


def seed_003(name: str, data, **extra):
    """InboxKit's clients read `error: false` and `message` beside `data`."""
    return envelope(
        name,
        data,
        error=serializers.BooleanField(help_text="Always false (InboxKit's clients read it)."),
        message=serializers.CharField(),
        **extra,
    )


class ConsentRequestView(FleetView):
    queryset = ConsentRequest.objects.select_related("mailbox")
    lookup_field = "uid"
    serializer_class = ConsentRequestSerializer


class ConsentRequestInitiate(ConsentRequestView):
    roles = {"POST": Role.OPERATOR}

    @extend_schema(
        tags=["Consent requests"],
        operation_id="consent_requests_initiate",
        summary="Initiate consent request",
        description="Create a consent request for a mailbox, named by `mailbox_uid` or by "
        "`username` + `domain`. It starts `queued`. 404 for an unknown mailbox. Operators.",
        parameters=[WORKSPACE_ID_PARAM],
        request=InitiateSerializer,
        responses={200: seed_003("ConsentRequestInitiatedEnvelope", ConsentRequestSerializer())},
    )
    def post(self, request):
        data = self.validated(InitiateSerializer)
        if data.get("mailbox_uid"):
            # A uid names its workspace: found among all the key reaches (404 otherwise).
            mailbox = self.get_object(Mailbox.objects.all(), uid=data["mailbox_uid"])
            workspace = mailbox.workspace
        else:
            workspace = self.target_workspace()
        kind = data.get("kind") or (
            ConsentRequest.Kind.EXTERNAL if data.get("consent_url") else ConsentRequest.Kind.USER
        )
        created = consent.initiate(
            workspace,
            kind=kind,
            mailbox_uid=data.get("mailbox_uid"),
            username=data.get("username", ""),
            domain=data.get("domain", ""),
            consent_url=data.get("consent_url", ""),
            request_data=data.get("request_data"),
            actor=request.user,
            base_url=request.build_absolute_uri("/"),
        )
        return ok(self.serialize(created), error=False, message=INITIATED)


class ConsentRequestFilterSerializer(serializers.Serializer):
    workspace_id = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    status = serializers.ChoiceField(choices=ConsentRequest.Status.choices, required=False)
    kind = serializers.ChoiceField(choices=ConsentRequest.Kind.choices, required=False)
    mailbox_uid = serializers.UUIDField(required=False)
    cursor = serializers.CharField(required=False, max_length=500)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200)


class NewestFirst(CursorPage):
    ordering = "-id"


class ConsentRequestList(ConsentRequestView):
    @extend_schema(
        tags=["Consent requests"],
        operation_id="consent_requests_list",
        summary="List consent requests",
        description="Newest first, with filters and cursor pagination.",
        parameters=[
            OpenApiParameter("workspace_id", int),
            OpenApiParameter("status", str, enum=ConsentRequest.Status.values),
            OpenApiParameter("kind", str, enum=ConsentRequest.Kind.values),
            OpenApiParameter("mailbox_uid", str),
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", int, description="Page size, 1 to 200 (default 50)."),
        ],
        responses={
            200: seed_003(
                "ConsentRequestListEnvelope", ConsentRequestSerializer(many=True), paginated=True
            )
        },
    )
    def get(self, request):
        wanted = self.validated(ConsentRequestFilterSerializer, request.query_params)
        requests = self.queryset
        for field in ("workspace_id", "status", "kind"):
            if field in wanted:
                requests = requests.filter(**{field: wanted[field]})
        if "mailbox_uid" in wanted:
            requests = requests.filter(mailbox__uid=wanted["mailbox_uid"])
        paginator = NewestFirst()
        page = paginator.paginate_queryset(requests, request, view=self)
        response = paginator.get_paginated_response(self.serialize(page, many=True))
        response.data.update(error=False, message="Consent requests")
        return response


class ConsentRequestDetail(ConsentRequestView):
    @extend_schema(
        tags=["Consent requests"],
        operation_id="consent_requests_get",
        summary="Get consent request status",
        responses={200: seed_003("ConsentRequestEnvelope", ConsentRequestSerializer())},
    )
    def get(self, request, uid):
        return ok(self.serialize(self.get_object()), error=False, message="Consent request status")
