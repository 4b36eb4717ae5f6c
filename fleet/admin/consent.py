import uuid

from django import forms
from django.contrib import admin, messages
from django.urls import path

from fleet import consent
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter
from fleet.admin.connect import links_csv
from fleet.admin.display import badge, error_code, error_explained, sentence
from fleet.admin.filters import ConsentStateFilter
from fleet.errors import FleetError
from fleet.models import ConsentRequest, Role


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class ConsentRequestForm(forms.ModelForm):
    """New requests go through fleet.consent (prepare, then record), so that the admin and the API
    agree."""

    class Meta:
        model = ConsentRequest
        fields = [
            "workspace",
            "kind",
            "mailbox",
            "username",
            "domain",
            "credential",
            "consent_url",
            "request_data",
        ]

    def clean(self):
        """Checks the new request as fleet.consent does (writing nothing); save_model records
        it."""
        data = super().clean()
        if self.instance.pk or self.errors:
            return data
        try:
            self.prepared = consent.prepare(
                data["workspace"],
                kind=data["kind"],
                mailbox_uid=data["mailbox"].uid if data.get("mailbox") else None,
                username=data.get("username", ""),
                domain=data.get("domain", ""),
                credential=data.get("credential"),
                consent_url=data.get("consent_url", ""),
                request_data=data.get("request_data") or {},
                actor=self.user,
            )
        except FleetError as failure:
            raise forms.ValidationError(sentence(failure.message, failure.error.hint)) from failure
        return data


@admin.register(ConsentRequest)
class ConsentRequestAdmin(ScopedAdmin):
    form = ConsentRequestForm
    list_display = [
        "uid",
        "kind",
        "target",
        "workspace",
        "status_badge",
        "error",
        "expires_at",
        "created_at",
    ]
    list_filter = [ConsentStateFilter, "status", "kind", ("workspace", ScopedRelatedFilter)]
    search_fields = ["mailbox__email", "username", "domain", "=uid"]
    list_select_related = ["workspace", "mailbox", "credential"]
    autocomplete_fields = ["mailbox"]
    readonly_fields = [
        "uid",
        "status",
        "error_detail",
        "expires_at",
        "created_by",
        "created_at",
        "completed_at",
    ]
    fields = [
        "workspace",
        "kind",
        "mailbox",
        "username",
        "domain",
        "credential",
        "consent_url",
        "request_data",
        *readonly_fields,
    ]
    actions = ["complete_by_hand", "cancel", "download_links"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.readonly_fields
        # A request's target and kind are fixed once created.
        return [*self.fields]

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.user = request.user
        form.base_url = request.build_absolute_uri("/")
        return form

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        # Checked by the form's clean() (fleet.consent.prepare), saved here as the API saves it.
        created = consent.record(form.prepared, base_url=form.base_url)
        obj.pk, obj.uid = created.pk, created.uid

    def save_related(self, request, form, formsets, change):
        if change:
            super().save_related(request, form, formsets, change)

    def get_urls(self):
        return [
            path(
                "links.csv",
                self.admin_site.admin_view(self.links_csv_view),
                name="fleet_consentrequest_links_csv",
            ),
            *super().get_urls(),
        ]

    def links_csv_view(self, request):
        uids = [uid for uid in request.GET.getlist("uid") if is_uuid(uid)]  # others match none
        rows = self.get_queryset(request).filter(uid__in=uids).select_related("mailbox")
        return links_csv(rows)

    @admin.display(description="mailbox")
    def target(self, obj):
        return obj.target

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="error", ordering="error_code")
    def error(self, obj):
        return error_code(obj.error_code)

    @admin.display(description="error")
    def error_detail(self, obj):
        return error_explained(obj.error_code, obj.error_message)

    @admin.action(
        description="Mark external consent completed (done by hand)", permissions=["operate"]
    )
    def complete_by_hand(self, request, queryset):
        done = sum(
            consent.complete_by_hand(cr, request.user)
            for cr in self.scoped(request, queryset, Role.OPERATOR).select_related("mailbox")
        )
        self.message_user(request, f"{done} external consent request(s) completed.")
        skipped = queryset.count() - done
        if skipped:
            self.message_user(
                request,
                f"{skipped} skipped: only open external requests are completed by hand.",
                messages.WARNING,
            )

    @admin.action(description="Cancel selected consent requests", permissions=["operate"])
    def cancel(self, request, queryset):
        done = sum(consent.cancel(cr) for cr in self.scoped(request, queryset, Role.OPERATOR))
        self.message_user(request, f"{done} consent request(s) cancelled.")

    @admin.action(description="Download consent links as CSV")
    def download_links(self, request, queryset):
        return links_csv(self.scoped(request, queryset, Role.VIEWER).select_related("mailbox"))
