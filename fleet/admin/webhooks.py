from django.contrib import admin

from fleet import webhooks
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter
from fleet.admin.display import badge
from fleet.admin.filters import DeliveryStateFilter
from fleet.models import Role, WebhookDelivery

badge_status = {"delivered": "completed", "pending": "pending", "failed": "failed"}


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ScopedAdmin):
    view_role = Role.MANAGER
    list_display = [
        "created_at",
        "sequence",
        "event",
        "workspace",
        "status_badge",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
    ]
    list_filter = [DeliveryStateFilter, "status", "event", ("workspace", ScopedRelatedFilter)]
    search_fields = ["=uid", "event"]
    list_select_related = ["workspace"]
    readonly_fields = [
        "uid",
        "workspace",
        "sequence",
        "event",
        "payload",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "created_at",
        "delivered_at",
        "lease_reclaims",
    ]
    actions = ["retry", "stop_retrying"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(badge_status[obj.status], obj.get_status_display())

    @admin.action(description="Deliver selected events again now", permissions=["own"])
    def retry(self, request, queryset):
        retried = 0
        for delivery in self.scoped(request, queryset, Role.OWNER).exclude(status="delivered"):
            webhooks.retry_now(delivery)
            retried += 1
        self.message_user(request, f"{retried} delivery(ies) queued again.")

    @admin.action(
        description="Stop retrying selected events (later events of the workspace go out)",
        permissions=["own"],
    )
    def stop_retrying(self, request, queryset):
        stopped = sum(
            webhooks.stop_retrying(delivery, actor=request.user)
            for delivery in self.scoped(request, queryset, Role.OWNER).filter(status="pending")
        )
        self.message_user(request, f"{stopped} delivery(ies) given up.")
