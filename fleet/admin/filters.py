"""List filters behind the dashboard's figures: each applies the same condition the figure
counted with (the Q objects live on the models), so a click shows exactly those rows."""

from datetime import date

from django.contrib import admin

from fleet.models import ConsentRequest, Credential, MailboxEvent


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


class DayFilter(admin.SimpleListFilter):
    """One calendar day (in TIME_ZONE), as the dashboard's trend counts them."""

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
        return queryset.filter(created_at__date=day)
