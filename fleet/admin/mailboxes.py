import re

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models.functions import Lower
from django.http import Http404, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from fleet import consent, errors, health, mailboxes, reconnect, uptime
from fleet.admin.base import (
    ScopedAdmin,
    ScopedRelatedFilter,
    require_role,
    secret_display,
)
from fleet.admin.connect import links_page
from fleet.admin.display import (
    badge,
    error_code,
    error_explained,
    sentence,
    short_time,
    truncated,
)
from fleet.admin.filters import ConnectionChangeFilter, DayFilter, WithinFilter
from fleet.admin.imports import MailboxImportExportMixin, totp_button
from fleet.admin.object_actions import ObjectAction, ObjectActionsMixin
from fleet.admin.reconnect import start_runs
from fleet.errors import FleetError
from fleet.models import Mailbox, MailboxEvent, MailboxTally, Role, Workspace

HISTORY_ROWS = 50
# A search that is one domain, or one address, asks for exactly that: answered by an index
# (mailbox_domain_upper; the unique index on LOWER(email)), not by the trigram scan that matches
# text anywhere — for a long term made of common trigrams ("client-01-03.example") that scan
# visits most of the fleet.
LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DOMAIN_TERM = re.compile(rf"{LABEL}(?:\.{LABEL})+", re.IGNORECASE)
ADDRESS_TERM = re.compile(rf"[^@\s\"']+@{DOMAIN_TERM.pattern}", re.IGNORECASE)


class ErrorCodeFilter(admin.SimpleListFilter):
    """Error codes that actually occur among the user's mailboxes, most frequent first: read from
    the mailbox tally (fleet/tallies.py), a few rows per workspace, not the failing mailboxes."""

    title = "error code"
    parameter_name = "error_code"

    def lookups(self, request, model_admin):
        from django.db.models import Sum

        codes = (
            MailboxTally.objects.restrict(request.user, model_admin.view_role)
            .exclude(error_code="")
            .values("error_code")
            .annotate(n=Sum("mailboxes"))
            .filter(n__gt=0)
            .order_by("-n", "error_code")
        )
        return [(row["error_code"], f"{row['error_code']} ({row['n']})") for row in codes]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(error_code=self.value())
        return queryset


class DomainFilter(admin.SimpleListFilter):
    """`?domain=example.com`: one domain's mailboxes (the dashboard's deliverability links).
    Shown only while it is applied: a fleet has too many domains to list them all."""

    title = "domain"
    parameter_name = "domain"

    def lookups(self, request, model_admin):
        value = self.value()
        return [(value, value)] if value else []

    def has_output(self) -> bool:
        return bool(self.value())

    def queryset(self, request, queryset):
        if self.value():
            # iexact: UPPER(domain) = UPPER(%s), the mailbox_domain_upper index.
            return queryset.filter(domain__iexact=self.value().strip())
        return queryset


class HealthCheckFilter(admin.SimpleListFilter):
    """Where each mailbox is in its health sweeps (the dashboard's sweep links)."""

    title = "health check"
    parameter_name = "check"

    def lookups(self, request, model_admin):
        return [
            ("overdue", "Overdue"),
            ("next_hour", "Due in the next hour"),
            ("never", "Never tested"),
        ]

    def queryset(self, request, queryset):
        from django.utils import timezone

        from fleet import health

        now = timezone.now()
        if self.value() == "overdue":
            return queryset.filter(health.overdue_q(now))
        if self.value() == "next_hour":
            return queryset.filter(health.due_soon_q(now))
        if self.value() == "never":
            return queryset.filter(health.never_tested_q())
        return queryset


class WarmupForm(forms.Form):
    daily_volume = forms.IntegerField(min_value=0, max_value=2000, label="Daily volume (0-2000)")
    response_rate = forms.IntegerField(min_value=0, max_value=100, label="Response rate % (0-100)")


class NewMailboxForm(forms.Form):
    workspace = forms.ModelChoiceField(queryset=Workspace.objects.none())


# When each button makes sense, by the mailbox's state (the services refuse the rest anyway).
S, W = Mailbox.Status, Mailbox.Warmup


def _in_use(m: Mailbox) -> bool:
    return m.status != S.DISABLED


