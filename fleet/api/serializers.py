"""What the API shows and accepts. Secrets are write-only everywhere: answers say whether one is
set (`…_set: true`), never what it is."""

from __future__ import annotations

from django.utils.text import slugify
from rest_framework import serializers

from fleet import access, errors
from fleet.models import Credential, Mailbox, Role, Workspace
from fleet.secrets import is_unreadable

# Database ids are 64-bit: a larger number can name nothing (and must not reach the database).
MAX_ID = 2**63 - 1


class ErrorRefSerializer(serializers.Serializer):
    """A catalogue error as attached to an object (mailbox, credential)."""

    # Read from the object's `code_attr` and `message_attr`; null when it has no error.

    code = serializers.CharField()
    message = serializers.CharField()
    hint = serializers.CharField()

    def __init__(self, *args, code_attr: str = "error_code", message_attr="error_message", **kw):
        self.code_attr, self.message_attr = code_attr, message_attr
        super().__init__(*args, **kw)

    def get_attribute(self, instance):
        return error_ref(getattr(instance, self.code_attr), getattr(instance, self.message_attr))


def error_ref(code: str, message: str = "") -> dict | None:
    entry = errors.get(code)
    if entry is None:
        return None if not code else {"code": code, "message": message or code, "hint": ""}
    return {"code": entry.code, "message": message or entry.message, "hint": entry.hint}


def is_set(obj, field: str) -> bool:
    """Whether a secret is stored, from the `<field>_is_set` annotation when the query has it
    (so that the secret is never loaded), else from the value."""
    annotated = getattr(obj, f"{field}_is_set", None)
    if annotated is not None:
        return bool(annotated)
    value = getattr(obj, field)
    return bool(value) or is_unreadable(value)


class SecretSetField(serializers.BooleanField):
    """Whether the object's `secret` is set; never the secret."""

    def __init__(self, secret: str, **kwargs):
        self.secret = secret
        super().__init__(read_only=True, **kwargs)

    def get_attribute(self, instance) -> bool:
        return is_set(instance, self.secret)


class BlankAsNullChoiceField(serializers.ChoiceField):
    """A choice that is null (not "") while unset."""

    def to_representation(self, value):
        return super().to_representation(value) or None


# --- Workspaces ----------------------------------------------------------------------------------


class WebhookSerializer(serializers.Serializer):
    url = serializers.CharField(source="webhook_url", allow_blank=True)
    secret_set = SecretSetField("webhook_secret")
    enabled = serializers.BooleanField(
        source="webhooks_on", help_text="False once the receiver answered 410 Gone."
    )
    disabled_reason = serializers.CharField(source="webhook_disabled_reason", allow_blank=True)


class KeyRoleField(serializers.ChoiceField):
    """The calling key's role in the workspace shown."""

    def get_attribute(self, workspace: Workspace) -> str | None:
        return access.key_role(self.context["request"].auth, workspace.pk)


class WorkspaceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    role = KeyRoleField(
        choices=Role.choices, allow_null=True, help_text="What the calling key may do here."
    )
    webhook = WebhookSerializer(source="*")
    health_check_interval_hours = serializers.SerializerMethodField(
        help_text="How often every mailbox is tested (hours)."
    )
    created_at = serializers.DateTimeField()

    def get_health_check_interval_hours(self, workspace) -> float:
        return workspace.health_check_interval.total_seconds() / 3600


class WorkspaceWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(
        max_length=64, required=False, help_text="Defaults to a slug of the name."
    )
    health_check_interval_hours = serializers.FloatField(
        min_value=1,
        max_value=90 * 24,
        required=False,
        help_text="How often every mailbox is tested: 1 hour to 90 days (default 24).",
    )

    def validate(self, attrs):
        from datetime import timedelta

        if "health_check_interval_hours" in attrs:
            hours = attrs.pop("health_check_interval_hours")
            attrs["health_check_interval"] = timedelta(seconds=round(hours * 3600))
        if "slug" not in attrs and "name" in attrs and self.instance is None:
            attrs["slug"] = slugify(attrs["name"])[:64]
            if not attrs["slug"]:
                raise serializers.ValidationError({"slug": ["Give a slug: the name has none."]})
        slug = attrs.get("slug")
        if slug is not None:
            taken = Workspace.objects.filter(slug=slug)
            if self.instance is not None:
                taken = taken.exclude(pk=self.instance.pk)
            if taken.exists():
                raise serializers.ValidationError(
                    {"slug": ["A workspace with this slug already exists."]}
                )
        return attrs


class WebhookWriteSerializer(serializers.Serializer):
    url = serializers.URLField(
        max_length=500, allow_blank=True, help_text="Empty turns webhooks off."
    )
    secret = serializers.CharField(
        max_length=500,
        required=False,
        write_only=True,
        trim_whitespace=False,
        help_text="Signing secret (write-only). Required with a URL unless one is set already.",
    )


