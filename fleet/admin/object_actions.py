"""Buttons on an object's page (the change form's tools, beside *History*) and on list rows.

An admin declares `object_actions`: each names the role it needs and the object states it makes
sense in, and is shown only then (`available`), so no button ends in a 403 or a refusal. A
button POSTs (with the CSRF token) to `<object id>/do/<name>/`, which checks both again, calls
the admin's `do_<name>(request, obj)` — a short caller of a service — and reports with Django's
messages before it goes back to the object (or to the list the row button was pressed on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.http import Http404, HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from fleet.admin.base import has_role, require_role, workspace_id_of
from fleet.admin.display import sentence
from fleet.errors import FleetError


@dataclass(frozen=True)
class ObjectAction:
    name: str  # the URL's last part and the button's id (`tool-<name>`)
    label: str  # as the button reads
    role: str  # the least role in the object's workspace
    doing: str  # "Approving a mailbox": the sentence a refusal starts with
    when: Callable[[object], bool] = lambda obj: True  # the object's state allows it
    title: str = ""  # what it does, as the button's tooltip
    # "post" changes something; "get" is a plain link (an export: nothing changes); "copy"
    # copies `value(obj)` in the browser (static/fleet/copy.js), no request at all.
    method: str = "post"
    value: Callable[[object], str] | None = None
    short: str = ""  # on a list row, where room is short ("Test"); the label by default


class ObjectActionsMixin:
    object_actions: tuple[ObjectAction, ...] = ()

    def get_urls(self):
        return [
            path(
                "<path:object_id>/do/<str:name>/",
                self.admin_site.admin_view(self.object_action_view),
                name=f"{self.opts.app_label}_{self.opts.model_name}_do",
            ),
            *super().get_urls(),
        ]

    def available_actions(self, request: HttpRequest, obj) -> list[dict]:
        """The buttons this user may press on this object as it is now."""
        if obj is None or obj.pk is None:
            return []
        workspace_id = workspace_id_of(obj)
        return [
            {
                "name": action.name,
                "label": action.label,
                "title": action.title,
                "method": action.method,
                "url": self.action_url(obj, action.name) if action.method != "copy" else "",
                "value": action.value(obj) if action.value else "",
            }
            for action in self.object_actions
            if has_role(request, action.role, workspace_id) and action.when(obj)
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The object is at hand here: the buttons cost no query of their own.
        context["fleet_object_actions"] = self.available_actions(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def action_url(self, obj, name: str) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_do", args=[obj.pk, name]
        )

    def object_action_view(self, request, object_id, name):
        action = next((a for a in self.object_actions if a.name == name), None)
        if action is None or action.method == "copy":
            raise Http404("No such action.")
        if action.method == "post" and request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} with this id.")
        require_role(request, action.role, action.doing, workspace_id_of(obj))
        back = self.back_url(request, obj)
        if not action.when(obj):
            # The page was older than the object: say so instead of pretending.
            self.message_user(
                request,
                f"{action.label}: not done — {obj} has changed and no longer allows it.",
                messages.WARNING,
            )
            return HttpResponseRedirect(back)
        try:
            response = getattr(self, f"do_{action.name}")(request, obj)
        except FleetError as failure:
            self.message_user(
                request,
                f"{action.label}: " + sentence(failure.message, failure.error.hint),
                messages.ERROR,
            )
            return HttpResponseRedirect(back)
        return response or HttpResponseRedirect(back)

    def back_url(self, request, obj) -> str:
        """Where to go after the action: the page the button was on (`next`), else the object."""
        wanted = request.POST.get("next") or request.GET.get("next") or ""
        if wanted and url_has_allowed_host_and_scheme(
            wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return wanted
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk])

    def row_button(self, request, obj, names: tuple[str, ...]) -> str:
        """The first of `names` this user may press on this row: a small button that submits
        the list's form (its CSRF token) to the action, coming back to the same list."""
        by_name = {a.name: a for a in self.object_actions}
        workspace_id = workspace_id_of(obj)
        for name in names:
            action = by_name[name]
            if has_role(request, action.role, workspace_id) and action.when(obj):
                return format_html(
                    '<button type="submit" class="fleet-row-action" formaction="{}" '
                    'formmethod="post" formnovalidate name="next" value="{}" title="{}" '
                    'data-action="{}">{}</button>',
                    self.action_url(obj, name),
                    request.get_full_path(),
                    action.title or action.label,
                    name,
                    action.short or action.label,
                )
        return ""
