"""API keys: created here, shown once on the page that follows, stored only as a hash.

Anyone with admin access may create a platform key for themselves; a workspace key needs the
manager role in its workspace and may not be given more than its creator's role there.
"""

from django import forms
from django.contrib import admin
from django.db import transaction
from django.template.response import TemplateResponse

from fleet import access, audit
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter, has_role
from fleet.models import ApiKey, Role, Workspace


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["name", "kind", "workspace", "role"]

    request = None  # set by ApiKeyAdmin.get_form

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "workspace" in self.fields:
            self.fields["workspace"].queryset = Workspace.objects.restrict(
                self.request.user, Role.MANAGER
            )
            self.fields["workspace"].help_text = "Workspace keys only: where you are a manager."
            self.fields["role"].initial = Role.OPERATOR

    def clean(self):
        data = super().clean()
        kind, workspace, role = data.get("kind"), data.get("workspace"), data.get("role")
        if kind == ApiKey.Kind.PLATFORM:
            if workspace:
                self.add_error("workspace", "A platform key reaches all of your workspaces.")
            data["role"] = ""
        elif kind == ApiKey.Kind.WORKSPACE:
            if not workspace:
                self.add_error("workspace", "A workspace key needs its workspace.")
            elif not role:
                self.add_error("role", "Choose the most this key may do.")
            else:
                allowed = access.roles_up_to(self.request.user, workspace.pk)
                if role not in allowed:
                    mine = allowed[-1] if allowed else "none"
                    self.add_error("role", f"At most your own role in this workspace ({mine}).")
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(ScopedAdmin):
    form = ApiKeyForm
    list_display = [
        "name",
        "shown_prefix",
        "kind",
        "workspace",
        "role",
        "user",
        "created_at",
        "last_used_at",
        "state",
    ]
    list_filter = ["kind", ("workspace", ScopedRelatedFilter)]
    search_fields = ["name", "prefix", "user__username"]
    list_select_related = ["workspace", "user"]
    actions = ["revoke"]

    def get_queryset(self, request):
        # Own platform keys, and workspace keys where the user is a manager (ApiKeyQuerySet).
        return ApiKey.objects.restrict(request.user, Role.MANAGER).select_related(
            "workspace", "user"
        )

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type("ApiKeyRequestForm", (form,), {"request": request})

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "kind", "workspace", "role"]
        return [
            "name",
            "shown_prefix",
            "kind",
            "workspace",
            "role",
            "user",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [
            "shown_prefix",
            "kind",
            "workspace",
            "role",
            "user",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]

    # Platform keys belong to their user; workspace keys to the workspace's managers.
    def _mine_or_managed(self, request, obj) -> bool:
        if obj.workspace_id is None:
            return obj.user_id == request.user.pk or request.user.is_superuser
        return has_role(request, Role.MANAGER, obj.workspace_id)

    def _staff(self, request) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_module_permission(self, request):
        return self._staff(request)

    def has_add_permission(self, request):
        return self._staff(request)

    def has_view_permission(self, request, obj=None):
        return self._staff(request) and (obj is None or self._mine_or_managed(request, obj))

    has_change_permission = has_view_permission
    has_delete_permission = has_view_permission

    def has_revoke_permission(self, request):
        return self._staff(request)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.user = request.user
            obj._raw_key = obj.new_secret()  # kept on this object only, for the next page
        elif not self._mine_or_managed(request, obj):
            return  # the queryset already hides it; guard a forged POST too
        before = audit.snapshot(obj, ["name"])
        obj.save()
        audit.record(
            "apikey.updated" if change else "apikey.created", obj, actor=request.user,
            via="admin",
            changes=audit.diff(obj, before) if change else audit.set_fields(
                obj, ["name", "kind", "workspace_id", "role", "prefix"]
            ),
        )

    def response_add(self, request, obj, post_url_continue=None):
        # The key is shown on this one page and nowhere else, never again.
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.opts,
            "key": obj,
            "raw_key": obj._raw_key,
        }
        response = TemplateResponse(request, "fleet/api_key_created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.display(description="key")
    def shown_prefix(self, obj):
        return f"{obj.prefix}…"

    @admin.display(description="state")
    def state(self, obj):
        return f"revoked {obj.revoked_at:%Y-%m-%d}" if obj.revoked_at else "active"

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke(self, request, queryset):
        revoked = 0
        for key in queryset.filter(revoked_at=None):
            if self._mine_or_managed(request, key):
                with transaction.atomic():
                    key.revoke()
                    audit.record(
                        "apikey.revoked", key, actor=request.user, via="admin",
                        changes={"revoked_at": {"before": None, "after": key.revoked_at}},
                    )
                revoked += 1
        self.message_user(request, f"{revoked} key(s) revoked; they stop working at once.")
