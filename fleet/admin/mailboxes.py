from django.contrib import admin
from django.template.loader import render_to_string

from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter
from fleet.admin.display import badge, error_code
from fleet.admin.filters import ConnectionChangeFilter, DayFilter
from fleet.models import Mailbox, MailboxEvent, Role

HISTORY_ROWS = 50


class ErrorCodeFilter(admin.SimpleListFilter):
    """Error codes that actually occur among the user's mailboxes, most frequent first."""

    title = "error code"
    parameter_name = "error_code"

    def lookups(self, request, model_admin):
        from django.db.models import Count

        codes = (
            model_admin.get_queryset(request)
            .exclude(error_code="")
            .values("error_code")
            .annotate(n=Count("id"))
            .order_by("-n")
        )
        return [(row["error_code"], f"{row['error_code']} ({row['n']})") for row in codes]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(error_code=self.value())
        return queryset


@admin.register(Mailbox)
class MailboxAdmin(ScopedAdmin):
    list_display = [
        "email",
        "workspace",
        "status_badge",
        "error",
        "auth_method",
        "warmup",
        "last_checked_at",
    ]
    list_filter = [
        "status",
        ErrorCodeFilter,
        "auth_method",
        "provider",
        "warmup_status",
        ("workspace", ScopedRelatedFilter),
        ("tags", ScopedRelatedFilter),
    ]
    # `domain` is exact ("=") so it hits its index; addresses match anywhere (trigram on PostgreSQL).
    search_fields = ["email", "=domain", "display_name"]
    list_select_related = ["workspace"]
    list_per_page = 100
    show_full_result_count = False
    autocomplete_fields = ["tags"]
    readonly_fields = [
        "uid",
        "domain",
        "status",
        "error_code",
        "error_message",
        "graph_user_id",
        "token_expires_at",
        "spf_correct",
        "dkim_correct",
        "last_checked_at",
        "created_at",
        "refresh_token_is_set",
        "history",
    ]
    fieldsets = [
        (
            None,
            {"fields": ["workspace", "email", "display_name", "provider", "auth_method", "tags"]},
        ),
        (
            "Connection",
            {"fields": ["uid", "status", "error_code", "error_message", "last_checked_at"]},
        ),
        (
            "Servers",
            {
                "fields": [
                    ("smtp_host", "smtp_port", "smtp_security"),
                    ("imap_host", "imap_port", "imap_security"),
                ]
            },
        ),
        (
            "Secrets (write-only)",
            {"fields": ["password", "totp_secret", "refresh_token_is_set", "token_expires_at"]},
        ),
        (
            "Warmup and deliverability",
            {
                "fields": [
                    "warmup_status",
                    "warmup_daily_volume",
                    "warmup_response_rate",
                    "spf_correct",
                    "dkim_correct",
                    "graph_user_id",
                ]
            },
        ),
        ("History", {"fields": ["history"]}),
    ]
    actions = ["disable", "enable"]

    def get_readonly_fields(self, request, obj=None):
        fields = list(self.readonly_fields)
        if not self.has_manage_permission(request, obj):
            # Warmup is a manager's decision.
            fields += ["warmup_status", "warmup_daily_volume", "warmup_response_rate"]
        if obj is not None:
            fields += ["workspace"]
        return fields

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="error", ordering="error_code")
    def error(self, obj):
        return error_code(obj.error_code)

    @admin.display(description="warmup", ordering="warmup_status")
    def warmup(self, obj):
        return badge(obj.warmup_status, obj.get_warmup_status_display())

    @admin.display(description="status history")
    def history(self, obj):
        if obj.pk is None:
            return "—"
        events = obj.events.select_related("actor")[:HISTORY_ROWS]
        return render_to_string("fleet/mailbox_history.html", {"events": events})

    @admin.action(description="Disable selected mailboxes", permissions=["manage"])
    def disable(self, request, queryset):
        changed = 0
        for mailbox in self.scoped(request, queryset, Role.MANAGER).exclude(
            status=Mailbox.Status.DISABLED
        ):
            mailbox.set_status(Mailbox.Status.DISABLED, actor=request.user)
            changed += 1
        self.message_user(request, f"{changed} mailbox(es) disabled.")

    @admin.action(
        description="Re-enable selected mailboxes (back to pending)", permissions=["manage"]
    )
    def enable(self, request, queryset):
        changed = 0
        for mailbox in self.scoped(request, queryset, Role.MANAGER).filter(
            status=Mailbox.Status.DISABLED
        ):
            mailbox.set_status(Mailbox.Status.PENDING, actor=request.user)
            changed += 1
        self.message_user(request, f"{changed} mailbox(es) re-enabled; they are pending again.")


@admin.register(MailboxEvent)
class MailboxEventAdmin(ScopedAdmin):
    list_display = ["created_at", "email", "workspace", "kind", "transition", "error", "actor"]
    list_filter = [
        ConnectionChangeFilter,
        DayFilter,
        "kind",
        "to_status",
        ("workspace", ScopedRelatedFilter),
    ]
    search_fields = ["email", "error_code"]
    list_select_related = ["workspace", "actor"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the audit trail is not edited

    @admin.display(description="change")
    def transition(self, obj):
        if obj.kind != MailboxEvent.Kind.STATUS:
            return "—"
        return f"{obj.from_status} → {obj.to_status}"

    @admin.display(description="error", ordering="error_code")
    def error(self, obj):
        return error_code(obj.error_code)
