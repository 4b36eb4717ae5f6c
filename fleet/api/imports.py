"""CSV import of app-password mailboxes (SendKit's CSV import API), through `fleet.imports.import_mailboxes`,
the admin's import."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser

from fleet import imports, mailboxes
from fleet.api.base import FleetView
from fleet.api.schema import WORKSPACE_ID_PARAM, envelope
from fleet.models import ImportBatch, Role


class ImportRequestSerializer(serializers.Serializer):
    file = serializers.FileField(
        required=False,
        help_text="CSV file with email and password columns (optional: name, totpsecret); "
        "XLSX works too. At most 500 rows.",
    )
    tag = serializers.CharField(
        max_length=64, required=False, help_text="Tag to apply to all imported mailboxes"
    )


class ImportErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(required=False, help_text="The row's line in the file.")
    email = serializers.CharField()
    error = serializers.CharField()


class ImportResultSerializer(serializers.Serializer):
    imported = serializers.IntegerField(help_text="Mailboxes successfully imported")
    skipped = serializers.IntegerField(help_text="Duplicate emails skipped")
    failed = serializers.IntegerField(help_text="Mailboxes that failed")
    errors = serializers.SerializerMethodField(help_text="First 50 error details")

    @extend_schema_field(ImportErrorSerializer(many=True))
    def get_errors(self, result: imports.ImportResult) -> list:
        return ImportErrorSerializer(result.errors[: ImportBatch.MAX_ERRORS], many=True).data


class ImportOutlook(FleetView):
    roles = {"POST": Role.OPERATOR}
    parser_classes = [MultiPartParser, FormParser]
    serializer_class = ImportResultSerializer

    @extend_schema(
        tags=["Mailboxes"],
        operation_id="mailboxes_import_outlook",
        summary="Bulk import Outlook mailboxes from CSV",
        description="Upload a CSV to import Outlook/Hotmail mailboxes using app passwords (not "
        "OAuth). Maximum 500 per import. SMTP/IMAP settings are filled in; mailboxes are "
        "created `pending` and their connections are tested in the background. A file that is "
        "missing, empty, lacks the columns or has too many rows is refused whole "
        "(VALIDATION_ERROR with SendKit's message) and nothing is written. The file may also "
        "be sent as a plain form field holding the CSV text. Operators.",
        parameters=[WORKSPACE_ID_PARAM],
        request={
            "multipart/form-data": ImportRequestSerializer,
            "application/x-www-form-urlencoded": ImportRequestSerializer,
        },
        responses={200: envelope("ImportResultEnvelope", ImportResultSerializer())},
    )
    def post(self, request):
        workspace = self.target_workspace()
        upload = request.FILES.get("file")
        if upload is None and isinstance(request.data.get("file"), str):
            # `curl --form file=…` / requests' `data=` send the CSV as a text field (SendKit's CSV import API).
            upload = request.data["file"].encode() or None
        tag = request.data.get("tag", "")
        # Over 64 characters: VALIDATION_ERROR, as in the admin (the service checks it).
        tag = tag if isinstance(tag, str) else ""
        result = imports.import_mailboxes(
            workspace, upload, tag=tag, user=request.user, via=mailboxes.API
        )
        return self.respond(result)
