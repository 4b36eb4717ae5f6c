"""The audit log in the admin: read-only, scoped to the user's workspaces like every list, and
cheap at ten million entries — read from the (workspace, created_at) index in order, never
counted exactly ("more than N" instead), filters whose choices need no scan of the log."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html

from fleet import audit
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter
from fleet.models import AuditEntry, Membership


class CappedPaginator(Paginator):
    """Counts at most `cap` + 1 rows (one LIMIT query on the index) instead of COUNT(*) of
    millions; past the cap the list says "more than N" and offers the first pages."""

    cap = 1000

    @cached_property
    def count(self) -> int:
        found = self.object_list.values("pk")[: self.cap + 1].count()
        self.capped = found > self.cap
        return min(found, self.cap)

    capped = False


class ActionFilter(admin.SimpleListFilter):
    """What was done (created, disabled, revoked …), with the object type filter beside it;
    `?action=mailbox.disabled` names one action exactly."""

    title = "action"
    parameter_name = "action"

    def lookups(self, request, model_admin):
        verbs = sorted({action.split(".", 1)[1] for action in audit.ACTIONS})
        shown = [(verb, verb.replace("_", " ")) for verb in verbs]
        if self.value() in audit.ACTIONS:
            shown.insert(0, (self.value(), self.value()))
        return shown

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if "." in value:
            return queryset.filter(action=value)
        return queryset.filter(action__in=[a for a in audit.ACTIONS if a.endswith("." + value)])


class ObjectTypeFilter(admin.SimpleListFilter):
    title = "object type"
    parameter_name = "object_type"

    def lookups(self, request, model_admin):
        return [(name, name) for name in audit.OBJECT_TYPES]

    def queryset(self, request, queryset):
        return queryset.filter(object_type=self.value()) if self.value() else queryset


class ActorFilter(admin.SimpleListFilter):
    """The members of the user's workspaces (a short list), and the system."""

    title = "actor"
    parameter_name = "actor"

    def lookups(self, request, model_admin):
        users = get_user_model().objects.filter(is_active=True)
        if not request.user.is_superuser:
            users = users.filter(
                fleet_memberships__workspace__in=Membership.objects.restrict(
                    request.user
                ).values("workspace")
            ).distinct()
        return [(AuditEntry.SYSTEM, "system")] + [
            (str(user.pk), user.get_username()) for user in users.order_by("username")[:200]
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if value == AuditEntry.SYSTEM:
            return queryset.filter(actor=None)
        return queryset.filter(actor_id=int(value)) if value.isdigit() else queryset.none()


class WhenFilter(admin.SimpleListFilter):
    """A range on created_at (the index's second column), never a date() of every row."""

    title = "date"
    parameter_name = "when"
    RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}

    def lookups(self, request, model_admin):
        shown = [("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days")]
        value = self.value()
        if value and value not in self.RANGES:
            shown.append((value, value))  # a day, `?when=2026-12-01`
        return shown

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if value in self.RANGES:
            return queryset.filter(created_at__gte=timezone.now() - self.RANGES[value])
        try:
            day = datetime.fromisoformat(value).date()
        except ValueError:
            return queryset.none()
        start = timezone.make_aware(datetime.combine(day, time.min))
        return queryset.filter(created_at__gte=start, created_at__lt=start + timedelta(days=1))


@admin.register(AuditEntry)
class AuditEntryAdmin(ScopedAdmin):
    audited = False  # reading the log writes nothing to it
    list_display = [
        "created_at",
        "workspace",
        "actor_shown",
        "key",
        "via",
        "action",
        "object_link",
        "what_changed",
        "client_address",
    ]
    list_filter = [
        ("workspace", ScopedRelatedFilter),
        ActorFilter,
        ActionFilter,
        ObjectTypeFilter,
        "via",
        WhenFilter,
    ]
    list_select_related = ["workspace"]
    list_per_page = 50
    paginator = CappedPaginator
    show_full_result_count = False
    sortable_by = ["created_at"]  # the index's order; sorting ten million rows by name is not
    search_fields = ["object_id", "request_id"]  # exact, see get_search_results
    search_help_text = "An object's id (a mailbox's uid) or a request id, exactly."
    readonly_fields = [
        "created_at",
        "workspace",
        "actor_name",
        "api_key_prefix",
        "via",
        "client_address",
        "request_id",
        "object_type",
        "object_id",
        "object_link",
        "object_repr",
        "action",
        "changes_shown",
    ]
    fields = readonly_fields

    def get_search_results(self, request, queryset, search_term):
        """The exact id (Django's "=" search is an UPPER() match no index serves): a mailbox's
        uid or a request id, through their indexes."""
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(object_id=term) | Q(request_id=term)), False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the log is not edited; AUDIT_RETENTION_DAYS ends an entry

    @admin.display(description="actor")
    def actor_shown(self, obj):
        return obj.actor_name

    @admin.display(description="key")
    def key(self, obj):
        return f"{obj.api_key_prefix}…" if obj.api_key_prefix else "—"

    @admin.display(description="object")
    def object_link(self, obj):
        name = obj.object_repr or obj.object_id
        if obj.object_pk is None:
            return f"{obj.object_type} {name}"
        try:
            url = reverse(f"admin:fleet_{obj.object_type}_change", args=[obj.object_pk])
        except NoReverseMatch:
            return f"{obj.object_type} {name}"
        return format_html('<a href="{}">{} {}</a>', url, obj.object_type, name)

    @admin.display(description="changes")
    def what_changed(self, obj):
        return audit.summary(obj.changes) or "—"

    @admin.display(description="changes")
    def changes_shown(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.changes, indent=2, sort_keys=True))
