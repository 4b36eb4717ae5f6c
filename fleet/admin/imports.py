"""CSV/XLSX import and export of mailboxes (django-import-export) and the import batches' pages.

The mailbox list's Import asks for the workspace (the user's own, operator or above), an
optional tag and the file; the file is checked before the preview (SendKit's messages), the
preview shows what each row will become, and Confirm saves it and opens the batch's page, where a
progress bar follows the connection tests.
"""

from __future__ import annotations

from cryptography.fernet import InvalidToken
from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from import_export import fields, resources
from import_export.admin import ImportExportMixin
from import_export.formats import base_formats
from import_export.forms import ConfirmImportForm, ImportForm

from fleet import errors, health, imports, mailboxes
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter, has_role
from fleet.admin.object_actions import ObjectAction, ObjectActionsMixin
from fleet.models import ImportBatch, Mailbox, Role, Workspace

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class MailboxImportForm(ImportForm):
    workspace = forms.ModelChoiceField(queryset=Workspace.objects.none())
    tag = forms.CharField(required=False, help_text="Optional: applied to every imported mailbox.")
    field_order = ["workspace", "tag", "import_file", "resource", "format"]

    def __init__(self, formats, resources, *, user, **kwargs):
        super().__init__(formats, resources, **kwargs)
        self.fields["workspace"].queryset = Workspace.objects.restrict(user, Role.OPERATOR)
        self.fields["import_file"].error_messages["required"] = imports.FILE_REQUIRED
        # An empty upload reads as the API's answer for one (one message for both paths).
        self.fields["import_file"].error_messages["empty"] = imports.FILE_EMPTY
        self.fields["import_file"].help_text = (
            "CSV (comma or semicolon; UTF-8, UTF-16 or Windows-1252) or XLSX with the columns "
            f"email, password and optionally name, totpsecret; at most {imports.MAX_ROWS} rows."
        )

    def clean_tag(self):
        try:
            return imports.check_tag(self.cleaned_data["tag"])
        except imports.ImportRejected as exc:
            raise forms.ValidationError(exc.message) from None

    def clean_import_file(self):
        upload = self.cleaned_data["import_file"]
        try:
            data, name = imports.read_upload(upload)
            imports.read_table(data, name)
        except imports.ImportRejected as exc:
            raise forms.ValidationError(exc.message) from None
        upload.seek(0)
        return upload


class MailboxConfirmImportForm(ConfirmImportForm):
    workspace = forms.ModelChoiceField(queryset=Workspace.objects.none(), widget=forms.HiddenInput)
    tag = forms.CharField(max_length=64, required=False, widget=forms.HiddenInput)

    def __init__(self, *, user, **kwargs):
        super().__init__(**kwargs)
        # Checked again on confirm: a forged POST cannot name another workspace.
        self.fields["workspace"].queryset = Workspace.objects.restrict(user, Role.OPERATOR)


class MailboxExportResource(resources.ModelResource):
    """Every column an operator needs, no secret ever; cells that a spreadsheet would run as a
    formula are prefixed with a quote (OWASP "CSV injection")."""

    workspace = fields.Field(attribute="workspace__name", column_name="workspace")
    tags = fields.Field(column_name="tags")
    error_hint = fields.Field(column_name="error_hint")

    class Meta:
        model = Mailbox
        fields = (
            "uid",
            "email",
            "display_name",
            "workspace",
            "provider",
            "auth_method",
            "status",
            "error_code",
            "error_message",
            "error_hint",
            "smtp_host",
            "smtp_port",
            "smtp_security",
            "imap_host",
            "imap_port",
            "imap_security",
            "tags",
            "warmup_status",
            "last_checked_at",
            "created_at",
        )
        export_order = fields
        name = "Mailboxes (no secrets)"

    def dehydrate_error_hint(self, mailbox):
        entry = errors.get(mailbox.error_code)
        return entry.hint if entry else ""

    def dehydrate_tags(self, mailbox):
        return ", ".join(sorted(t.name for t in mailbox.tags.all()))

    def export_field(self, field, instance, **kwargs):
        value = super().export_field(field, instance, **kwargs)
        if isinstance(value, str) and value.startswith(FORMULA_STARTS):
            return "'" + value
        return value

    def filter_export(self, queryset, **kwargs):
        return queryset.select_related("workspace").prefetch_related("tags")


