"""Secrets at rest: a model field on cryptography's MultiFernet, and the guards that keep
decrypted values out of HTML, logs and error pages.

The keys come from FIELD_ENCRYPTION_KEYS (never SECRET_KEY): the first key encrypts, every key
decrypts, so a new key is added in front and `manage.py reencrypt_secrets` moves old rows to it.
"""

from __future__ import annotations

import re
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django import forms
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils.html import format_html
from django.views.debug import SafeExceptionReporterFilter

MASK = "********"


class Secret(str):
    """A decrypted secret: behaves as the string, but its repr is masked, so that debug pages,
    `pprint`ed locals and `%r` log lines show asterisks instead of the value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)


class Ciphertext(str):
    """Already-encrypted text: saved as it is (used by key rotation)."""

    __slots__ = ()

    @property
    def ciphertext(self) -> str:
        return str.__str__(self)


class UnreadableSecret(Ciphertext):
    """Stands in for a value that none of the configured keys decrypts. It reads as empty (so it
    is never used as a password) and saves back its original ciphertext (so nothing is lost
    while the right key is missing)."""

    __slots__ = ("_ciphertext",)

    def __new__(cls, ciphertext: str) -> UnreadableSecret:
        obj = super().__new__(cls, "")
        obj._ciphertext = ciphertext
        return obj

    @property
    def ciphertext(self) -> str:
        return self._ciphertext

    def __repr__(self) -> str:
        return "<unreadable secret>"


class SecretKeyError(ImproperlyConfigured):
    pass


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise SecretKeyError("FIELD_ENCRYPTION_KEYS is empty: set at least one Fernet key.")
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.strip().encode()))
        except (ValueError, TypeError) as exc:
            raise SecretKeyError(
                f"FIELD_ENCRYPTION_KEYS: key #{position} is not a Fernet key "
                "(32 url-safe base64-encoded bytes; generate one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)."
            ) from exc
    return MultiFernet(fernets)


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> Secret | UnreadableSecret:
    try:
        return Secret(fernet().decrypt(token.encode()).decode())
    except InvalidToken:
        return UnreadableSecret(token)


def encrypted_fields() -> list[tuple[type, str]]:
    """Every (model, field name) that holds a secret."""
    from django.apps import apps

    return [
        (model, field.attname)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField)
    ]


def is_unreadable(value: object) -> bool:
    return isinstance(value, UnreadableSecret)


class ClearSecret:
    """What the write-only widget returns when its 'clear' box is ticked."""


CLEAR = ClearSecret()


class WriteOnlySecretWidget(forms.PasswordInput):
    """Never renders the stored value: it says "set" or "not set" and takes a new value."""

    template_name = "fleet/widgets/write_only_secret.html"

    def __init__(self, attrs=None):
        super().__init__(
            attrs={"autocomplete": "new-password", **(attrs or {})}, render_value=False
        )

    def get_context(self, name, value, attrs):
        context = super().get_context(name, None, attrs)
        context["widget"]["is_set"] = bool(value) or is_unreadable(value)
        context["widget"]["unreadable"] = is_unreadable(value)
        context["widget"]["clear_name"] = f"{name}__clear"
        return context

    def value_from_datadict(self, data, files, name):
        if data.get(f"{name}__clear"):
            return CLEAR
        return super().value_from_datadict(data, files, name)


class WriteOnlySecretFormField(forms.CharField):
    widget = WriteOnlySecretWidget

    def __init__(self, *args, **kwargs):
        # Whatever widget a caller (e.g. the admin's TextField default) asks for, a secret is
        # only ever rendered by the write-only widget.
        kwargs["widget"] = WriteOnlySecretWidget
        kwargs["required"] = False
        kwargs.setdefault("strip", False)
        kwargs.setdefault("help_text", "Write-only: leave blank to keep the stored value.")
        super().__init__(*args, **kwargs)

    def to_python(self, value):
        if value is CLEAR:
            return value
        return super().to_python(value)

    def has_changed(self, initial, data):
        return data is CLEAR or bool(data)


class EncryptedTextField(models.TextField):
    """Stores Fernet ciphertext; Python code sees a `Secret` (or `UnreadableSecret`), forms see a
    write-only input. Blank in a form keeps the stored value; the 'clear' box removes it."""

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return decrypt(value)

    def to_python(self, value):
        return value

    def get_prep_value(self, value):
        # Ciphertext first: an UnreadableSecret compares equal to "" but must keep what it holds.
        if isinstance(value, Ciphertext):
            return value.ciphertext
        if value is None or value == "":
            return value
        return encrypt(str(value))

    def value_to_string(self, obj):
        # Serialization (dumpdata, exports) never carries the secret.
        return ""

    def formfield(self, **kwargs):
        return super().formfield(**{"form_class": WriteOnlySecretFormField, **kwargs})

    def save_form_data(self, instance, data):
        if data is CLEAR:
            setattr(instance, self.attname, "")
        elif data:
            setattr(instance, self.attname, data)
        # blank: keep what is stored


def secret_status(value: object) -> str:
    """For list columns and read-only pages: whether a secret is set, never what it is."""
    if is_unreadable(value):
        return format_html('<span class="fleet-badge fleet-badge-error">{}</span>', "unreadable")
    if value:
        return format_html('<span class="fleet-badge fleet-badge-ok">{}</span>', "set")
    return format_html('<span class="fleet-badge">{}</span>', "not set")


class SecretsExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's safe filter, widened to every setting and POST field that can carry a secret."""

    hidden_settings = re.compile(
        "API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|DATABASE_URL|ENCRYPTION", flags=re.I
    )
    sensitive_post = re.compile("pass|secret|token|totp|key|code_verifier", flags=re.I)

    def get_post_parameters(self, request):
        params = super().get_post_parameters(request)
        if request is None:
            return params
        params = params.copy()
        for name in list(params):
            if self.sensitive_post.search(name):
                params[name] = self.cleansed_substitute
        return params
