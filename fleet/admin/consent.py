import uuid

from django import forms
from django.contrib import admin, messages
from django.urls import path

from fleet import consent
from fleet.admin.base import ScopedAdmin, ScopedRelatedFilter
from fleet.admin.connect import links_csv
from fleet.admin.display import badge, copyable, error_code, error_explained, sentence
from fleet.admin.filters import ConsentStateFilter
from fleet.admin.object_actions import ObjectAction, ObjectActionsMixin
from fleet.errors import FleetError
from fleet.models import ConsentRequest, Mailbox, Role

KIND_GUIDE = {
    ConsentRequest.Kind.USER: "User: a mailbox owner signs in to Microsoft and consents to the "
    "workspace's OAuth app",
    ConsentRequest.Kind.ADMIN: "Admin: a tenant administrator consents to a credential's app for "
    "the whole organisation",
    ConsentRequest.Kind.EXTERNAL: "External: a third party's consent page (a sequencer's, …); "
    "you mark it completed by hand",
}
KEY_VALUE_ROWS = 4


class KeyValueWidget(forms.MultiWidget):
    """Request data as rows of key and value, instead of raw JSON."""

    template_name = "fleet/widgets/key_value.html"

    def __init__(self, rows: int = KEY_VALUE_ROWS):
        pairs = []
        for row in range(1, rows + 1):
            pairs += [
                forms.TextInput(attrs={"placeholder": "key", "size": 18, "aria-label": f"key {row}"}),
                forms.TextInput(
                    attrs={"placeholder": "value", "size": 32, "aria-label": f"value {row}"}
                ),
            ]
        super().__init__(pairs)

    def decompress(self, value):
        flat = []
        for key, item in (value or {}).items():
            flat += [key, "" if item is None else str(item)]
        return (flat + [""] * len(self.widgets))[: len(self.widgets)]


class KeyValueField(forms.MultiValueField):
    """{key: value}, each value text as typed (a new mailbox's email_per_day and response_rate
    are read as numbers when it is created)."""

    widget = KeyValueWidget

    def __init__(self, rows: int = KEY_VALUE_ROWS, **kwargs):
        fields = [forms.CharField(required=False, max_length=500) for _ in range(rows * 2)]
        super().__init__(fields, require_all_fields=False, required=False, **kwargs)

    def compress(self, data_list):
        data: dict = {}
        cells = list(data_list or [])
        for at in range(0, len(cells), 2):
            key, value = (cells[at] or "").strip(), (cells[at + 1] or "").strip()
            if not key and not value:
                continue
            if not key:
                raise forms.ValidationError(f"The value “{value}” has no key.")
            if key in data:
                raise forms.ValidationError(f"The key “{key}” is given twice.")
            data[key] = value  # as typed: an id of digits stays text
        return data


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class ConsentRequestForm(forms.ModelForm):
    """A new consent request, guided by its kind: a mailbox (picked, or its address typed) for
    user and external consent, a credential for admin consent, the third party's URL for external
    consent. Checked by fleet.consent.prepare (as the API checks it); save_model records it."""

    kind = forms.ChoiceField(
        choices=[(kind, KIND_GUIDE[kind]) for kind in ConsentRequest.Kind.values],
        widget=forms.RadioSelect,
        initial=ConsentRequest.Kind.USER,
    )
    address = forms.EmailField(
        required=False,
        label="…or its address",
        help_text="A mailbox of the workspace, or a new one: it is created, waiting for a "
        "manager's approval, when its owner consents.",
    )
    data = KeyValueField(
        label="Request data",
        help_text="Optional, kept with the request: e.g. display_name = Jim H, "
        "email_per_day = 20, response_rate = 30 (used when a new mailbox is created).",
    )

    class Meta:
        model = ConsentRequest
        fields = ["workspace", "kind", "mailbox", "credential", "consent_url"]
        labels = {"mailbox": "Mailbox", "consent_url": "Consent URL"}
        help_texts = {
            "mailbox": "Pick the mailbox whose owner consents.",
            "credential": "The app registration the administrator consents to.",
            "consent_url": "The third party's https:// page where the consent is given.",
        }

    def clean(self):
        """Checks the new request as fleet.consent does (writing nothing); save_model records
        it."""
        data = super().clean()
        if self.instance.pk or self.errors:
            return data
        kind, workspace = data["kind"], data["workspace"]
        mailbox, address = data.get("mailbox"), data.get("address") or ""
        target = {}
        if kind == ConsentRequest.Kind.ADMIN:
            if data.get("credential") is None:
                self.add_error("credential", "Pick the credential whose app needs admin consent.")
                return data
        else:
            if mailbox is not None and address:
                self.add_error("address", "Pick a mailbox or type an address, not both.")
                return data
            if mailbox is None and not address:
                self.add_error("mailbox", "Pick the mailbox, or type its address below.")
                return data
            if mailbox is not None and mailbox.workspace_id != workspace.pk:
                self.add_error("mailbox", f"{mailbox.email} is not a mailbox of {workspace}.")
                return data
            target = self._target(workspace, mailbox, address)
            if kind == ConsentRequest.Kind.EXTERNAL and not data.get("consent_url"):
                self.add_error("consent_url", "Give the third party's consent URL.")
                return data
        request_data = dict(data.get("data") or {})
        if target.get("new_mailbox"):
            request_data.setdefault("email", address.lower())
        try:
            self.prepared = consent.prepare(
                workspace,
                kind=kind,
                credential=data.get("credential") if kind == ConsentRequest.Kind.ADMIN else None,
                consent_url=data.get("consent_url", "")
                if kind == ConsentRequest.Kind.EXTERNAL
                else "",
                request_data=request_data,
                actor=self.user,
                **target,
            )
        except FleetError as failure:
            raise forms.ValidationError(sentence(failure.message, failure.error.hint)) from failure
        return data

    @staticmethod
    def _target(workspace, mailbox, address: str) -> dict:
        if mailbox is not None:
            return {"mailbox_uid": mailbox.uid}
        known = Mailbox.objects.filter(workspace=workspace, email__iexact=address).first()
        if known is not None:
            return {"mailbox_uid": known.uid}
        username, domain = address.rsplit("@", 1)
        return {"username": username, "domain": domain, "new_mailbox": True}