class MailboxImportExportMixin(ImportExportMixin):
    """Import and export on the mailbox list; everything scoped like the list itself."""

    import_form_class = MailboxImportForm
    confirm_form_class = MailboxConfirmImportForm
    import_template_name = "admin/fleet/mailbox/import.html"
    import_formats = [imports.MailboxFileFormat]
    export_formats = [base_formats.CSV, base_formats.XLSX]
    import_error_display = ("message",)

    def get_import_resource_classes(self, request):
        return [imports.MailboxImportResource]

    def get_export_resource_classes(self, request):
        return [MailboxExportResource]

    def has_import_permission(self, request):
        return has_role(request, Role.OPERATOR)

    def has_export_permission(self, request):
        return has_role(request, Role.VIEWER)

    def get_import_form_kwargs(self, request):
        return {**super().get_import_form_kwargs(request), "user": request.user}

    def get_confirm_form_kwargs(self, request, import_form=None):
        return {**super().get_confirm_form_kwargs(request, import_form), "user": request.user}

    def get_confirm_form_initial(self, request, import_form):
        initial = super().get_confirm_form_initial(request, import_form)
        if import_form is not None:
            initial["workspace"] = import_form.cleaned_data["workspace"].pk
            initial["tag"] = import_form.cleaned_data["tag"]
        return initial

    def get_import_resource_kwargs(self, request, **kwargs):
        form = kwargs.get("form")
        data = getattr(form, "cleaned_data", None) or {}
        return {
            "workspace": data.get("workspace"),
            "tag": data.get("tag", ""),
            "user": request.user,
        }

    def import_action(self, request, **kwargs):
        response = super().import_action(request, **kwargs)
        result = (getattr(response, "context_data", None) or {}).get("result")
        if result is not None and not result.has_errors() and not result.has_validation_errors():
            response.context_data["preview_table"] = preview_table(result)
        return response

    def process_import(self, request, **kwargs):
        try:
            return super().process_import(request, **kwargs)
        except (InvalidToken, FileNotFoundError, imports.ImportRejected):
            # The file waited too long, was already imported, or was never ours.
            self.message_user(
                request,
                "This import has expired or was already confirmed; please upload the file again.",
                messages.ERROR,
            )
            return HttpResponseRedirect(reverse("admin:fleet_mailbox_import"))

    def process_result(self, result, request):
        summary = getattr(result, "fleet", None)
        if result.has_errors() or summary is None or summary.batch is None:
            self.message_user(
                request,
                "Nothing was imported: the mailboxes changed while the import ran. Please try again.",
                messages.ERROR,
            )
            return HttpResponseRedirect(reverse("admin:fleet_mailbox_import"))
        if summary.imported:
            text = (
                f"Imported {summary.imported}, skipped {summary.skipped} duplicate(s), "
                f"{summary.failed} failed. Connection tests are running."
            )
        else:  # nothing new: no test runs, so none is promised
            text = (
                f"Nothing was imported: {summary.skipped} duplicate(s) skipped, "
                f"{summary.failed} failed."
            )
        self.message_user(
            request,
            text,
            messages.WARNING if summary.failed or not summary.imported else messages.SUCCESS,
        )
        return HttpResponseRedirect(
            reverse("admin:fleet_importbatch_change", args=[summary.batch.pk])
        )


ROW_KINDS = {"new": _("New"), "skip": _("Skipped"), "delete": _("Delete"), "update": _("Update")}


def preview_table(result) -> str:
    """import-export's preview table (admin/import_export/import.html), built in one pass: the
    template's loop over 500 rows x 5 cells was most of the preview page's time."""
    head = format_html_join("", "<th>{}</th>", ((h,) for h in result.diff_headers))
    rows = format_html_join(
        "\n",
        '<tr class="{}"><td class="import-type">{}</td>{}</tr>',
        (
            (
                row.import_type,
                ROW_KINDS.get(row.import_type, ""),
                format_html_join("", "<td>{}</td>", ((cell,) for cell in row.diff or [])),
            )
            for row in result.valid_rows()
        ),
    )
    return format_html(
        '<table class="import-preview"><thead><tr><th></th>{}</tr></thead>\n{}\n</table>',
        head,
        rows,
    )


