import csv

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import urlencode

from fleet import errors
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter, require_role
from fleet.admin.display import badge, sentence
from fleet.admin.object_actions import ObjectAction, ObjectActionsMixin
from fleet.bulk_add import (
    MAX_ACCOUNTS,
    Account,
    AccountsInvalid,
    parse_lines,
    parse_upload,
    resolve_credential,
    start_run,
)
from fleet.errors import FleetError
from fleet.imports import ImportRejected
from fleet.models import BulkAddRun, Credential, Role, Workspace


class AnyCredentialField(forms.TypedChoiceField):
    """Offers the user's Graph credentials, but lets any id through: `resolve_credential` then
    checks it against the chosen workspace, so a foreign id is INVALID_CREDENTIAL_ID, as in
    the API (Woodpecker's bulk-add API)."""

    def valid_value(self, value):
        return True


class BulkAddForm(forms.Form):
    workspace = forms.ModelChoiceField(queryset=Workspace.objects.none())
    credential = AnyCredentialField(
        required=False,
        coerce=int,
        empty_value=None,
        help_text="Leave empty when the workspace has exactly one valid Graph credential.",
    )
    accounts = forms.CharField(
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 12, "cols": 70, "placeholder": "jim@example.com,Jimothy H"}
        ),
        label="Mailboxes",
        help_text=f"One per line: email[,display name]. Up to {MAX_ACCOUNTS}.",
    )
    csv_file = forms.FileField(
        required=False,
        label="…or a CSV / XLSX file",
        help_text="Columns mailbox_email and (optionally) display_name, with a header row.",
    )
    convert = forms.BooleanField(
        required=False,
        label="Switch OAuth mailboxes too",
        help_text="Mailboxes already connected by Microsoft OAuth consent are kept as they are "
        "(ALREADY_CONNECTED) unless this is ticked; switched ones stop their token upkeep.",
    )

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        workspaces = Workspace.objects.restrict(user, Role.OPERATOR)
        self.fields["workspace"].queryset = workspaces
        if len(workspaces) == 1:
            self.fields["workspace"].initial = workspaces[0]
        credentials = (
            Credential.objects.restrict(user, Role.OPERATOR)
            .filter(kind=Credential.Kind.GRAPH_APP_ONLY)
            .select_related("workspace")
        )
        self.fields["credential"].choices = [("", "— the workspace's only valid one —")] + [
            (c.pk, f"{c.workspace} · {c.name} ({c.get_status_display()})") for c in credentials
        ]

    def clean(self):
        data = super().clean()
        text, upload = (data.get("accounts") or "").strip(), data.get("csv_file")
        if bool(text) == bool(upload):
            raise ValidationError("Paste the mailboxes or upload a CSV file (one of the two).")
        try:
            data["parsed"] = parse_upload(upload) if upload else parse_lines(text)
        except AccountsInvalid as bad:
            # Every bad line, before anything runs.
            # Sentences for people: the codes are the API's business.
            raise ValidationError([sentence(p) for p in bad.problems[:50]]) from bad
        except ImportRejected as rejected:  # not a readable CSV/XLSX, too large, empty
            raise ValidationError(sentence(rejected.message)) from rejected
        if data.get("workspace") is not None:
            try:
                data["resolved"] = resolve_credential(data["workspace"], data.get("credential"))
            except FleetError as failure:
                self.add_error("credential", sentence(failure.message, failure.error.hint))
        return data


OUTCOME_BADGE = {"all_connected": "completed", "partly_connected": "expired", "rejected": "failed"}


def _run_done_with_failures(run: BulkAddRun) -> bool:
    return run.status in (BulkAddRun.Status.FINISHED, BulkAddRun.Status.FAILED) and run.failed > 0


