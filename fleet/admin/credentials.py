from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from fleet import consent, errors
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter
from fleet.admin.connect import links_page
from fleet.admin.display import badge, error_code
from fleet.admin.filters import SecretExpiryFilter
from fleet.credentials import request_verification
from fleet.errors import FleetError
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
        "secret_expiry",
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
        "next_step",
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

    # Microsoft answers 65001 (no admin consent) or 700016 (app not in the tenant) until a tenant
    # administrator consents: the credential offers the admin-consent request right there.
    CONSENT_FIXES = {errors.ADMIN_APPROVAL_REQUIRED.code, errors.APP_NOT_FOUND_IN_TENANT.code}

    def get_urls(self):
        return [
            path(
                "<path:object_id>/admin-consent/",
                self.admin_site.admin_view(self.admin_consent_view),
                name="fleet_credential_admin_consent",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="secret")
    def secret(self, obj):
        return secret_status(obj.client_secret)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="secret expires", ordering="secret_expires_at")
    def secret_expiry(self, obj):
        if obj.secret_expires_at is None:
            return "—"
        if not obj.secret_expires_soon:
            return obj.secret_expires_at.isoformat()
        days = (obj.secret_expires_at - timezone.localdate()).days
        label = f"expired {-days} d ago" if days < 0 else f"expires in {days} d"
        return format_html(
            "{} {}",
            obj.secret_expires_at.isoformat(),
            badge("expired" if days >= 0 else "failed", label),
        )

    @admin.display(description="last error", ordering="last_error")
    def last_error_code(self, obj):
        if obj.last_error in self.CONSENT_FIXES:
            return format_html(
                '{} <a href="{}">request admin consent</a>',
                error_code(obj.last_error),
                reverse("admin:fleet_credential_admin_consent", args=[obj.pk]),
            )
        return error_code(obj.last_error)

    @admin.display(description="next step")
    def next_step(self, obj):
        entry = errors.get(obj.last_error) if obj.pk else None
        if entry is None:
            return "—"
        if obj.last_error in self.CONSENT_FIXES:
            return format_html(
                '{} <a class="button" href="{}">Request tenant admin consent</a>',
                entry.hint,
                reverse("admin:fleet_credential_admin_consent", args=[obj.pk]),
            )
        return entry.hint

    def admin_consent_view(self, request, object_id):
        """Confirm, then create (or reuse) the credential's admin-consent request."""
        credential = self.get_object(request, object_id)
        if credential is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_manage_permission(request, credential):
            raise PermissionDenied
        if request.method == "POST":
            try:
                created = consent.admin_request_for(credential)
            except FleetError as failure:
                self.message_user(request, f"{failure.code} — {failure.message}", messages.ERROR)
            else:
                return links_page(self, request, [created], "Admin-consent link")
        context = {
            **self.admin_site.each_context(request),
            "title": "Request tenant admin consent",
            "opts": self.opts,
            "credential": credential,
        }
        return TemplateResponse(request, "admin/fleet/credential_admin_consent.html", context)

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
            request_verification(credential)
        self.message_user(request, f"{credentials.count()} credential(s) queued for verification.")