FAILED_TEST = (Mailbox.Status.ERROR, Mailbox.Status.REAUTH_REQUIRED)


def failed_of(batch: ImportBatch):
    """The batch's mailboxes whose last connection test failed."""
    return batch.mailboxes.filter(status__in=FAILED_TEST)


@admin.register(ImportBatch)
class ImportBatchAdmin(ObjectActionsMixin, ScopedAdmin):
    object_actions = (
        ObjectAction(
            "retest_failed",
            "Retest failed",
            Role.OPERATOR,
            "Testing mailboxes",
            lambda batch: failed_of(batch).exists(),
            "Test the connection of this import's failed mailboxes again",
        ),
    )
    list_display = [
        "created_at",
        "file_name",
        "workspace",
        "tag",
        "imported",
        "skipped",
        "failed",
        "progress_bar",
        "created_by",
    ]
    list_filter = [("workspace", ScopedRelatedFilter)]
    list_select_related = ["workspace", "tag", "created_by"]
    search_fields = ["file_name"]
    fields = [
        "workspace",
        "created_by",
        "created_at",
        "file_name",
        "tag",
        ("total_rows", "imported", "skipped", "failed"),
        "progress_bar",
        "failed_tests",
        "error_list",
    ]
    readonly_fields = [
        "workspace",
        "created_by",
        "created_at",
        "file_name",
        "tag",
        "total_rows",
        "imported",
        "skipped",
        "failed",
        "progress_bar",
        "failed_tests",
        "error_list",
    ]
    FAILED_TESTS_SHOWN = 100

    def has_add_permission(self, request):
        return False  # made by imports only

    def has_change_permission(self, request, obj=None):
        return False  # a record of what happened

    def get_urls(self):
        return [
            path(
                "<path:object_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="fleet_importbatch_progress",
            ),
            *super().get_urls(),
        ]

    def progress_view(self, request, object_id):
        batch = get_object_or_404(self.get_queryset(request), pk=object_id)
        return JsonResponse(batch.progress())

    @admin.display(description="connection tests")
    def progress_bar(self, obj):
        return render_to_string(
            "fleet/import_progress.html",
            {
                "batch": obj,
                "progress": obj.progress(),
                "url": reverse("admin:fleet_importbatch_progress", args=[obj.pk]),
                "mailboxes_url": reverse("admin:fleet_mailbox_changelist")
                + f"?import_batches__id__exact={obj.pk}",
            },
        )

    def do_retest_failed(self, request, batch):
        queued = health.queue_tests(
            failed_of(batch).only("pk", "status"), actor=request.user, via=mailboxes.ADMIN
        )
        self.message_user(
            request,
            f"Connection tests queued for {queued} failed mailbox(es) of this import; "
            "the progress bar follows them.",
        )

    @admin.display(description="failed connection tests")
    def failed_tests(self, obj):
        """Which imported mailboxes failed their test, why, and what to do (the code's hint)."""
        failed = list(
            obj.mailboxes.exclude(status__in=[Mailbox.Status.PENDING, Mailbox.Status.ACTIVE])
            .exclude(error_code="")
            .order_by("email")
            .only("pk", "email", "status", "error_code", "error_message")[: self.FAILED_TESTS_SHOWN]
        )
        if not failed:
            return "—"
        rows = [
            {
                "mailbox": m,
                "url": reverse("admin:fleet_mailbox_change", args=[m.pk]),
                "entry": errors.get(m.error_code),
            }
            for m in failed
        ]
        return render_to_string(
            "fleet/import_failed_tests.html", {"rows": rows, "shown": self.FAILED_TESTS_SHOWN}
        )

    @admin.display(description="rows refused (first 50)")
    def error_list(self, obj):
        if not obj.errors:
            return "—"
        return render_to_string("fleet/import_errors.html", {"errors": obj.errors})


def totp_button(url: str) -> str:
    return format_html(
        '<button type="submit" class="button" formaction="{}" formmethod="post" '
        'formnovalidate name="_reveal_totp">Show current code</button>',
        url,
    )
