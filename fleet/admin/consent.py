from django.contrib import admin

from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter
from fleet.admin.display import badge, error_code
from fleet.admin.filters import ConsentStateFilter
from fleet.models import ConsentRequest


@admin.register(ConsentRequest)
class ConsentRequestAdmin(ScopedAdmin):
    list_display = [
        "uid",
        "kind",
        "target",
        "workspace",
        "status_badge",
        "error",
        "expires_at",
        "created_at",
    ]
    list_filter = [ConsentStateFilter, "status", "kind", ("workspace", ScopedRelatedFilter)]
    search_fields = ["mailbox__email", "username", "domain", "=uid"]
    list_select_related = ["workspace", "mailbox"]
    autocomplete_fields = ["mailbox"]
    readonly_fields = [
        "uid",
        "status",
        "error_code",
        "error_message",
        "created_by",
        "created_at",
        "completed_at",
    ]
    fields = [
        "workspace",
        "kind",
        "mailbox",
        "username",
        "domain",
        "consent_url",
        "request_data",
        "expires_at",
        *readonly_fields,
    ]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="mailbox")
    def target(self, obj):
        return obj.mailbox.email if obj.mailbox_id else f"{obj.username}@{obj.domain}"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="error", ordering="error_code")
    def error(self, obj):
        return error_code(obj.error_code)
