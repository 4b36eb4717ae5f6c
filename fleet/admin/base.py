"""What every Fleet ModelAdmin shares: tenant scoping and role checks.

Every queryset, foreign-key choice, list filter and action goes through
`Model.objects.restrict(user, role)`; object pages of other workspaces answer 404.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html

from fleet import access, audit
from fleet.models import Role, Workspace
from fleet.secrets import EncryptedTextField, secret_status

SECRET_SHOWN_AS = "_is_set"


def secret_display(field: str):
    """A read-only admin field saying whether the encrypted `field` is stored ("set" / "not
    set"), never its value. Declare it on the ModelAdmin as `<field>_is_set =
    secret_display("<field>")`; view-only pages show it in the field's place."""

    @admin.display(description=field.replace("_", " "))
    def is_set(model_admin, obj) -> str:
        return secret_status(getattr(obj, field))

    return is_set


def roles_of(request: HttpRequest) -> dict[int, str]:
    """The signed-in user's role per workspace id (fleet.access, read once per request)."""
    return access.roles_of(request.user)


def has_role(request: HttpRequest, role: str, workspace_id: int | None = None) -> bool:
    """Whether the signed-in staff user holds at least `role` in that workspace (in any, when
    None): fleet.access's rule, for the admin's `request`."""
    return request.user.is_staff and access.has_role(request.user, role, workspace_id)


def require_role(request: HttpRequest, role: str, doing: str, workspace_id: int | None = None):
    """PermissionDenied naming the role `doing` needs; the 403 page shows the sentence."""
    if not has_role(request, role, workspace_id):
        where = "this workspace" if workspace_id is not None else "a workspace"
        raise PermissionDenied(f"{doing} needs the {role} role in {where}.")


def abilities(request: HttpRequest) -> dict[str, bool]:
    """What the user may do in at least one workspace: templates show a button only then."""
    return {
        "operate": has_role(request, Role.OPERATOR),
        "manage": has_role(request, Role.MANAGER),
        "own": has_role(request, Role.OWNER),
    }


def workspace_id_of(obj) -> int | None:
    return obj.pk if isinstance(obj, Workspace) else obj.workspace_id


class ScopedRelatedFilter(admin.RelatedFieldListFilter):
    """A related-object filter that offers only the user's own workspaces' objects."""

    def field_choices(self, field, request, model_admin):
        related = field.related_model.objects.restrict(request.user)
        return [(obj.pk, str(obj)) for obj in related.order_by(*related.model._meta.ordering)]


# Date parts a list filter may name (`created_at__year=2024`, `date_hierarchy` links).
DATE_PARTS = {"year", "iso_year", "quarter", "month", "week", "week_day", "iso_week_day", "day"}
DATE_PART_RANGE = {"year": (1, 9999), "iso_year": (1, 9999)}


class ValidatedChangeList(ChangeList):
    """Refuses date-part lookups Python's datetime cannot represent, as Django refuses other bad
    lookups (the list reloads with `?e=1`). Django accepts `?created_at__year=99999` on any list
    (a local field's lookup) and the ValueError ("year 99999 is out of range") only comes when
    the SQL is compiled, past the changelist's own error handling: a 500."""

    def get_queryset(self, request, exclude_parameters=None):
        for key, values in request.GET.lists():
            parts = key.split("__")
            part = next((p for p in parts[1:] if p in DATE_PARTS), None)
            if part is None:
                continue
            low, high = DATE_PART_RANGE.get(part, (-(10**6), 10**6))
            for value in values:
                try:
                    number = int(value)
                except ValueError:
                    raise IncorrectLookupParameters(f"{key}: not a number") from None
                if not low <= number <= high:
                    raise IncorrectLookupParameters(f"{key}: out of range")
        return super().get_queryset(request, exclude_parameters)

    def get_results(self, request):
        super().get_results(request)
        # Set by CappedPaginator when the list has more rows than it counts.
        self.count_capped = getattr(self.paginator, "capped", False)


class CappedPaginator(Paginator):
    """Counts a list's rows only up to `cap`: `SELECT COUNT(*) FROM (… LIMIT cap + 1)` reads at
    most cap + 1 index entries, where a plain COUNT(*) of a million-mailbox fleet reads them all
    on every page. Past the cap, `capped` is set, the list says "more than <cap>" and offers the
    pages up to it (a filter or a search narrows it further)."""

    def __init__(self, object_list, per_page, *args, cap: int, **kwargs):
        super().__init__(object_list, per_page, *args, **kwargs)
        self.cap = cap
        self.capped = False

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if hasattr(rows, "order_by"):
            # Without ORDER BY the database counts from whichever index fits the filter (an
            # index-only scan of one workspace's entries) instead of walking the list's order.
            rows = rows.order_by()
        counted = rows[: self.cap + 1].count() if hasattr(rows, "count") else len(rows)
        self.capped = counted > self.cap
        return min(counted, self.cap)


class CountCappedMixin:
    """`count_cap = N` on a ModelAdmin: its list counts at most N rows (CappedPaginator); the
    list's templates (admin/fleet/pagination.html, actions.html) say "more than N"."""

    count_cap: int | None = None

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        if self.count_cap is None:
            return super().get_paginator(
                request, queryset, per_page, orphans, allow_empty_first_page
            )
        return CappedPaginator(
            queryset, per_page, orphans, allow_empty_first_page, cap=self.count_cap
        )


class ValidatedChangeListMixin:
    """For every ModelAdmin of the site (Fleet's, django-tasks-db's, auth's)."""

    def get_changelist(self, request, **kwargs):
        return ValidatedChangeList


def form_before(form) -> dict:
    """The model fields a form changed, with their values before (the form's initial data)."""
    model = form._meta.model
    names = {f.name: f.attname for f in model._meta.concrete_fields}
    return {names[n]: form.initial.get(n) for n in form.changed_data if n in names}


def record_form(request: HttpRequest, obj, before: dict, change: bool) -> None:
    """The audit entry of an admin form's save: the changed fields before → after, or for a new
    object every field it was given (secrets only as "changed")."""
    name = obj._meta.model_name
    if change:
        changes = audit.diff(obj, before)
        if changes:
            audit.record(f"{name}.updated", obj, actor=request.user, via="admin", changes=changes)
        return
    fields = [
        f.attname for f in obj._meta.concrete_fields if not f.primary_key and f.editable
    ]
    audit.record(
        f"{name}.created", obj, actor=request.user, via="admin",
        changes=audit.set_fields(obj, fields),
    )


class ScopedAdmin(CountCappedMixin, ValidatedChangeListMixin, admin.ModelAdmin):
    """Roles needed to see, add, change and delete; subclasses raise them where they must."""

    view_role = Role.VIEWER
    add_role = Role.OPERATOR
    change_role = Role.OPERATOR
    delete_role = Role.MANAGER

    def get_queryset(self, request):
        return super().get_queryset(request).restrict(request.user, self.view_role)

    def action_checkbox(self, obj):
        # Django's renders a CheckboxInput through the template engine for every row: a third
        # of a 100-row list's time. The same markup, formatted directly.
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" '
            'aria-label="Select this object for an action - {}">',
            helpers.ACTION_CHECKBOX_NAME,
            str(obj.pk),
            obj,
        )

    def changelist_view(self, request, extra_context=None):
        # `fleet_can.operate` etc.: the list's buttons are shown only to those they work for.
        return super().changelist_view(
            request, {"fleet_can": abilities(request), **(extra_context or {})}
        )

    # Secrets: an editor gets the write-only widget; a view-only user sees `<name>_is_set`
    # (declared with secret_display) in its place, and a secret without one is left out.
    def _secret_fields(self) -> list[str]:
        return [
            f.name for f in self.model._meta.concrete_fields if isinstance(f, EncryptedTextField)
        ]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        secrets = set(self._secret_fields())

        def swap(names):
            shown = []
            for name in names:
                if isinstance(name, (list, tuple)):
                    shown.append(type(name)(swap(name)))
                elif name not in secrets:
                    shown.append(name)
                elif hasattr(self, f"{name}{SECRET_SHOWN_AS}"):
                    shown.append(f"{name}{SECRET_SHOWN_AS}")
            return shown

        return [(title, {**opts, "fields": swap(opts["fields"])}) for title, opts in fieldsets]

    def _role_allows(self, request, role, obj=None) -> bool:
        return has_role(request, role, workspace_id_of(obj) if obj is not None else None)

    def has_module_permission(self, request):
        return self._role_allows(request, self.view_role)

    def has_view_permission(self, request, obj=None):
        return self._role_allows(request, self.view_role, obj)

    def has_add_permission(self, request):
        return self._role_allows(request, self.add_role)

    def has_change_permission(self, request, obj=None):
        return self._role_allows(request, self.change_role, obj)

    def has_delete_permission(self, request, obj=None):
        return self._role_allows(request, self.delete_role, obj)

    # Action permissions: `allowed_permissions = ("operate",)` etc. on an action.
    def has_operate_permission(self, request, obj=None):
        return self._role_allows(request, Role.OPERATOR, obj)

    def has_manage_permission(self, request, obj=None):
        return self._role_allows(request, Role.MANAGER, obj)

    def has_own_permission(self, request, obj=None):
        return self._role_allows(request, Role.OWNER, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        related = db_field.related_model
        if hasattr(related.objects, "restrict"):
            # New objects may only be put in workspaces where the user may add them.
            kwargs["queryset"] = related.objects.restrict(request.user, self.add_role)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        related = db_field.related_model
        if hasattr(related.objects, "restrict"):
            kwargs["queryset"] = related.objects.restrict(request.user, self.add_role)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    # Form saves and deletes of models no service owns (workspaces and their webhook settings,
    # memberships, credentials, tags) are audited here; False where a service records them.
    audited = True

    def save_model(self, request, obj, form, change):
        # The form's choices are scoped already; this guards a forged POST as well.
        if not self._role_allows(request, self.change_role if change else self.add_role, obj):
            raise Http404
        before = form_before(form)
        super().save_model(request, obj, form, change)
        if self.audited:
            record_form(request, obj, before, change)

    def delete_model(self, request, obj):
        if self.audited:
            audit.record(f"{obj._meta.model_name}.deleted", obj, actor=request.user, via="admin")
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        if self.audited:
            audit.record_many(
                f"{queryset.model._meta.model_name}.deleted", queryset,
                actor=request.user, via="admin",
            )
        super().delete_queryset(request, queryset)

    def save_formset(self, request, form, formset, change):
        """Inline rows (a workspace's memberships): each added, changed or deleted row is an
        entry."""
        if not self.audited:
            return super().save_formset(request, form, formset, change)
        for gone in formset.deleted_forms:
            if gone.instance.pk is not None:
                audit.record(
                    f"{gone.instance._meta.model_name}.deleted", gone.instance,
                    actor=request.user, via="admin",
                )
        kept = [
            (f, form_before(f), f.instance.pk is not None)
            for f in formset.forms
            if f.has_changed() and f not in formset.deleted_forms
        ]
        super().save_formset(request, form, formset, change)
        for f, before, existed in kept:
            record_form(request, f.instance, before, existed)

    def delete_view(self, request, object_id, extra_context=None):
        # Django checks the delete permission before it looks the object up; look it up first,
        # so that another workspace's object is a 404 here too.
        if self.get_object(request, object_id) is None:
            raise Http404("No such object.")
        return super().delete_view(request, object_id, extra_context)

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        # Django redirects to the index with "doesn't exist"; another workspace's object is a
        # plain 404, so that ids cannot be probed.
        raise Http404(f"No {opts.verbose_name} with this id.")

    def scoped(self, request, queryset, role: str):
        """The part of an action's selection the user may act on with `role`."""
        return queryset.restrict(request.user, role)
