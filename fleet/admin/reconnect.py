"""Bulk reconnect in the admin: the run's links page (progress, links to copy, CSV, e-mail form)
and the one place the admin's "Reconnect all failing" buttons and actions start a run — short
callers of fleet/reconnect.py."""

from __future__ import annotations

import csv

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.http import HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from fleet import mailboxes, reconnect
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter, has_role, require_role
from fleet.admin.display import badge, sentence
from fleet.errors import FleetError
from fleet.models import Mailbox, ReconnectRun, Role

ITEMS_SHOWN = 1000  # the page lists this many; the CSV has them all


class SendLinksForm(forms.Form):
    address = forms.EmailField(
        label="Send to", max_length=254, help_text="Who gets the links (one e-mail)."
    )
    item = forms.IntegerField(required=False, widget=forms.HiddenInput)


def start_runs(model_admin, request, workspaces_and_selections, selection: str):
    """Start a run per (workspace, mailboxes) and go to the links page of the (last) run made.
    Refusals are messages (nothing to reconnect, no OAuth app), never a 403: callers show the
    buttons to operators only and pass only workspaces the user operates."""
    made = []
    for workspace, chosen in workspaces_and_selections:
        try:
            made.append(
                reconnect.start(
                    workspace,
                    chosen,
                    actor=request.user,
                    selection=selection,
                    base_url=request.build_absolute_uri("/"),
                )
            )
        except FleetError as failure:
            model_admin.message_user(
                request,
                f"{workspace}: " + sentence(failure.message, failure.error.hint),
                messages.WARNING,
            )
    if not made:
        return None
    for run in made:
        model_admin.message_user(
            request,
            f"{run.workspace}: {run.total} consent link(s) ready; send them to the owners.",
            messages.SUCCESS,
        )
    if len(made) == 1:
        return HttpResponseRedirect(reverse("admin:fleet_reconnectrun_change", args=[made[0].pk]))
    return HttpResponseRedirect(reverse("admin:fleet_reconnectrun_changelist"))


@admin.register(ReconnectRun)
class ReconnectRunAdmin(ScopedAdmin):
    list_display = ["created_at", "workspace", "selection", "reconnected", "created_by"]
    list_filter = [("workspace", ScopedRelatedFilter)]
    list_select_related = ["workspace", "created_by"]

    def get_urls(self):
        return [
            path(
                "<path:object_id>/links.csv",
                self.admin_site.admin_view(self.csv_view),
                name="fleet_reconnectrun_csv",
            ),
            path(
                "<path:object_id>/send/",
                self.admin_site.admin_view(require_POST(self.send_view)),
                name="fleet_reconnectrun_send",
            ),
            *super().get_urls(),
        ]

    def get_queryset(self, request):
        # "n of m reconnected" for every row of the list in the list's own query.
        return (
            super()
            .get_queryset(request)
            .annotate(
                active_now=Count("items", filter=Q(items__mailbox__status=Mailbox.Status.ACTIVE))
            )
        )

    @admin.display(description="reconnected")
    def reconnected(self, obj):
        return f"{obj.active_now} of {obj.total}"

    def has_add_permission(self, request):
        return False  # runs start from "Reconnect all failing"

    def has_change_permission(self, request, obj=None):
        return False  # a record: its page is the links page

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        if run is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        return self.links_page(request, run, SendLinksForm())

    def links_page(self, request, run, form, status=200):
        items = list(reconnect.items(run)[:ITEMS_SHOWN])
        for item in items:
            now = item.mailbox.status if item.mailbox else "deleted"
            item.shown_status = badge(now, now.replace("_", " "))
            item.waiting = now == Mailbox.Status.REAUTH_REQUIRED and bool(
                item.consent_request and item.consent_request.is_open
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Reconnect: {run.workspace}",
            "run": run,
            "progress": reconnect.progress(run),
            "items": items,
            "more": max(0, run.total - len(items)),
            "may_send": has_role(request, Role.OPERATOR, run.workspace_id),
            "form": form,
            "has_view_permission": True,
        }
        return TemplateResponse(
            request, "admin/fleet/reconnect_run.html", context, status=status
        )

    def csv_view(self, request, object_id):
        run = self.get_object(request, object_id)
        if run is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)

        class Echo:
            def write(self, value):
                return value

        writer = csv.writer(Echo())
        response = StreamingHttpResponse(
            (writer.writerow(row) for row in reconnect.csv_rows(run)),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="reconnect-{run.uid}.csv"'
        return response

    def send_view(self, request, object_id) -> HttpResponse:
        run = self.get_object(request, object_id)
        if run is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        require_role(request, Role.OPERATOR, "Sending consent links", run.workspace_id)
        form = SendLinksForm(request.POST)
        if not form.is_valid():
            return self.links_page(request, run, form, status=400)
        item = form.cleaned_data.get("item")
        try:
            sent = reconnect.send_links(
                run,
                form.cleaned_data["address"],
                [item] if item else None,
                actor=request.user,
                via=mailboxes.ADMIN,
            )
        except FleetError as failure:
            self.message_user(
                request, sentence(failure.message, failure.error.hint), messages.ERROR
            )
        else:
            self.message_user(
                request,
                f"{sent} link(s) sent to {form.cleaned_data['address']}.",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:fleet_reconnectrun_change", args=[run.pk]))
