from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from fleet import consent, credentials, errors
from fleet.admin.base import (
    ScopedAdmin,
    ScopedRelatedFilter,
    require_role,
    roles_of,
    secret_display,
)
from fleet.admin.connect import links_page
from fleet.admin.display import (
    badge,
    copyable,
    error_code,
    error_explained,
    sentence,
    short_time,
)
from fleet.admin.filters import SecretExpiryFilter
from fleet.admin.object_actions import ObjectAction, ObjectActionsMixin
from fleet.credentials import request_verification
from fleet.errors import FleetError
from fleet.models import Credential, Role
from fleet.secrets import secret_status

# Microsoft answers 65001 (no admin consent) or 700016 (app not in the tenant) until a tenant
# administrator consents; a permission found missing by Verify needs it too.
CONSENT_FIXES = {errors.ADMIN_APPROVAL_REQUIRED.code, errors.APP_NOT_FOUND_IN_TENANT.code}


def needs_admin_consent(credential: Credential) -> bool:
    return credential.last_error in CONSENT_FIXES or credential.last_error == (
        errors.APP_PERMISSION_MISSING.code
    ) or any(held is False for held in (credential.permissions or {}).values())


@admin.register(Credential)
class CredentialAdmin(ObjectActionsMixin, ScopedAdmin):
    object_actions = (
        ObjectAction(
            "verify",
            "Verify",
            Role.MANAGER,
            "Verifying a credential",
            lambda c: c.kind == Credential.Kind.GRAPH_APP_ONLY,
            "Get a token from Microsoft and check the app's permissions now",
        ),
        ObjectAction(
            "admin_consent",
            "Request admin consent",
            Role.MANAGER,
            "Requesting tenant admin consent",
            needs_admin_consent,
            "A link for the tenant's administrator to consent for the whole organisation",
        ),
    )
    add_role = Role.MANAGER
    change_role = Role.MANAGER
    delete_role = Role.MANAGER
    list_display = [
        "name",
        "workspace",
        "kind_short",
        "tenant",
        "client",
        "secret",
        "secret_expiry",
        "status_badge",
        "last_error_code",
        "last_verified",
    ]
    list_filter = ["kind", "status", SecretExpiryFilter, ("workspace", ScopedRelatedFilter)]
    search_fields = ["name", "client_id", "tenant_id"]
    list_select_related = ["workspace"]
    readonly_fields = [
        "status",
        "admin_consented_at",
        "last_verified_at",
        "error_detail",
        "permissions_held",
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
    client_secret_is_set = secret_display("client_secret")  # view-only pages

    CONSENT_FIXES = CONSENT_FIXES

    def get_urls(self):
        return [
            path(
                "<path:object_id>/admin-consent/",
                self.admin_site.admin_view(self.admin_consent_view),
                name="fleet_credential_admin_consent",
            ),
            *super().get_urls(),
        ]

    # GUIDs are cut to their first characters (the whole one in the tooltip): at 1280 px they
    # pushed the status off-screen.
    @admin.display(description="tenant", ordering="tenant_id")
    def tenant(self, obj):
        return copyable(obj.tenant_id)

    @admin.display(description="client id", ordering="client_id")
    def client(self, obj):
        return copyable(obj.client_id)

    @admin.display(description="kind", ordering="kind")
    def kind_short(self, obj):
        # "Graph app-only (client credentials)" → "Graph app-only", the whole label on hover.
        label = obj.get_kind_display()
        return format_html('<span title="{}">{}</span>', label, label.split(" (")[0])

    @admin.display(description="verified", ordering="last_verified_at")
    def last_verified(self, obj):
        return short_time(obj.last_verified_at)

    @admin.display(description="secret")
    def secret(self, obj):
        return secret_status(obj.client_secret)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="expires", ordering="secret_expires_at")
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
        return error_code(obj.last_error)

    def get_list_display(self, request):
        # The "request admin consent" link is offered only where the user is a manager.
        managed = self._managed_workspaces(request)

        @admin.display(description="last error", ordering="last_error")
        def last_error_code(obj):
            if obj.last_error in self.CONSENT_FIXES and (managed is None or obj.workspace_id in managed):
                return format_html(
                    '{} <a href="{}">request admin consent</a>',
                    error_code(obj.last_error),
                    reverse("admin:fleet_credential_admin_consent", args=[obj.pk]),
                )
            return error_code(obj.last_error)

        return [last_error_code if f == "last_error_code" else f for f in self.list_display]

    def _managed_workspaces(self, request) -> set[int] | None:
        """Workspace ids where the user is at least a manager (None: all, a superuser)."""
        if request.user.is_superuser:
            return None
        return {ws for ws, role in roles_of(request).items() if role in Role.at_least(Role.MANAGER)}

    @admin.display(description="last error")
    def error_detail(self, obj):
        # Code, message, what to do; the admin-consent button is in the page's tools.
        return error_explained(obj.last_error, obj.last_error_message, obj.last_verified_at)

    @admin.display(description="application permissions")
    def permissions_held(self, obj):
        """What Verify found the app may do; beside a missing one, the admin-consent link."""
        if not obj.pk or obj.kind != Credential.Kind.GRAPH_APP_ONLY:
            return "—"
        if not obj.permissions:
            return "not checked yet: run Verify with Microsoft"
        consent_url = reverse("admin:fleet_credential_admin_consent", args=[obj.pk])
        rows = []
        for name in (*Credential.GRAPH_PERMISSIONS, *Credential.EXCHANGE_PERMISSIONS):
            held = obj.permissions.get(name)
            needed_for = (
                "bulk add" if name in Credential.GRAPH_PERMISSIONS else "app-only SMTP/IMAP, move"
            )
            if held is True:
                rows.append(
                    format_html(
                        "<li>{} {} <small>({})</small></li>",
                        badge("active", "held"),
                        name,
                        needed_for,
                    )
                )
            elif held is False:
                rows.append(
                    format_html(
                        "<li>{} {} <small>({})</small> <code>{}</code> "
                        '<a href="{}">request admin consent</a></li>',
                        badge("failed", "missing"),
                        name,
                        needed_for,
                        errors.APP_PERMISSION_MISSING.code,
                        consent_url,
                    )
                )
            else:
                rows.append(
                    format_html(
                        "<li>{} {} <small>({})</small></li>",
                        badge("pending", "unknown"),
                        name,
                        needed_for,
                    )
                )
        checked = obj.permissions.get("checked_with") or "—"
        return format_html(
            '<ul class="fleet-permissions">{}</ul><small>checked with {}</small>',
            mark_safe("".join(rows)),  # noqa: S308 (each row is format_html's output)
            checked,
        )

    def do_verify(self, request, credential):
        """Verify now, in the request: the manager reads the outcome on the page at once."""
        credential = credentials.verify(credential)
        if credential.status == Credential.Status.VALID:
            missing = [p for p, held in (credential.permissions or {}).items() if held is False]
            text = f"{credential.name} is valid."
            if missing:
                text += " Missing for app-only SMTP/IMAP: " + ", ".join(missing) + "."
            self.message_user(request, text, messages.WARNING if missing else messages.SUCCESS)
        else:
            entry = errors.get(credential.last_error)
            self.message_user(
                request,
                f"{credential.name} is invalid: {credential.last_error} — "
                + sentence(credential.last_error_message, entry.hint if entry else ""),
                messages.ERROR,
            )

    def do_admin_consent(self, request, credential):
        created = consent.admin_request_for(credential)
        return links_page(self, request, [created], "Admin-consent link", admin=True)

    def admin_consent_view(self, request, object_id):
        """Confirm, then create (or reuse) the credential's admin-consent request."""
        credential = self.get_object(request, object_id)
        if credential is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        require_role(
            request, Role.MANAGER, "Requesting tenant admin consent", credential.workspace_id
        )
        if request.method == "POST":
            try:
                created = consent.admin_request_for(credential)
            except FleetError as failure:
                self.message_user(request, f"{failure.code} — {failure.message}", messages.ERROR)
            else:
                return links_page(self, request, [created], "Admin-consent link", admin=True)
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
            return links_page(self, request, created, "Admin-consent links", admin=True)
        return None

    @admin.action(description="Verify with Microsoft (client credentials)", permissions=["manage"])
    def verify_now(self, request, queryset):
        chosen = self.scoped(request, queryset, Role.MANAGER).filter(
            kind=Credential.Kind.GRAPH_APP_ONLY
        )
        for credential in chosen:
            request_verification(credential)
        self.message_user(request, f"{chosen.count()} credential(s) queued for verification.")
