from django.contrib import admin

from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter
from fleet.admin.display import badge, error_code
from fleet.admin.filters import SecretExpiryFilter
from fleet.models import Credential, Role
from fleet.secrets import secret_status


@admin.register(Credential)
class CredentialAdmin(ScopedAdmin):
    add_role = Role.MANAGER
    change_role = Role.MANAGER
    delete_role = Role.MANAGER
    list_display = [
        "name",
        "workspace",
        "kind",
        "tenant_id",
        "client_id",
        "secret",
        "secret_expires_at",
        "status_badge",
        "last_error_code",
        "last_verified_at",
    ]
    list_filter = ["kind", "status", SecretExpiryFilter, ("workspace", ScopedRelatedFilter)]
    search_fields = ["name", "client_id", "tenant_id"]
    list_select_related = ["workspace"]
    readonly_fields = ["status", "last_verified_at", "last_error", "last_error_message"]
    fields = [
        "workspace",
        "name",
        "kind",
        "tenant_id",
        "client_id",
        "client_secret",
        "secret_expires_at",
        "redirect_uri",
        *readonly_fields,
    ]

    @admin.display(description="secret")
    def secret(self, obj):
        return secret_status(obj.client_secret)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="last error", ordering="last_error")
    def last_error_code(self, obj):
        return error_code(obj.last_error)