@admin.register(BulkAddRun)
class BulkAddRunAdmin(ObjectActionsMixin, ScopedAdmin):
    object_actions = (
        ObjectAction(
            "export",
            "Export CSV",
            Role.VIEWER,
            "Exporting a bulk add",
            title="Every account's result, with the code's hint (the filter shown applies)",
            method="get",
        ),
        ObjectAction(
            "run_again",
            "Run again for failed",
            Role.OPERATOR,
            "Adding mailboxes in bulk",
            _run_done_with_failures,
            "A new run of the accounts that failed, with the same credential",
        ),
    )
    list_display = [
        "created_at",
        "workspace",
        "credential",
        "status_badge",
        "outcome_badge",
        "total",
        "connected",
        "failed",
        "created_by",
    ]
    list_filter = ["status", "outcome", ("workspace", ScopedRelatedFilter)]
    list_select_related = ["workspace", "credential", "created_by"]
    date_hierarchy = "created_at"

    def get_urls(self):
        return [
            path(
                "start/",
                self.admin_site.admin_view(self.start_view),
                name="fleet_bulkaddrun_start",
            ),
            *super().get_urls(),
        ]

    def start_view(self, request):
        """Add Microsoft mailboxes in bulk (Woodpecker's bulk-add API): check the list and the credential, record
        the run, and go to its results page (the worker does the rest)."""
        require_role(request, Role.OPERATOR, "Adding mailboxes in bulk")
        form = BulkAddForm(request.user, request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                run = start_run(
                    data["workspace"],
                    data["resolved"],
                    data["parsed"],
                    request.user,
                    convert=data["convert"],
                    via="admin",
                )
            except FleetError as failure:
                form.add_error(None, sentence(failure.message, failure.error.hint))
            else:
                self.message_user(
                    request, f"Bulk add of {run.total} mailbox(es) started.", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:fleet_bulkaddrun_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Add Microsoft mailboxes in bulk (Graph app-only)",
            "opts": self.opts,
            "form": form,
            "max_accounts": MAX_ACCOUNTS,
        }
        return TemplateResponse(request, "admin/fleet/bulk_add_start.html", context)

    def has_change_permission(self, request, obj=None):
        return False  # a run is a record of what happened

    def has_add_permission(self, request):
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, obj):
        if not obj.outcome:
            return "—"
        return badge(OUTCOME_BADGE[obj.outcome], obj.get_outcome_display())

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        if run is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        results = run.results.select_related("mailbox").order_by("position")
        code = request.GET.get("code")
        if code is not None:
            results = results.filter(error_code=code)
        if request.GET.get("format") == "csv":
            return self._export(run, results)
        tools = self.available_actions(request, run)
        if code is not None:  # the export follows the filter shown
            for tool in tools:
                if tool["name"] == "export":
                    tool["url"] += "?" + urlencode({"code": code})
        codes = (
            run.results.exclude(error_code="")
            .values("error_code")
            .annotate(n=Count("id"))
            .order_by("-n", "error_code")
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": str(run),
            "run": run,
            "results": results,
            "selected_code": code,
            "codes": [
                {
                    "code": row["error_code"],
                    "count": row["n"],
                    "entry": errors.get(row["error_code"]),
                }
                for row in codes
            ],
            "has_view_permission": True,
            "fleet_object_actions": tools,
        }
        return TemplateResponse(request, "fleet/bulk_add_run.html", context)

    def do_export(self, request, run):
        results = run.results.select_related("mailbox").order_by("position")
        if request.GET.get("code") is not None:
            results = results.filter(error_code=request.GET["code"])
        return self._export(run, results)

    def do_run_again(self, request, run):
        """The failed accounts again, as a new run (the credential checked as at the start)."""
        failed = run.results.filter(done=True, success=False).order_by("position")
        accounts = [Account(r.email, r.name) for r in failed]
        credential = resolve_credential(run.workspace, run.credential_id)
        again = start_run(run.workspace, credential, accounts, request.user, via="admin")
        self.message_user(
            request,
            f"Bulk add of the {again.total} failed mailbox(es) started again.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:fleet_bulkaddrun_change", args=[again.pk]))

    def _export(self, run, results):
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="bulk-add-{run.uid}.csv"'
        writer = csv.writer(response)
        writer.writerow(
            [
                "email",
                "name",
                "success",
                "id",
                "spf_correct",
                "dkim_correct",
                "error",
                "detail",
                "hint",
            ]
        )
        for r in results:
            entry = errors.get(r.error_code)
            writer.writerow(
                [
                    neutralise(r.email),
                    neutralise(r.name),
                    r.success,
                    r.mailbox_id or "",
                    "" if r.spf_correct is None else r.spf_correct,
                    "" if r.dkim_correct is None else r.dkim_correct,
                    r.error_code,
                    neutralise(r.error_detail),
                    entry.hint if entry else "",
                ]
            )
        return response


def neutralise(value: str) -> str:
    """Spreadsheet formula injection: a cell starting with = + - @ tab or CR is shown as text.
    https://owasp.org/www-community/attacks/CSV_Injection"""
    return "'" + value if value and value[0] in "=+-@\t\r" else value
