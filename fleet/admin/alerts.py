"""Alert digests in the admin (managers): what each digest carried, to whom, and whether it went;
read-only, as the e-mails themselves are."""

from django.contrib import admin
from django.db.models import Count

from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter
from fleet.admin.display import badge, error_code
from fleet.models import AlertDigest, AlertItem, Role

badge_status = {
    "sent": "completed",
    "pending": "pending",
    "no_recipients": "disabled",
    "failed": "failed",
}


class AlertItemInline(admin.TabularInline):
    model = AlertItem
    fields = ["created_at", "email", "kind", "from_status", "to_status", "code", "message"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_view_permission(self, request, obj=None):
        return self.admin_site._registry[AlertDigest].has_view_permission(request, obj)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="error code")
    def code(self, obj):
        return error_code(obj.error_code)  # with its hint, as everywhere in the admin


@admin.register(AlertDigest)
class AlertDigestAdmin(ScopedAdmin):
    view_role = Role.MANAGER
    list_display = [
        "created_at",
        "workspace",
        "status_badge",
        "item_count",
        "recipient_list",
        "attempts",
        "last_error",
        "sent_at",
    ]
    list_filter = ["status", ("workspace", ScopedRelatedFilter)]
    list_select_related = ["workspace"]
    fields = [
        "workspace",
        "status",
        "recipient_list",
        "created_at",
        "sent_at",
        "attempts",
        "next_attempt_at",
        "last_error",
        "lease_reclaims",
    ]
    readonly_fields = fields
    inlines = [AlertItemInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(item_total=Count("items"))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(badge_status[obj.status], obj.get_status_display())

    @admin.display(description="mailboxes", ordering="item_total")
    def item_count(self, obj):
        return obj.item_total

    @admin.display(description="sent to")
    def recipient_list(self, obj):
        return ", ".join(r["email"] for r in obj.recipients) or "—"
