"""List filters behind the dashboard's figures: each applies the same condition the figure
counted with (the Q objects live on the models), so a click shows exactly those rows."""

from datetime import UTC, date, datetime, time, timedelta

from django.contrib import admin
from django.db.models import Q
from django.utils import timezone

from fleet.models import ConsentRequest, Credential, MailboxEvent, WebhookDelivery
from fleet.uptime import day_start, window_start


class ConsentStateFilter(admin.SimpleListFilter):
    title = "waiting"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("open", "Waiting (queued, pending, processing)"),
            ("expiring", f"Expiring within {ConsentRequest.EXPIRING_HOURS} h"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(ConsentRequest.open_q())
        if self.value() == "expiring":
            return queryset.filter(ConsentRequest.expiring_q())
        return queryset


class DeliveryStateFilter(admin.SimpleListFilter):
    """Where a pending webhook delivery stands (fleet/webhooks.py sends a workspace's deliveries
    one at a time, in sequence order)."""

    title = "delivery state"
    parameter_name = "delivery"
    # Due this long without being picked up: the sweeper (every JOB_REAPER_SECONDS) missed it.
    STRANDED_AFTER = timedelta(minutes=5)

    def lookups(self, request, model_admin):
        return [
            ("waiting", "Waiting (not tried yet, or behind an earlier event)"),
            ("failing", "Failing (retried at its next attempt; later events wait)"),
            ("sending", "Being sent"),
            ("stranded", "Stranded (its sender died, or due for 5 minutes and not picked up)"),
        ]

    def queryset(self, request, queryset):
        from fleet.webhooks import due_heads

        now = timezone.now()
        pending = queryset.filter(status=WebhookDelivery.Status.PENDING)
        leased = ~Q(lease_owner="")
        if self.value() == "waiting":
            return pending.filter(~leased, last_error="")
        if self.value() == "failing":
            return pending.filter(~leased).exclude(last_error="")
        if self.value() == "sending":
            return pending.filter(leased, lease_expires_at__gte=now)
        if self.value() == "stranded":
            late = now - self.STRANDED_AFTER
            overdue = due_heads(now).filter(
                Q(next_attempt_at__lt=late) | Q(next_attempt_at__isnull=True, created_at__lt=late)
            )
            return pending.filter(
                Q(leased, lease_expires_at__lt=now) | Q(pk__in=overdue.values("pk"))
            )
        return queryset


class SecretExpiryFilter(admin.SimpleListFilter):
    title = "secret expiry"
    parameter_name = "secret_expiry"

    def lookups(self, request, model_admin):
        return [
            ("soon", f"Expires within {Credential.SECRET_EXPIRY_WARNING_DAYS} days (or expired)")
        ]

    def queryset(self, request, queryset):
        if self.value() == "soon":
            return queryset.filter(Credential.secret_expiring_q())
        return queryset


class ConnectionChangeFilter(admin.SimpleListFilter):
    title = "connection"
    parameter_name = "change"

    def lookups(self, request, model_admin):
        return [("made", "Made (became active)"), ("lost", "Lost (active → error or reauth)")]

    def queryset(self, request, queryset):
        if self.value() == "made":
            return queryset.filter(MailboxEvent.MADE)
        if self.value() == "lost":
            return queryset.filter(MailboxEvent.LOST)
        return queryset


class WithinFilter(admin.SimpleListFilter):
    """The last 24 hours or 30 days, as the dashboard's uptime figures count them (fleet/uptime.py:
    whole hours, the current one included)."""

    title = "within"
    parameter_name = "within"

    def lookups(self, request, model_admin):
        return [("24h", "Last 24 hours"), ("30d", "Last 30 days")]

    def queryset(self, request, queryset):
        if self.value() == "24h":
            return queryset.filter(created_at__gte=day_start())
        if self.value() == "30d":
            return queryset.filter(created_at__gte=window_start())
        return queryset


class DayFilter(admin.SimpleListFilter):
    """One UTC calendar day, as the dashboard's trend counts them (fleet.tallies)."""

    title = "day"
    parameter_name = "day"

    def lookups(self, request, model_admin):
        value = self.value()
        return [(value, value)] if value else []

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            day = date.fromisoformat(self.value())
        except ValueError:
            return queryset.none()
        start = datetime.combine(day, time.min, tzinfo=UTC)
        # A range, not created_at__date: the created_at index answers it.
        return queryset.filter(created_at__gte=start, created_at__lt=start + timedelta(days=1))
