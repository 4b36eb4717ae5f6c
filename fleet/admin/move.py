"""The move off Basic auth in the admin: the plan per workspace (what moves how, and a button to
move them), the run's page (progress, every code with its hint, the consent links) — two-line
callers of fleet/move.py."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from fleet import errors, move
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter, has_role
from fleet.admin.connect import links_page
from fleet.admin.display import badge
from fleet.errors import FleetError
from fleet.models import MoveItem, MoveRun, Role, Workspace


@admin.register(MoveRun)
class MoveRunAdmin(ScopedAdmin):
    list_display = [
        "created_at",
        "workspace",
        "status_badge",
        "total",
        "moved",
        "consent_sent",
        "failed",
        "created_by",
    ]
    list_filter = ["status", ("workspace", ScopedRelatedFilter)]
    list_select_related = ["workspace", "created_by"]

    def get_urls(self):
        return [
            path("plan/", self.admin_site.admin_view(self.plan_view), name="fleet_moverun_plan"),
            path(
                "<path:object_id>/consent-links/",
                self.admin_site.admin_view(self.consent_links_view),
                name="fleet_moverun_consent_links",
            ),
            *super().get_urls(),
        ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # a run is a record of what happened

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())

    def plan_view(self, request):
        """The move plan of one workspace; POST (operators) starts the move of all of it."""
        workspaces = list(Workspace.objects.restrict(request.user).order_by("name"))
        if not workspaces:
            raise PermissionDenied
        chosen = request.GET.get("workspace") or request.POST.get("workspace")
        workspace = next((w for w in workspaces if str(w.pk) == chosen), workspaces[0])
        may_move = has_role(request, Role.OPERATOR, workspace.pk)
        if request.method == "POST":
            if not may_move:
                raise PermissionDenied
            try:
                run = move.start_move(workspace, request.user)
            except FleetError as failure:
                self.message_user(request, f"{failure.code} — {failure.message}", messages.ERROR)
            else:
                self.message_user(request, f"Move of {run.total} mailbox(es) started.")
                return HttpResponseRedirect(reverse("admin:fleet_moverun_change", args=[run.pk]))
        the_plan = move.plan(workspace)
        context = {
            **self.admin_site.each_context(request),
            "title": "Move off Basic auth",
            "opts": self.opts,
            "workspaces": workspaces,
            "workspace": workspace,
            "plan": the_plan,
            "groups": [
                (g.value, g.label, [d for d in the_plan.domains if d.group == g.value])
                for g in MoveItem.Group
            ],
            "may_move": may_move,
            "open_run": MoveRun.objects.filter(
                workspace=workspace, status__in=["queued", "running"]
            ).first(),
        }
        return TemplateResponse(request, "fleet/move_plan.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        if run is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        items = run.items.select_related("mailbox", "consent_request").order_by("group", "email")
        codes = (
            run.items.exclude(error_code="")
            .values("error_code")
            .annotate(n=Count("id"))
            .order_by("-n", "error_code")
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": str(run),
            "run": run,
            "items": items[:1000],
            "codes": [
                {"code": c["error_code"], "count": c["n"], "entry": errors.get(c["error_code"])}
                for c in codes
            ],
            "consents": run.items.filter(consent_request__isnull=False).count(),
            "has_view_permission": True,
        }
        return TemplateResponse(request, "fleet/move_run.html", context)

    def consent_links_view(self, request, object_id):
        """The run's consent requests on the consent links page (copy, or CSV for the owners)."""
        run = self.get_object(request, object_id)
        if run is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        return links_page(
            self, request, move.open_consent_requests(run), "Consent links of the move"
        )