# --- Mailboxes -----------------------------------------------------------------------------------


class MailboxSerializer(serializers.ModelSerializer):
    workspace_id = serializers.IntegerField()
    domain = serializers.CharField()
    error = ErrorRefSerializer(allow_null=True)
    password_set = SecretSetField("password")
    totp_secret_set = SecretSetField("totp_secret")
    oauth_connected = SecretSetField(
        "refresh_token", help_text="Whether a refresh token is stored."
    )
    tags = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = Mailbox
        fields = [
            "id",
            "uid",
            "workspace_id",
            "email",
            "domain",
            "display_name",
            "provider",
            "auth_method",
            "status",
            "error",
            "smtp_host",
            "smtp_port",
            "smtp_security",
            "imap_host",
            "imap_port",
            "imap_security",
            "password_set",
            "totp_secret_set",
            "oauth_connected",
            "token_expires_at",
            "tags",
            "warmup_status",
            "warmup_daily_volume",
            "warmup_response_rate",
            "spf_correct",
            "dkim_correct",
            "last_checked_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class MailboxSelectionSerializer(serializers.Serializer):
    """Which mailboxes a bulk call acts on (all filters optional, combined with AND)."""

    workspace_id = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    status = serializers.ChoiceField(choices=Mailbox.Status.choices, required=False)
    tag = serializers.CharField(max_length=64, required=False)
    error_code = serializers.CharField(max_length=64, required=False)
    warmup_status = serializers.ChoiceField(choices=Mailbox.Warmup.choices, required=False)


class MailboxFilterSerializer(serializers.Serializer):
    workspace_id = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    status = serializers.ChoiceField(choices=Mailbox.Status.choices, required=False)
    tag = serializers.CharField(max_length=64, required=False)
    error_code = serializers.CharField(max_length=64, required=False)
    warmup_status = serializers.ChoiceField(choices=Mailbox.Warmup.choices, required=False)
    cursor = serializers.CharField(required=False, max_length=500)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200)


class TagNameField(serializers.CharField):
    def __init__(self, **kwargs):
        super().__init__(max_length=64, min_length=1, **kwargs)


class MailboxUpdateSerializer(serializers.Serializer):
    display_name = serializers.CharField(max_length=255, allow_blank=True, required=False)
    tags = serializers.ListField(
        child=TagNameField(),
        max_length=50,
        required=False,
        help_text="Replaces the mailbox's tags; unknown names are created in its workspace.",
    )
    warmup_daily_volume = serializers.IntegerField(min_value=0, max_value=2000, required=False)
    warmup_response_rate = serializers.IntegerField(min_value=0, max_value=100, required=False)


# --- Credentials ---------------------------------------------------------------------------------


class CredentialSerializer(serializers.ModelSerializer):
    workspace_id = serializers.IntegerField()
    client_secret_set = SecretSetField("client_secret")
    redirect_uri = serializers.CharField(allow_blank=True)
    last_error = ErrorRefSerializer(
        allow_null=True, code_attr="last_error", message_attr="last_error_message"
    )

    class Meta:
        model = Credential
        fields = [
            "id",
            "workspace_id",
            "name",
            "kind",
            "tenant_id",
            "client_id",
            "client_secret_set",
            "secret_expires_at",
            "redirect_uri",
            "status",
            "last_verified_at",
            "last_error",
            "created_at",
        ]
        read_only_fields = fields


class CredentialCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=Credential.Kind.choices)
    tenant_id = serializers.CharField(max_length=100, required=False, default="organizations")
    client_id = serializers.CharField(max_length=100)
    client_secret = serializers.CharField(max_length=2000, write_only=True, trim_whitespace=False)
    secret_expires_at = serializers.DateField(required=False, allow_null=True)
    redirect_uri = serializers.URLField(max_length=500, required=False, allow_blank=True)


class AlertSettingsSerializer(serializers.Serializer):
    """The key's user's alert e-mails in one workspace (their Membership)."""

    workspace_id = serializers.IntegerField(read_only=True)
    role = serializers.CharField(read_only=True)
    alert_emails = serializers.BooleanField(
        help_text="Whether this workspace's disconnect digests are e-mailed to you."
    )
    receives_digests = serializers.SerializerMethodField(
        help_text="True when digests reach you: manager or owner, an e-mail address, not opted out."
    )

    def get_receives_digests(self, membership) -> bool:
        return bool(
            membership.alert_emails
            and membership.user.email
            and Role.includes(membership.role, Role.MANAGER)
        )


class AlertSettingsWriteSerializer(serializers.Serializer):
    alert_emails = serializers.BooleanField()
