"""What the API shows and accepts. Secrets are write-only everywhere: answers say whether one is
set (`…_set: true`), never what it is."""

from __future__ import annotations

from django.utils.text import slugify
from rest_framework import serializers

from fleet import errors
from fleet.models import Credential, Mailbox, Role, Workspace
from fleet.secrets import is_unreadable

# Database ids are 64-bit: a larger number can name nothing (and must not reach the database).
MAX_ID = 2**63 - 1


class ErrorRefSerializer(serializers.Serializer):
    """A catalogue error as attached to an object (mailbox, credential)."""

    code = serializers.CharField()
    message = serializers.CharField()
    hint = serializers.CharField()


def error_ref(code: str, message: str = "") -> dict | None:
    entry = errors.get(code)
    if entry is None:
        return None if not code else {"code": code, "message": message or code, "hint": ""}
    return {"code": entry.code, "message": message or entry.message, "hint": entry.hint}


# --- Workspaces ----------------------------------------------------------------------------------


class WebhookSerializer(serializers.Serializer):
    url = serializers.CharField(allow_blank=True)
    secret_set = serializers.BooleanField()
    enabled = serializers.BooleanField(help_text="False once the receiver answered 410 Gone.")
    disabled_reason = serializers.CharField(allow_blank=True)


def webhook_data(workspace: Workspace) -> dict:
    return {
        "url": workspace.webhook_url,
        "secret_set": is_set(workspace, "webhook_secret"),
        "enabled": workspace.webhooks_on,
        "disabled_reason": workspace.webhook_disabled_reason,
    }


class WorkspaceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    role = serializers.ChoiceField(
        choices=Role.choices, allow_null=True, help_text="What the calling key may do here."
    )
    webhook = WebhookSerializer()
    created_at = serializers.DateTimeField()


def workspace_data(workspace: Workspace, key) -> dict:
    return {
        "id": workspace.pk,
        "name": workspace.name,
        "slug": workspace.slug,
        "role": key.role_in(workspace.pk),
        "webhook": webhook_data(workspace),
        "created_at": serializers.DateTimeField().to_representation(workspace.created_at),
    }


class WorkspaceWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(
        max_length=64, required=False, help_text="Defaults to a slug of the name."
    )

    def validate(self, attrs):
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


class MailboxSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    uid = serializers.UUIDField()
    workspace_id = serializers.IntegerField()
    email = serializers.EmailField()
    domain = serializers.CharField()
    display_name = serializers.CharField(allow_blank=True)
    provider = serializers.ChoiceField(choices=Mailbox.Provider.choices)
    auth_method = serializers.ChoiceField(choices=Mailbox.AuthMethod.choices)
    status = serializers.ChoiceField(choices=Mailbox.Status.choices)
    error = ErrorRefSerializer(allow_null=True)
    smtp_host = serializers.CharField()
    smtp_port = serializers.IntegerField()
    smtp_security = serializers.ChoiceField(choices=Mailbox.Security.choices)
    imap_host = serializers.CharField()
    imap_port = serializers.IntegerField()
    imap_security = serializers.ChoiceField(choices=Mailbox.Security.choices)
    password_set = serializers.BooleanField()
    totp_secret_set = serializers.BooleanField()
    oauth_connected = serializers.BooleanField(help_text="Whether a refresh token is stored.")
    token_expires_at = serializers.DateTimeField(allow_null=True)
    tags = serializers.ListField(child=serializers.CharField())
    warmup_status = serializers.ChoiceField(choices=Mailbox.Warmup.choices)
    warmup_daily_volume = serializers.IntegerField()
    warmup_response_rate = serializers.IntegerField()
    spf_correct = serializers.BooleanField(allow_null=True)
    dkim_correct = serializers.BooleanField(allow_null=True)
    last_checked_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def is_set(obj, field: str) -> bool:
    """Whether a secret is stored, from the `<field>_is_set` annotation when the query has it
    (so that the secret is never loaded), else from the value."""
    annotated = getattr(obj, f"{field}_is_set", None)
    if annotated is not None:
        return bool(annotated)
    value = getattr(obj, field)
    return bool(value) or is_unreadable(value)


def mailbox_data(mailbox: Mailbox) -> dict:
    """One mailbox; call with `tags` prefetched when serializing many."""
    dt = serializers.DateTimeField()

    def when(value):
        return dt.to_representation(value) if value else None

    return {
        "id": mailbox.pk,
        "uid": str(mailbox.uid),
        "workspace_id": mailbox.workspace_id,
        "email": mailbox.email,
        "domain": mailbox.domain,
        "display_name": mailbox.display_name,
        "provider": mailbox.provider,
        "auth_method": mailbox.auth_method,
        "status": mailbox.status,
        "error": error_ref(mailbox.error_code, mailbox.error_message),
        "smtp_host": mailbox.smtp_host,
        "smtp_port": mailbox.smtp_port,
        "smtp_security": mailbox.smtp_security,
        "imap_host": mailbox.imap_host,
        "imap_port": mailbox.imap_port,
        "imap_security": mailbox.imap_security,
        "password_set": is_set(mailbox, "password"),
        "totp_secret_set": is_set(mailbox, "totp_secret"),
        "oauth_connected": is_set(mailbox, "refresh_token"),
        "token_expires_at": when(mailbox.token_expires_at),
        "tags": [tag.name for tag in mailbox.tags.all()],
        "warmup_status": mailbox.warmup_status,
        "warmup_daily_volume": mailbox.warmup_daily_volume,
        "warmup_response_rate": mailbox.warmup_response_rate,
        "spf_correct": mailbox.spf_correct,
        "dkim_correct": mailbox.dkim_correct,
        "last_checked_at": when(mailbox.last_checked_at),
        "created_at": when(mailbox.created_at),
        "updated_at": when(mailbox.updated_at),
    }


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


class CredentialSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    workspace_id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=Credential.Kind.choices)
    tenant_id = serializers.CharField()
    client_id = serializers.CharField()
    client_secret_set = serializers.BooleanField()
    secret_expires_at = serializers.DateField(allow_null=True)
    redirect_uri = serializers.CharField(allow_blank=True)
    status = serializers.ChoiceField(choices=Credential.Status.choices)
    last_verified_at = serializers.DateTimeField(allow_null=True)
    last_error = ErrorRefSerializer(allow_null=True)
    created_at = serializers.DateTimeField()


def credential_data(credential: Credential) -> dict:
    dt = serializers.DateTimeField()
    return {
        "id": credential.pk,
        "workspace_id": credential.workspace_id,
        "name": credential.name,
        "kind": credential.kind,
        "tenant_id": credential.tenant_id,
        "client_id": credential.client_id,
        "client_secret_set": is_set(credential, "client_secret"),
        "secret_expires_at": (
            credential.secret_expires_at.isoformat() if credential.secret_expires_at else None
        ),
        "redirect_uri": credential.redirect_uri,
        "status": credential.status,
        "last_verified_at": (
            dt.to_representation(credential.last_verified_at)
            if credential.last_verified_at
            else None
        ),
        "last_error": error_ref(credential.last_error, credential.last_error_message),
        "created_at": dt.to_representation(credential.created_at),
    }


class CredentialCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=Credential.Kind.choices)
    tenant_id = serializers.CharField(max_length=100, required=False, default="organizations")
    client_id = serializers.CharField(max_length=100)
    client_secret = serializers.CharField(max_length=2000, write_only=True, trim_whitespace=False)
    secret_expires_at = serializers.DateField(required=False, allow_null=True)
    redirect_uri = serializers.URLField(max_length=500, required=False, allow_blank=True)