def _oauth_unconnected(m: Mailbox) -> bool:
    return m.auth_method == Mailbox.AuthMethod.OAUTH and m.status == S.PENDING


def _oauth_connected(m: Mailbox) -> bool:
    return m.auth_method == Mailbox.AuthMethod.OAUTH and m.status in (S.ACTIVE, S.ERROR, S.REAUTH_REQUIRED)


def _warmup_can_start(m: Mailbox) -> bool:
    return not m.needs_approval and m.status == S.ACTIVE and m.warmup_status == W.NOT_STARTED


def _warmup_can_resume(m: Mailbox) -> bool:
    return not m.needs_approval and m.status == S.ACTIVE and m.warmup_status == W.PAUSED


MAILBOX_ACTIONS = (
    ObjectAction(
        "test", "Test connection", Role.OPERATOR, "Testing a mailbox", _in_use,
        "Test connection: sign in over SMTP and IMAP (or Graph) now", short="Test",
    ),
    ObjectAction(
        "connect", "Connect with Microsoft", Role.OPERATOR, "Connecting a mailbox",
        _oauth_unconnected, "Connect with Microsoft: sign in as this mailbox and consent",
        short="Connect",
    ),
    ObjectAction(
        "reconnect", "Reconnect", Role.OPERATOR, "Reconnecting a mailbox", _oauth_connected,
        "Sign in to Microsoft as this mailbox and consent again (a new grant)",
    ),
    ObjectAction(
        "approve", "Approve", Role.MANAGER, "Approving a mailbox",
        lambda m: m.needs_approval, "The mailbox was expected: let it be used and warmed up",
    ),
    ObjectAction(
        "start_warmup", "Start warmup", Role.MANAGER, "Starting warmup", _warmup_can_start,
        "Choose the daily volume and response rate, then start",
    ),
    ObjectAction(
        "pause_warmup", "Pause warmup", Role.MANAGER, "Pausing warmup",
        lambda m: m.warmup_status == W.ACTIVE, "Stop sending warmup mail for now",
    ),
    ObjectAction(
        "resume_warmup", "Resume warmup", Role.MANAGER, "Resuming warmup", _warmup_can_resume,
        "Go on with the same volume and response rate",
    ),
    ObjectAction(
        "reveal_totp", "Reveal TOTP", Role.OPERATOR, "Showing a TOTP code",
        lambda m: bool(m.totp_secret), "Show the current one-time code (recorded in the history)",
    ),
    ObjectAction(
        "disable", "Disable", Role.MANAGER, "Disabling a mailbox", _in_use,
        "Take the mailbox out of use: no tests, no warmup",
    ),
    ObjectAction(
        "enable", "Enable", Role.MANAGER, "Enabling a mailbox",
        lambda m: m.status == S.DISABLED, "Back in use; its connection is tested at once",
    ),
)
# The one button a list row offers: the first that applies, most urgent first.
ROW_ACTIONS = ("approve", "reconnect", "connect", "enable", "test")


