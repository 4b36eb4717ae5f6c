from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html

from fleet import access, alerts, health, mailboxes, reconnect
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter, has_role, secret_display
from fleet.admin.object_actions import ObjectAction, ObjectActionsMixin
from fleet.admin.reconnect import start_runs
from fleet.models import Mailbox, Membership, Role, Tag, WebhookDelivery, Workspace
from fleet.webhook_targets import validate_webhook_url


class MembershipForm(forms.ModelForm):
    """Members are named by username or email, so that owners never browse the user list."""

    username = forms.CharField(label="Username or email", max_length=254)

    class Meta:
        model = Membership
        fields = ["workspace", "username", "role", "alert_emails"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["username"].initial = self.instance.user.get_username()

    def clean_username(self):
        name = self.cleaned_data["username"].strip()
        users = get_user_model().objects.filter(is_active=True)
        user = users.filter(username=name).first() or users.filter(email__iexact=name).first()
        if user is None:
            raise forms.ValidationError(
                "No active user with this username or email: a superuser creates the account first."
            )
        self.instance.user = user
        return name


class MembershipInline(admin.TabularInline):
    model = Membership
    form = MembershipForm
    extra = 0

    def has_view_permission(self, request, obj=None):
        return self.admin_site._registry[Workspace].has_view_permission(request, obj)

    def _owner(self, request, obj):
        return self.admin_site._registry[Workspace].has_own_permission(request, obj)

    def has_add_permission(self, request, obj):
        return obj is not None and self._owner(request, obj)

    def has_change_permission(self, request, obj=None):
        return obj is not None and self._owner(request, obj)

    def has_delete_permission(self, request, obj=None):
        return obj is not None and self._owner(request, obj)


class WorkspaceForm(forms.ModelForm):
    def clean_webhook_url(self) -> str:
        url = self.cleaned_data.get("webhook_url", "")
        validate_webhook_url(url)  # https, public addresses only (fleet/webhook_targets.py)
        return url


def _has_failing(workspace: Workspace) -> bool:
    return reconnect.failing(Mailbox.objects.filter(workspace=workspace)).exists()


@admin.register(Workspace)
class WorkspaceAdmin(ObjectActionsMixin, ScopedAdmin):
    form = WorkspaceForm
    object_actions = (
        ObjectAction(
            "sweep_now",
            "Sweep now",
            Role.OPERATOR,
            "Sweeping mailboxes",
            title="Test every mailbox of this workspace now (disabled ones excepted)",
        ),
        ObjectAction(
            "reconnect_failing",
            "Reconnect all failing",
            Role.OPERATOR,
            "Reconnecting mailboxes",
            _has_failing,
            "A consent link for every OAuth mailbox in reauth required, on one page to send out",
        ),
    )
    change_role = Role.OWNER
    delete_role = Role.OWNER
    list_display = ["name", "slug", "mailbox_count", "member_count", "webhook"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    fields = [
        "name",
        "slug",
        "health_check_interval",
        "webhook_url",
        "webhook_secret",
        "webhook_disabled_reason",
    ]
    webhook_secret_is_set = secret_display("webhook_secret")  # view-only pages
    readonly_fields = ["webhook_disabled_reason"]
    inlines = [MembershipInline]
    actions = ["send_test_event", "sweep_now", "reconnect_all_failing"]

    def do_reconnect_failing(self, request, workspace):
        return start_runs(self, request, [(workspace, None)], "all failing")

    @admin.action(description="Reconnect all failing mailboxes", permissions=["operate"])
    def reconnect_all_failing(self, request, queryset):
        chosen = self.scoped(request, queryset, Role.OPERATOR).order_by("name")
        return start_runs(self, request, [(w, None) for w in chosen], "all failing")

    def save_model(self, request, obj, form, change):
        if {"webhook_url", "webhook_secret"} & set(form.changed_data):
            obj.reenable_webhook()
        super().save_model(request, obj, form, change)
        if change and "health_check_interval" in form.changed_data:
            health.reschedule(obj)  # slots on the new cadence

    def _sweep(self, request, workspace) -> None:
        queued = health.sweep_now(
            Mailbox.objects.filter(workspace=workspace), actor=request.user, via=mailboxes.ADMIN
        )
        url = reverse("admin:fleet_mailbox_changelist") + f"?workspace__id__exact={workspace.pk}"
        self.message_user(
            request,
            format_html(
                '{}: {} mailbox(es) queued for a connection test; <a href="{}">their list</a> '
                "shows each status as it is tested.",
                workspace,
                queued,
                url,
            ),
        )

    def do_sweep_now(self, request, workspace):
        self._sweep(request, workspace)

    @admin.action(description="Sweep now (test every mailbox)", permissions=["operate"])
    def sweep_now(self, request, queryset):
        for workspace in self.scoped(request, queryset, Role.OPERATOR):
            self._sweep(request, workspace)

    @admin.display(description="webhook")
    def webhook(self, obj):
        if not obj.webhook_url:
            return "—"
        return obj.webhook_url if obj.webhook_enabled else f"{obj.webhook_url} (turned off)"

    @admin.action(description="Send a test webhook event", permissions=["own"])
    def send_test_event(self, request, queryset):
        for workspace in self.scoped(request, queryset, Role.OWNER):
            delivery = WebhookDelivery.objects.emit(
                workspace, "webhook.test", {"message": "Test event sent from the Fleet admin."}
            )
            if delivery is None:
                self.message_user(
                    request,
                    f"{workspace}: no webhook URL, or it was turned off; set one first.",
                    level="warning",
                )
            else:
                self.message_user(
                    request,
                    f"{workspace}: test event {delivery.uid} queued; see Webhook deliveries.",
                )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                mailbox_total=Count("mailboxes", distinct=True),
                member_total=Count("memberships", distinct=True),
            )
        )

    def has_add_permission(self, request):
        # A workspace is a new agency client: a platform decision, not a member's.
        return request.user.is_active and request.user.is_superuser

    @admin.display(description="mailboxes", ordering="mailbox_total")
    def mailbox_count(self, obj):
        return obj.mailbox_total

    @admin.display(description="members", ordering="member_total")
    def member_count(self, obj):
        return obj.member_total


