import csv

from django.contrib import admin
from django.db.models import Count
from django.http import HttpResponse
from django.template.response import TemplateResponse

from fleet import errors
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter
from fleet.admin.display import badge
from fleet.models import BulkAddRun

OUTCOME_BADGE = {"all_connected": "completed", "partly_connected": "expired", "rejected": "failed"}


@admin.register(BulkAddRun)
class BulkAddRunAdmin(ScopedAdmin):
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
        }
        return TemplateResponse(request, "fleet/bulk_add_run.html", context)

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