@admin.register(Mailbox)
class MailboxAdmin(ObjectActionsMixin, MailboxImportExportMixin, ScopedAdmin):
    # Our buttons (connect a new mailbox, …); import-export puts Import/Export in front of them.
    change_list_template = "admin/fleet/mailbox/change_list.html"
    # Readable at 1280 px: long addresses are cut with the whole one in a tooltip, dates short.
    list_display = [
        "address",
        "workspace",
        "status_badge",
        "error",
        "auth_method",
        "warmup",
        "last_checked",
    ]
    list_filter = [
        "status",
        "needs_approval",
        ErrorCodeFilter,
        HealthCheckFilter,
        DomainFilter,
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
    # A fleet of a million: never COUNT(*) it all (see CappedPaginator).
    show_full_result_count = False
    count_cap = 10_000
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
        "dmarc_correct",
        "dmarc_policy",
        "mx_correct",
        "last_checked_at",
        "created_at",
        "refresh_token_is_set",
        "needs_approval",
        "credential",
        "totp_code",
        "history",
        "error_detail",
        "uptime",
    ]
    fieldsets = [
        (
            None,
            {"fields": ["workspace", "email", "display_name", "provider", "auth_method", "tags"]},
        ),
        (
            "Connection",
            {
                "fields": [
                    "uid",
                    "status",
                    "needs_approval",
                    "error_detail",
                    "credential",
                    "last_checked_at",
                    "uptime",
                ]
            },
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
            {
                "fields": [
                    "password",
                    "totp_secret",
                    "totp_code",
                    "refresh_token_is_set",
                    "token_expires_at",
                ]
            },
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
                    "dmarc_correct",
                    "dmarc_policy",
                    "mx_correct",
                    "graph_user_id",
                ]
            },
        ),
        ("History", {"fields": ["history"]}),
    ]
    # Secrets as "set / not set": the refresh token always, the others on view-only pages.
    password_is_set = secret_display("password")
    totp_secret_is_set = secret_display("totp_secret")
    refresh_token_is_set = secret_display("refresh_token")
    object_actions = MAILBOX_ACTIONS
    actions = [
        "test_connection",
        "connect_with_microsoft",
        "reconnect",
        "reconnect_all_failing",
        "approve",
        "start_warmup",
        "pause_warmup",
        "resume_warmup",
        "disable",
        "enable",
    ]

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip().strip("\"'").strip()
        if DOMAIN_TERM.fullmatch(term):
            # iexact: UPPER(domain) = UPPER(%s), the mailbox_domain_upper index.
            return queryset.filter(domain__iexact=term), False
        if ADDRESS_TERM.fullmatch(term):
            return queryset.alias(email_lower=Lower("email")).filter(email_lower=term.lower()), False
        return super().get_search_results(request, queryset, search_term)

    def lookup_allowed(self, lookup, value, request=None):
        # "see these mailboxes" on an import batch's page; the queryset stays scoped.
        return lookup == "import_batches__id__exact" or super().lookup_allowed(
            lookup, value, request
        )

    def get_urls(self):
        return [
            path(
                "connect-new/",
                self.admin_site.admin_view(self.connect_new_view),
                name="fleet_mailbox_connect_new",
            ),
            path(
                "reconnect-reauth/",
                self.admin_site.admin_view(require_POST(self.reconnect_reauth_view)),
                name="fleet_mailbox_reconnect_reauth",
            ),
            path(
                "reconnect-failing/",
                self.admin_site.admin_view(require_POST(self.reconnect_failing_view)),
                name="fleet_mailbox_reconnect_failing",
            ),
            path(
                "retest-code/",
                self.admin_site.admin_view(require_POST(self.retest_code_view)),
                name="fleet_mailbox_retest_code",
            ),
            path(
                "<path:object_id>/totp/",
                self.admin_site.admin_view(require_POST(self.totp_view)),
                name="fleet_mailbox_totp",
            ),
            *super().get_urls(),
        ]

    # --- Microsoft OAuth connect ------------------------------------------------------------
    def _connect(self, request, queryset, *, prompt=None):
        """One mailbox: straight to Microsoft's sign-in. Several: a page of consent links."""
        mailboxes = list(self.scoped(request, queryset, Role.OPERATOR).select_related("workspace"))
        created, failures = [], []
        for mailbox in mailboxes:
            try:
                created.append(
                    consent.initiate(
                        mailbox.workspace,
                        mailbox_uid=mailbox.uid,
                        actor=request.user,
                        base_url=request.build_absolute_uri("/"),
                    )
                )
            except FleetError as failure:
                failures.append(f"{mailbox.email}: {failure.code} — {failure.message}")
        for failure in failures:
            self.message_user(request, failure, messages.ERROR)
        if len(created) == 1 and len(mailboxes) == 1:
            try:
                return HttpResponseRedirect(consent.begin(created[0], prompt=prompt))
            except FleetError as failure:
                self.message_user(request, f"{failure.code} — {failure.message}", messages.ERROR)
                return None
        if created:
            return links_page(self, request, created, f"Consent links ({len(created)})")
        return None

    @admin.action(description="Connect with Microsoft (OAuth consent)", permissions=["operate"])
    def connect_with_microsoft(self, request, queryset):
        return self._connect(request, queryset)

    @admin.action(
        description="Reconnect with Microsoft (ask for consent again)", permissions=["operate"]
    )
    def reconnect(self, request, queryset):
        return self._connect(request, queryset, prompt="consent")

    @admin.action(
        description="Reconnect all failing (consent links for those in reauth required)",
        permissions=["operate"],
    )
    def reconnect_all_failing(self, request, queryset):
        return self._reconnect_failing(request, queryset, "selected on the mailbox list")

    def _reconnect_failing(self, request, mailboxes_chosen, selection: str):
        """A bulk reconnect run per workspace the user operates among `mailboxes_chosen`
        (fleet/reconnect.py), then its links page."""
        chosen = self.scoped(request, mailboxes_chosen, Role.OPERATOR)
        workspace_ids = set(
            reconnect.failing(chosen).order_by().values_list("workspace_id", flat=True).distinct()
        )
        if not workspace_ids:
            self.message_user(
                request,
                sentence(errors.NOTHING_TO_RECONNECT.message, errors.NOTHING_TO_RECONNECT.hint),
                messages.WARNING,
            )
            return None
        workspaces = Workspace.objects.filter(pk__in=workspace_ids).order_by("name")
        return start_runs(self, request, [(w, chosen) for w in workspaces], selection)

    def reconnect_failing_view(self, request):
        """The list's "Reconnect all failing" button: the list as filtered (its query string)."""
        require_role(request, Role.OPERATOR, "Reconnecting mailboxes")
        back = reverse("admin:fleet_mailbox_changelist")
        query = request.GET.urlencode()
        try:
            listed = self.get_changelist_instance(request).get_queryset(request)
        except IncorrectLookupParameters:
            self.message_user(request, "The list's filters are not valid.", messages.ERROR)
            return HttpResponseRedirect(back)
        selection = f"filtered list: {query}" if query else "all failing"
        response = self._reconnect_failing(request, listed, selection[:300])
        return response or HttpResponseRedirect(f"{back}?{query}" if query else back)

    def connect_new_view(self, request):
        """Connect a new Outlook mailbox: a consent link for a workspace; the mailbox is created
        `pending` once its owner consents, and a manager approves it."""
        workspaces = Workspace.objects.restrict(request.user, Role.OPERATOR)
        require_role(request, Role.OPERATOR, "Connecting a new Outlook mailbox")
        form = NewMailboxForm(request.POST or None)
        form.fields["workspace"].queryset = workspaces
        if workspaces.count() == 1 and not request.POST:
            form.fields["workspace"].initial = workspaces.first()
        context = {
            **self.admin_site.each_context(request),
            "title": "Connect a new Outlook mailbox",
            "opts": self.model._meta,
            "form": form,
        }
        if request.method == "POST" and form.is_valid():
            try:
                context["consent_request"] = consent.initiate(
                    form.cleaned_data["workspace"],
                    new_mailbox=True,
                    actor=request.user,
                    base_url=request.build_absolute_uri("/"),
                )
            except FleetError as failure:
                form.add_error(None, sentence(failure.message, failure.error.hint))
        return TemplateResponse(request, "admin/fleet/connect_new.html", context)

    @admin.action(description="Approve (the mailbox was expected)", permissions=["manage"])
    def approve(self, request, queryset):
        approved = sum(
            mailboxes.approve(mailbox, actor=request.user, via=mailboxes.ADMIN)
            for mailbox in self.scoped(request, queryset, Role.MANAGER).filter(needs_approval=True)
        )
        self.message_user(request, f"{approved} mailbox(es) approved; warmup can start.")

    # --- warmup -------------------------------------------------------------------------------
    def _warmup(self, request, queryset, action, title, operation):
        mailboxes_ = list(self.scoped(request, queryset, Role.MANAGER))
        settings = {}
        if action != "pause_warmup":
            form = WarmupForm(request.POST if "apply" in request.POST else None)
            if not form.is_bound:
                first = mailboxes_[0] if mailboxes_ else None
                form.initial = {
                    "daily_volume": first.warmup_daily_volume if first else 20,
                    "response_rate": first.warmup_response_rate if first else 30,
                }
                context = {
                    **self.admin_site.each_context(request),
                    "title": title,
                    "opts": self.model._meta,
                    "form": form,
                    "mailboxes": mailboxes_,
                    "action": action,
                }
                return TemplateResponse(request, "admin/fleet/warmup_form.html", context)
            if not form.is_valid():
                for field, problems in form.errors.items():
                    self.message_user(request, f"{field}: {' '.join(problems)}", messages.ERROR)
                return None
            settings = form.cleaned_data
        changed, refused = 0, []
        for mailbox in mailboxes_:
            try:
                operation(mailbox, actor=request.user, via=mailboxes.ADMIN, **settings)
                changed += 1
            except FleetError as failure:
                refused.append(f"{failure.message} (code {failure.code})")
        self.message_user(request, f"{title}: {changed} mailbox(es).")
        if refused:
            self.message_user(request, "Not changed: " + "; ".join(refused), messages.WARNING)
        return None

    @admin.action(description="Start warmup", permissions=["manage"])
    def start_warmup(self, request, queryset):
        return self._warmup(
            request, queryset, "start_warmup", "Start warmup", mailboxes.start_warmup
        )

    @admin.action(description="Pause warmup", permissions=["manage"])
    def pause_warmup(self, request, queryset):
        return self._warmup(
            request, queryset, "pause_warmup", "Pause warmup", mailboxes.pause_warmup
        )

    @admin.action(description="Resume warmup", permissions=["manage"])
    def resume_warmup(self, request, queryset):
        return self._warmup(
            request, queryset, "resume_warmup", "Resume warmup", mailboxes.resume_warmup
        )

    # --- the buttons on a mailbox's page and row (fleet.admin.object_actions) ------------------
    def do_test(self, request, mailbox):
        mailboxes.queue_connection_test(mailbox, actor=request.user, via=mailboxes.ADMIN)
        self.message_user(
            request,
            f"Connection test of {mailbox.email} queued; its status updates when it finishes.",
        )

    def do_connect(self, request, mailbox):
        return self._connect(request, Mailbox.objects.filter(pk=mailbox.pk))

    def do_reconnect(self, request, mailbox):
        return self._connect(request, Mailbox.objects.filter(pk=mailbox.pk), prompt="consent")

    def do_approve(self, request, mailbox):
        mailboxes.approve(mailbox, actor=request.user, via=mailboxes.ADMIN)
        self.message_user(request, f"{mailbox.email} approved; warmup can start.", messages.SUCCESS)

    def do_start_warmup(self, request, mailbox):
        return self._warmup_one(request, mailbox, "start_warmup", mailboxes.start_warmup)

    def do_pause_warmup(self, request, mailbox):
        mailboxes.pause_warmup(mailbox, actor=request.user, via=mailboxes.ADMIN)
        self.message_user(request, f"Warmup of {mailbox.email} paused.", messages.SUCCESS)

    def do_resume_warmup(self, request, mailbox):
        mailboxes.resume_warmup(mailbox, actor=request.user, via=mailboxes.ADMIN)
        self.message_user(
            request,
            f"Warmup of {mailbox.email} resumed ({mailbox.warmup_daily_volume}/day, "
            f"{mailbox.warmup_response_rate}% responses).",
            messages.SUCCESS,
        )

    def do_reveal_totp(self, request, mailbox):
        return self._totp_page(request, mailbox)

    def do_disable(self, request, mailbox):
        mailboxes.disable(mailbox, actor=request.user, via=mailboxes.ADMIN)
        self.message_user(
            request, f"{mailbox.email} disabled: no tests and no warmup until it is enabled."
        )

    def do_enable(self, request, mailbox):
        mailboxes.enable(mailbox, actor=request.user, via=mailboxes.ADMIN)
        self.message_user(
            request, f"{mailbox.email} enabled again; its connection is being tested.", messages.SUCCESS
        )

    def _warmup_one(self, request, mailbox, name, operation):
        """The warmup form for one mailbox; on submit the service starts it and we go back."""
        form = WarmupForm(
            request.POST if "apply" in request.POST else None,
            initial={
                "daily_volume": mailbox.warmup_daily_volume,
                "response_rate": mailbox.warmup_response_rate,
            },
        )
        if form.is_bound and form.is_valid():
            operation(mailbox, actor=request.user, via=mailboxes.ADMIN, **form.cleaned_data)
            self.message_user(
                request,
                f"Warmup of {mailbox.email} started ({mailbox.warmup_daily_volume}/day, "
                f"{mailbox.warmup_response_rate}% responses).",
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Start warmup: {mailbox.email}",
            "button": "Start warmup",
            "opts": self.model._meta,
            "form": form,
            "mailboxes": [mailbox],
            "original": mailbox,
            "form_action": self.action_url(mailbox, name),
            "back_url": reverse("admin:fleet_mailbox_change", args=[mailbox.pk]),
        }
        return TemplateResponse(request, "admin/fleet/warmup_form.html", context)

    def get_list_display(self, request):
        # Under the status, the row's one button: it depends on the user's role in the row's
        # workspace (the status cell, not a column of its own: the list fits 1280 px).
        @admin.display(description="status", ordering="status")
        def status_badge(obj):
            button = self.row_button(request, obj, ROW_ACTIONS)
            shown = self.status_badge(obj)
            if not button:
                return shown
            return format_html('{}<span class="fleet-row-tools">{}</span>', shown, button)

        return [status_badge if f == "status_badge" else f for f in self.list_display]

    def reconnect_reauth_view(self, request):
        """The dashboard's "Reconnect N mailboxes": the Reconnect action on the mailboxes that
        need reauthorization (of one workspace, or all the user operates)."""
        require_role(request, Role.OPERATOR, "Reconnecting mailboxes")
        response = self._reconnect_failing(
            request, self._dashboard_selection(request), "all failing (dashboard)"
        )
        return response or HttpResponseRedirect(self._dashboard_url(request))

    def retest_code_view(self, request):
        """The dashboard's "Test N again" beside an error code."""
        require_role(request, Role.OPERATOR, "Testing mailboxes")
        code = request.POST.get("code", "")
        chosen = self._dashboard_selection(request).filter(error_code=code)
        queued = health.queue_tests(
            chosen.only("pk", "status"), actor=request.user, via=mailboxes.ADMIN
        )
        self.message_user(
            request,
            f"Connection tests queued for {queued} mailbox(es) with {code}; "
            "the dashboard updates as they finish.",
        )
        return HttpResponseRedirect(self._dashboard_url(request))

    def _dashboard_selection(self, request):
        """Mailboxes the user operates, of the dashboard's workspace when one was chosen."""
        chosen = Mailbox.objects.restrict(request.user, Role.OPERATOR)
        if request.POST.get("workspace", "").isdigit():
            chosen = chosen.filter(workspace_id=int(request.POST["workspace"]))
        return chosen

    def _dashboard_url(self, request) -> str:
        workspace = request.POST.get("workspace", "")
        url = reverse("admin:index")
        return f"{url}?workspace={workspace}" if workspace.isdigit() else url

    def totp_view(self, request, object_id):
        """The current TOTP code of a mailbox, shown once and recorded as an event."""
        mailbox = self.get_object(request, object_id)
        if mailbox is None or not self.has_operate_permission(request, mailbox):
            raise Http404("No mailbox with this id.")
        try:
            return self._totp_page(request, mailbox)
        except FleetError as failure:
            raise Http404(failure.message) from None

    def _totp_page(self, request, mailbox):
        shown = mailboxes.reveal_totp(mailbox, actor=request.user, via=mailboxes.ADMIN)
        context = {
            **self.admin_site.each_context(request),
            "title": f"TOTP code for {mailbox.email}",
            "opts": self.opts,
            "mailbox": mailbox,
            "code": shown.code,
            "valid_for": shown.valid_for,
        }
        return TemplateResponse(request, "admin/fleet/mailbox/totp.html", context)

    @admin.display(description="current TOTP code")
    def totp_code(self, obj):
        if obj.pk is None or not obj.totp_secret:
            return "—"
        return totp_button(reverse("admin:fleet_mailbox_totp", args=[obj.pk]))

    @admin.action(description="Test connection (SMTP and IMAP)", permissions=["operate"])
    def test_connection(self, request, queryset):
        queued = health.queue_tests(
            self.scoped(request, queryset, Role.OPERATOR).select_related(None).only("pk", "status"),
            actor=request.user,
            via=mailboxes.ADMIN,
        )
        self.message_user(
            request,
            f"Connection tests queued for {queued} mailbox(es); their status updates as they finish.",
        )

    def get_readonly_fields(self, request, obj=None):
        # Warmup starts and stops through the actions, which check approval.
        fields = [*self.readonly_fields, "warmup_status"]
        if not self.has_manage_permission(request, obj):
            # Warmup is a manager's decision.
            fields += ["warmup_daily_volume", "warmup_response_rate"]
        if obj is not None:
            fields += ["workspace"]
        return fields

    @admin.display(description="email", ordering="email")
    def address(self, obj):
        return truncated(obj.email)

    @admin.display(description="last checked", ordering="last_checked_at")
    def last_checked(self, obj):
        return short_time(obj.last_checked_at)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        shown = badge(obj.status, obj.get_status_display())
        if obj.needs_approval:
            return format_html("{} {}", shown, badge("pending", "needs approval"))
        return shown

    @admin.display(description="error", ordering="error_code")
    def error(self, obj):
        return error_code(obj.error_code)

    @admin.display(description="error")
    def error_detail(self, obj):
        return error_explained(obj.error_code, obj.error_message, obj.last_checked_at)

    @admin.display(description="warmup", ordering="warmup_status")
    def warmup(self, obj):
        return badge(obj.warmup_status, obj.get_warmup_status_display())

    @admin.display(description="uptime, 30 days")
    def uptime(self, obj):
        """The share of its connection tests that passed in 30 days, and the last tests: read
        from this mailbox's own events only (fleet/uptime.py)."""
        if obj.pk is None:
            return "—"
        health = uptime.for_mailbox(obj)
        for check in health.last_checks:
            entry = errors.get(check.error_code)
            check.hint = entry.hint if entry else ""
        return render_to_string(
            "fleet/mailbox_uptime.html", {"health": health, "days": uptime.WINDOW_DAYS}
        )

    @admin.display(description="status history")
    def history(self, obj):
        if obj.pk is None:
            return "—"
        events = obj.events.select_related("actor")[:HISTORY_ROWS]
        return render_to_string("fleet/mailbox_history.html", {"events": events})

    @admin.action(description="Disable selected mailboxes", permissions=["manage"])
    def disable(self, request, queryset):
        changed = sum(
            mailboxes.disable(mailbox, actor=request.user, via=mailboxes.ADMIN)
            for mailbox in self.scoped(request, queryset, Role.MANAGER).select_related("workspace")
        )
        self.message_user(request, f"{changed} mailbox(es) disabled.")

    @admin.action(
        description="Re-enable selected mailboxes (tested again at once)", permissions=["manage"]
    )
    def enable(self, request, queryset):
        changed = sum(
            mailboxes.enable(mailbox, actor=request.user, via=mailboxes.ADMIN)
            for mailbox in self.scoped(request, queryset, Role.MANAGER).select_related("workspace")
        )
        self.message_user(request, f"{changed} mailbox(es) re-enabled; their connection is tested.")

    audited = False  # fleet/mailboxes.py records its saves and deletes

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change:
            mailboxes.record_changes(
                obj, form.changed_data, actor=request.user, via="admin",
                before={name: form.initial.get(name) for name in form.changed_data},
            )
        else:
            mailboxes.record_created(obj, actor=request.user, via=mailboxes.ADMIN)

    # Deleting, one or many, goes through the service: history and webhook as from the API.
    def delete_model(self, request, obj):
        mailboxes.delete(obj, actor=request.user, via=mailboxes.ADMIN)

    def delete_queryset(self, request, queryset):
        for mailbox in self.scoped(request, queryset, Role.MANAGER).select_related("workspace"):
            mailboxes.delete(mailbox, actor=request.user, via=mailboxes.ADMIN)


@admin.register(MailboxEvent)
class MailboxEventAdmin(ScopedAdmin):
    list_display = ["created_at", "email", "workspace", "kind", "transition", "error", "actor"]
    list_filter = [
        ConnectionChangeFilter,
        DayFilter,
        WithinFilter,
        "kind",
        "to_status",
        ("workspace", ScopedRelatedFilter),
    ]
    search_fields = ["email", "error_code"]
    list_select_related = ["workspace", "actor"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    count_cap = 10_000

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
