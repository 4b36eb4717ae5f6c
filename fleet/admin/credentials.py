from django.contrib import admin, messages

from fleet import consent
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter
from fleet.admin.connect import links_page
from fleet.admin.display import badge, error_code
from fleet.admin.filters import SecretExpiryFilter
from fleet.errors import FleetError
from fleet.models import Credential, Role
from fleet.secrets import secret_status
from fleet.tasks import enqueue_on_commit, verify_credential


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
    readonly_fields = [
        "status",
        "admin_consented_at",
        "last_verified_at",
        "last_error",
        "last_error_message",
    ]
    actions = ["request_admin_consent", "verify_now"]
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

    @admin.action(description="Request tenant admin consent (link)", permissions=["manage"])
    def request_admin_consent(self, request, queryset):
        created = []
        for credential in self.scoped(request, queryset, Role.MANAGER).select_related("workspace"):
            try:
                created.append(consent.admin_request_for(credential))
            except FleetError as failure:
                self.message_user(request, f"{credential}: {failure.message}", messages.ERROR)
        if created:
            return links_page(self, request, created, "Admin-consent links")
        return None

    @admin.action(description="Verify with Microsoft (client credentials)", permissions=["manage"])
    def verify_now(self, request, queryset):
        credentials = self.scoped(request, queryset, Role.MANAGER).filter(
            kind=Credential.Kind.GRAPH_APP_ONLY
        )
        for credential in credentials:
            enqueue_on_commit(verify_credential, credential.pk)
        self.message_user(request, f"{credentials.count()} credential(s) queued for verification.")