@admin.register(ConsentRequest)
class ConsentRequestAdmin(ObjectActionsMixin, ScopedAdmin):
    form = ConsentRequestForm
    # Who consents and how lead; the request's id comes last, cut, with a copy button.
    list_display = [
        "target",
        "kind",
        "workspace",
        "status_badge",
        "error",
        "expires_at",
        "created_at",
        "uid_short",
    ]
    object_actions = (
        ObjectAction(
            "copy_link",
            "Copy link",
            Role.VIEWER,
            "Copying a consent link",
            lambda cr: bool(cr.consent_url)
            and (cr.is_open or cr.status == ConsentRequest.Status.FAILED),
            "Copy the consent link to send it",
            method="copy",
            value=lambda cr: cr.consent_url,
        ),
        ObjectAction(
            "complete",
            "Mark completed",
            Role.OPERATOR,
            "Completing a consent request",
            lambda cr: cr.kind == ConsentRequest.Kind.EXTERNAL and cr.is_open,
            "The third party's consent was given (it has no callback to Fleet)",
        ),
        ObjectAction(
            "cancel",
            "Cancel",
            Role.OPERATOR,
            "Cancelling a consent request",
            lambda cr: cr.is_open,
            "Close the request: its link stops working",
        ),
    )
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

    class Media:
        js = ["fleet/consent_form.js"]  # shows the fields of the chosen kind

    ADD_FIELDSETS = [
        (None, {"fields": ["workspace", "kind"]}),
        (
            "Whose consent",
            {
                "fields": ["mailbox", "address"],
                "classes": ["fleet-kind-user", "fleet-kind-external"],
                "description": "User and external consent: pick the mailbox, or type its address.",
            },
        ),
        (
            "Admin consent",
            {"fields": ["credential"], "classes": ["fleet-kind-admin"]},
        ),
        (
            "External consent",
            {"fields": ["consent_url"], "classes": ["fleet-kind-external"]},
        ),
        ("Request data", {"fields": ["data"]}),
    ]

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.ADD_FIELDSETS
        return super().get_fieldsets(request, obj)

    def do_complete(self, request, consent_request):
        consent.complete_by_hand(consent_request, request.user, "admin")
        self.message_user(request, f"{consent_request} marked completed.", messages.SUCCESS)

    def do_cancel(self, request, consent_request):
        consent.cancel(consent_request, request.user, "admin")
        self.message_user(request, f"{consent_request} cancelled; its link no longer works.")

    @admin.display(description="id")
    def uid_short(self, obj):
        return copyable(str(obj.uid))

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

    @admin.display(description="mailbox or tenant", ordering="mailbox__email")
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
            consent.complete_by_hand(cr, request.user, "admin")
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
        done = sum(consent.cancel(cr, request.user, "admin") for cr in self.scoped(request, queryset, Role.OPERATOR))
        self.message_user(request, f"{done} consent request(s) cancelled.")

    @admin.action(description="Download consent links as CSV")
    def download_links(self, request, queryset):
        return links_csv(self.scoped(request, queryset, Role.VIEWER).select_related("mailbox"))