class MembershipAlertsForm(forms.ModelForm):
    """What a member may change on their own membership, and a manager on anyone's: whether the
    workspace's alert digests come to them (owners get the whole form)."""

    class Meta:
        model = Membership
        fields = ["alert_emails"]


@admin.register(Membership)
class MembershipAdmin(ScopedAdmin):
    add_role = Role.OWNER
    change_role = Role.OWNER
    delete_role = Role.OWNER
    form = MembershipForm
    list_display = ["user", "workspace", "role", "alert_emails", "created_at"]
    list_filter = ["role", "alert_emails", ("workspace", ScopedRelatedFilter)]
    search_fields = ["user__username", "user__email", "workspace__name"]
    list_select_related = ["user", "workspace"]
    # The member as text: a link to their user page would end in a 403 for everyone but
    # superusers. The workspace's page is open to every member.
    ALERTS_ONLY_READONLY = ["member", "workspace", "role"]

    @admin.display(description="member")
    def member(self, obj):
        user = obj.user
        return f"{user.get_username()} <{user.email}>" if user.email else user.get_username()

    def _alerts_only(self, request, obj) -> bool:
        """Not the owner, but the member themself or a manager: only "alert e-mails" is theirs."""
        return (
            obj is not None
            and not has_role(request, Role.OWNER, obj.workspace_id)
            and request.user.is_staff
            and access.may_change_alert_emails(request.user, obj)
        )

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) or self._alerts_only(request, obj)

    def get_fields(self, request, obj=None):
        if self._alerts_only(request, obj):
            return [*self.ALERTS_ONLY_READONLY, "alert_emails"]
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if self._alerts_only(request, obj):
            return self.ALERTS_ONLY_READONLY
        return super().get_readonly_fields(request, obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if self._alerts_only(request, obj):
            kwargs["form"] = MembershipAlertsForm
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj, form, change):
        if change and self._alerts_only(request, obj):
            alerts.set_alert_emails(obj, form.cleaned_data["alert_emails"], request.user)
            return
        super().save_model(request, obj, form, change)


@admin.register(Tag)
class TagAdmin(ScopedAdmin):
    list_display = ["name", "workspace"]
    list_filter = [("workspace", ScopedRelatedFilter)]
    search_fields = ["name"]
    list_select_related = ["workspace"]
