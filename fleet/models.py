"""Fleet's data: workspaces and their members, Microsoft credentials, mailboxes, tags, consent
requests and the mailbox history. Every model that belongs to a workspace is reached through
`Model.objects.restrict(user, role)`, the one place tenant scoping is decided."""

from __future__ import annotations

import hashlib
import secrets
import string
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.db.models.functions import Lower, StrIndex, Substr, Upper
from django.utils import timezone

from fleet import errors
from fleet.inserts import insert_many
from fleet.secrets import EncryptedTextField


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    MANAGER = "manager", "Manager"
    OWNER = "owner", "Owner"

    # The ordering primitives; who holds which role is decided in fleet/access.py.
    @classmethod
    def rank(cls, role: str | None) -> int:
        """0 for no role, then 1 (viewer) … 4 (owner): roles are ordered viewer < … < owner."""
        return cls.values.index(role) + 1 if role else 0

    @classmethod
    def at_least(cls, role: str) -> list[str]:
        """The roles that include `role`'s rights."""
        return cls.values[cls.rank(role) - 1 :]

    @classmethod
    def up_to(cls, role: str | None) -> list[str]:
        """The roles no higher than `role` (none for no role): what its holder may hand on."""
        return cls.values[: cls.rank(role)]

    @classmethod
    def includes(cls, held: str | None, needed: str) -> bool:
        """Whether holding `held` (None: no role) gives `needed`'s rights."""
        return held is not None and cls.rank(held) >= cls.rank(needed)

    @classmethod
    def lower_of(cls, a: str | None, b: str | None) -> str | None:
        """The lesser of two roles; None when either is None."""
        if a is None or b is None:
            return None
        return a if cls.rank(a) <= cls.rank(b) else b


class ScopedQuerySet(models.QuerySet):
    """The single tenant-scoping rule: a user reaches the rows of the workspaces where they hold
    at least `role`; superusers reach everything; anonymous users nothing."""

    def restrict(self, user, role: str = Role.VIEWER) -> ScopedQuerySet:
        if user is None or not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self
        workspace_ids = Membership.objects.filter(
            user_id=user.pk, role__in=Role.at_least(role)
        ).values("workspace_id")
        return self.filter(**{f"{self.model.workspace_lookup}__in": workspace_ids})


class Leased(models.Model):
    """Work a task holds while it runs (fleet/leases.py). django-tasks-db never reclaims the task
    of a worker that died, so the lease on the job's own row is the truth: `lease_owner` is the
    id of the task (DBTaskResult) holding it, renewed by a heartbeat until `lease_expires_at`; the
    reaper takes back what a dead worker held and hands it to a new task."""

    lease_owner = models.CharField(max_length=64, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    lease_reclaims = models.PositiveSmallIntegerField(
        default=0, editable=False, help_text="Times the reaper took this back from a dead worker."
    )

    class Meta:
        abstract = True


def default_health_check_interval() -> timedelta:
    """A new workspace's health-sweep cadence: HEALTH_CHECK_INTERVAL_HOURS (fleet/health.py)."""
    return timedelta(hours=settings.HEALTH_CHECK_INTERVAL_HOURS)


# The shortest cadence a workspace may choose: one test per mailbox per hour.
MIN_HEALTH_CHECK_INTERVAL = timedelta(hours=1)


def validate_health_check_interval(value: timedelta) -> None:
    from django.core.exceptions import ValidationError

    if value is None or value < MIN_HEALTH_CHECK_INTERVAL:
        raise ValidationError("The health check interval must be at least 1 hour.")
    if value > timedelta(days=90):
        raise ValidationError("The health check interval must be at most 90 days.")


class Workspace(models.Model):
    """An agency client: its mailboxes, credentials and members live inside it."""

    workspace_lookup = "pk"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    webhook_url = models.URLField(blank=True, max_length=500)
    webhook_secret = EncryptedTextField(
        blank=True, help_text="Signs every delivery (HMAC-SHA256); receivers verify with it."
    )
    # Cleared when the receiver answers 410 Gone; saving a URL again turns it back on.
    webhook_enabled = models.BooleanField(default=True)
    webhook_disabled_reason = models.CharField(max_length=200, blank=True)
    # Every mailbox that is not disabled is tested once per interval (fleet/health.py).
    health_check_interval = models.DurationField(
        default=default_health_check_interval,
        validators=[validate_health_check_interval],
        help_text="How often every mailbox is tested (at least 1 hour), e.g. 24:00:00 for daily.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.webhook_url and not self.webhook_secret:
            raise ValidationError(
                {"webhook_secret": "Set a signing secret: receivers need it to verify deliveries."}
            )

    def reenable_webhook(self) -> None:
        """A new webhook address or secret is the owner's answer to a 410: deliver again."""
        self.webhook_enabled = True
        self.webhook_disabled_reason = ""

    @property
    def webhooks_on(self) -> bool:
        return bool(self.webhook_url and self.webhook_enabled)


class Membership(models.Model):
    workspace_lookup = "workspace"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="fleet_memberships"
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    # Managers and owners get the workspace's disconnect digests (fleet/alerts.py) unless they
    # turn this off; members change it for themselves, managers for anyone in the workspace.
    alert_emails = models.BooleanField(
        "alert e-mails",
        default=True,
        help_text="E-mail me a digest when this workspace's mailboxes disconnect or come back "
        "(managers and owners with an e-mail address).",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "workspace"], name="membership_unique_user"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} — {self.get_role_display()} of {self.workspace}"


class CredentialKind(models.TextChoices):
    OAUTH_APP = "oauth_app", "OAuth app (delegated consent)"
    GRAPH_APP_ONLY = "graph_app_only", "Graph app-only (client credentials)"


class CredentialStatus(models.TextChoices):
    UNVERIFIED = "unverified", "Unverified"
    VALID = "valid", "Valid"
    INVALID = "invalid", "Invalid"


class Credential(Leased):
    """A Microsoft Entra ID app registration used by one workspace. A verification asked for
    (`verification_requested_at`) is held by its task's lease until it is recorded."""

    workspace_lookup = "workspace"
    SECRET_EXPIRY_WARNING_DAYS = 30

    Kind = CredentialKind

    Status = CredentialStatus

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="credentials")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # A tenant GUID or domain, or `organizations` / `common` for multi-tenant delegated apps.
    tenant_id = models.CharField(max_length=100, default="organizations")
    client_id = models.CharField(max_length=100)
    client_secret = EncryptedTextField(blank=True)
    secret_expires_at = models.DateField(null=True, blank=True)
    redirect_uri = models.URLField(blank=True, max_length=500)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNVERIFIED)
    last_verified_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=64, blank=True)
    last_error_message = models.TextField(blank=True)
    # When a tenant administrator granted consent through Fleet's admin-consent link.
    admin_consented_at = models.DateTimeField(null=True, blank=True)
    # What Verify found the app may do, by calls that need each permission (fleet/credentials.py):
    # {"User.Read.All": true, "IMAP.AccessAsApp": false, …}; null where it could not be tried.
    permissions = models.JSONField(default=dict, blank=True, editable=False)
    # The tenant's GUID, from the OpenID configuration of `tenant_id` (which may be a domain).
    tenant_guid = models.CharField(max_length=36, blank=True, editable=False)
    # Set when a verification is asked for, cleared once its outcome is recorded.
    verification_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = ScopedQuerySet.as_manager()

    EXCHANGE_PERMISSIONS = ("IMAP.AccessAsApp", "SMTP.SendAsApp")
    GRAPH_PERMISSIONS = ("User.Read.All", "MailboxSettings.Read")

    class Meta:
        ordering = ["workspace", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=CredentialKind.values), name="credential_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=CredentialStatus.values), name="credential_status_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["workspace", "kind", "status"], name="credential_ws_kind_status")
        ]

    def __str__(self) -> str:
        # "Sandbox app (Graph app-only)": the kind's label without its own parenthesis.
        return f"{self.name} ({self.kind_short})"

    @property
    def kind_short(self) -> str:
        return self.get_kind_display().split(" (")[0]

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.kind == CredentialKind.GRAPH_APP_ONLY and not self.secret_expires_at:
            # Entra ID secrets expire (at most 2 years): the date drives the expiry warning.
            raise ValidationError(
                {
                    "secret_expires_at": "Required for Graph app-only credentials: the "
                    "Expires date shown next to the secret in Entra ID → Certificates & secrets."
                }
            )

    @property
    def has_exchange_roles(self) -> bool:
        """Holds both Exchange Online application permissions (app-only SMTP and IMAP)."""
        return all(self.permissions.get(p) is True for p in self.EXCHANGE_PERMISSIONS)

    @property
    def missing_permissions(self) -> list[str]:
        return [p for p, held in self.permissions.items() if held is False]

    @property
    def secret_expires_soon(self) -> bool:
        """Expires within SECRET_EXPIRY_WARNING_DAYS, or already has (see secret_expiring_q)."""
        limit = timezone.localdate() + timedelta(days=self.SECRET_EXPIRY_WARNING_DAYS)
        return self.secret_expires_at is not None and self.secret_expires_at <= limit

    @classmethod
    def secret_expiring_q(cls) -> Q:
        """Secrets that expire within SECRET_EXPIRY_WARNING_DAYS, or already have."""
        limit = timezone.localdate() + timedelta(days=cls.SECRET_EXPIRY_WARNING_DAYS)
        return Q(secret_expires_at__lte=limit)


class Tag(models.Model):
    workspace_lookup = "workspace"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=64)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), "workspace", name="tag_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class Provider(models.TextChoices):
    MICROSOFT365 = "microsoft365", "Microsoft 365"
    OUTLOOK_COM = "outlook_com", "Outlook.com"


class AuthMethod(models.TextChoices):
    OAUTH = "oauth", "OAuth"
    APP_PASSWORD = "app_password", "App password"
    GRAPH_APP_ONLY = "graph_app_only", "Graph app-only"


class MailboxStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACTIVE = "active", "Active"
    ERROR = "error", "Error"
    REAUTH_REQUIRED = "reauth_required", "Reauth required"
    DISABLED = "disabled", "Disabled"


class Security(models.TextChoices):
    STARTTLS = "starttls", "STARTTLS"
    SSL = "ssl", "SSL/TLS"


class WarmupStatus(models.TextChoices):
    NOT_STARTED = "not_started", "Not started"
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"


class Mailbox(models.Model):
    workspace_lookup = "workspace"

    Provider = Provider

    AuthMethod = AuthMethod

    Status = MailboxStatus

    Security = Security

    Warmup = WarmupStatus

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="mailboxes")
    email = models.EmailField(max_length=254)
    # Derived in the database so that "all mailboxes of a domain" is an indexed equality filter.
    domain = models.GeneratedField(
        expression=Lower(Substr("email", StrIndex("email", models.Value("@")) + 1)),
        output_field=models.CharField(max_length=254),
        db_persist=True,
    )
    display_name = models.CharField(max_length=255, blank=True)
    provider = models.CharField(
        max_length=16, choices=Provider.choices, default=Provider.MICROSOFT365
    )
    auth_method = models.CharField(max_length=16, choices=AuthMethod.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)

    smtp_host = models.CharField(max_length=255, default="smtp.office365.com")
    smtp_port = models.PositiveIntegerField(default=587)
    smtp_security = models.CharField(
        max_length=10, choices=Security.choices, default=Security.STARTTLS
    )
    imap_host = models.CharField(max_length=255, default="outlook.office365.com")
    imap_port = models.PositiveIntegerField(default=993)
    imap_security = models.CharField(max_length=10, choices=Security.choices, default=Security.SSL)

    password = EncryptedTextField(blank=True)
    totp_secret = EncryptedTextField(blank=True)
    refresh_token = EncryptedTextField(blank=True)
    access_token = EncryptedTextField(blank=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    # Token upkeep (fleet/microsoft/identity.py, fleet/tokens.py). A refresh holds a lease on the
    # row instead of a transaction across the HTTP call: `token_lease_owner` is the refresh (or
    # the keep-alive task) redeeming the refresh token now, until `token_lease_expires_at`.
    token_lease_owner = models.CharField(max_length=64, blank=True, editable=False)
    token_lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When the refresh token was last redeemed (or granted), and when the keep-alive refreshes it
    # if nothing else needed a token before then (TOKEN_KEEPALIVE_DAYS after, spread out).
    refresh_token_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    token_keepalive_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    graph_user_id = models.CharField(max_length=64, blank=True)
    # The app registration that holds this mailbox's OAuth grant (refresh tokens are bound to it).
    credential = models.ForeignKey(
        Credential, null=True, blank=True, on_delete=models.SET_NULL, related_name="mailboxes"
    )
    # Created by a consent nobody announced (Mailivery's Microsoft connect API): a manager confirms it was expected
    # before warmup may start.
    needs_approval = models.BooleanField(default=False)

    tags = models.ManyToManyField(Tag, blank=True, related_name="mailboxes")

    warmup_status = models.CharField(
        max_length=16, choices=Warmup.choices, default=Warmup.NOT_STARTED
    )
    warmup_daily_volume = models.PositiveIntegerField(
        default=20, validators=[MaxValueValidator(2000)]
    )
    warmup_response_rate = models.PositiveIntegerField(
        default=30, validators=[MaxValueValidator(100)]
    )
    spf_correct = models.BooleanField(null=True, blank=True)
    dkim_correct = models.BooleanField(null=True, blank=True)
    dmarc_correct = models.BooleanField(null=True, blank=True)
    dmarc_policy = models.CharField(max_length=16, blank=True)  # none | quarantine | reject
    mx_correct = models.BooleanField(null=True, blank=True)

    last_checked_at = models.DateTimeField(null=True, blank=True)
    # Connection tests live on the mailbox row (fleet/health.py): when the next one is due
    # (null: none scheduled yet), the task testing it now (a lease renewed by a heartbeat,
    # taken back by the reaper when its worker dies), who asked for it, and how many transient
    # failures in a row it has had (the third counts as a disconnect).
    check_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    check_lease_owner = models.CharField(max_length=64, blank=True, editable=False)
    check_lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    check_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    check_transient_failures = models.PositiveSmallIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["email"]
        verbose_name_plural = "mailboxes"
        constraints = [
            models.UniqueConstraint(Lower("email"), "workspace", name="mailbox_unique_email"),
            models.CheckConstraint(
                condition=Q(warmup_daily_volume__gte=0, warmup_daily_volume__lte=2000),
                name="mailbox_warmup_volume_range",
            ),
            models.CheckConstraint(
                condition=Q(warmup_response_rate__gte=0, warmup_response_rate__lte=100),
                name="mailbox_warmup_rate_range",
            ),
            models.CheckConstraint(
                condition=Q(status__in=MailboxStatus.values), name="mailbox_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(provider__in=Provider.values), name="mailbox_provider_valid"
            ),
            models.CheckConstraint(
                condition=Q(auth_method__in=AuthMethod.values), name="mailbox_auth_method_valid"
            ),
            models.CheckConstraint(
                condition=Q(warmup_status__in=WarmupStatus.values),
                name="mailbox_warmup_status_valid",
            ),
        ]
        indexes = [
            # The admin's default view: one workspace's mailboxes by status.
            models.Index(fields=["workspace", "status"], name="mailbox_ws_status"),
            # The status filter across workspaces (a superuser's list, a manager's several): its
            # capped count (CappedPaginator) reads 10,001 entries here instead of scanning.
            models.Index(fields=["status"], name="mailbox_status"),
            # "Which mailboxes fail with code X" (the error-code filter, its ranked choices, the
            # dashboard): only failing mailboxes are indexed, a small share of the fleet.
            models.Index(
                fields=["error_code"], name="mailbox_failing_code", condition=~Q(error_code="")
            ),
            models.Index(fields=["workspace", "warmup_status"], name="mailbox_ws_warmup"),
            # The admin's "=domain" search is iexact, i.e. UPPER(domain) = UPPER(%s): indexed as
            # that expression. Address and name searches (icontains) use the trigram indexes of
            # migrations 0002 and 0008 on PostgreSQL.
            models.Index(Upper("domain"), name="mailbox_domain_upper"),
            # The list's default order, ORDER BY email, id DESC LIMIT 100, read from the index
            # instead of sorting the whole fleet.
            models.Index(fields=["email", "-id"], name="mailbox_email_order"),
            # A bulk add matches Graph users to mailboxes by id as well as by address (a UPN and
            # a mail address of one user are one mailbox); only Graph mailboxes carry one.
            models.Index(
                fields=["workspace", "graph_user_id"],
                name="mailbox_ws_graph_user",
                condition=~Q(graph_user_id=""),
            ),
            # The keep-alive dispatcher reads the next due refresh tokens in due order, LIMIT a
            # chunk; only mailboxes with a refresh token to keep are indexed.
            models.Index(
                fields=["token_keepalive_due_at"],
                name="mailbox_token_keepalive_due",
                condition=Q(token_keepalive_due_at__isnull=False),
            ),
            # The reaper finds token leases of workers that died; only held leases are indexed.
            models.Index(
                fields=["token_lease_expires_at"],
                name="mailbox_token_lease",
                condition=~Q(token_lease_owner=""),
            ),
            # The health dispatcher's "what is due", oldest first, LIMIT a chunk; only
            # scheduled mailboxes are indexed.
            models.Index(
                fields=["check_due_at"],
                name="mailbox_check_due",
                condition=Q(check_due_at__isnull=False),
            ),
            # Mailboxes nobody scheduled yet (new since the last pass): the dispatcher gives
            # them their slot, a chunk at a time, without reading the rest of the fleet.
            models.Index(
                fields=["id"],
                name="mailbox_check_unscheduled",
                condition=Q(check_due_at__isnull=True) & ~Q(status="disabled"),
            ),
            # The dashboard's "never tested" (fleet/dashboard.py): few rows once a fleet is swept.
            models.Index(
                fields=["workspace"],
                name="mailbox_never_tested",
                condition=Q(last_checked_at__isnull=True),
            ),
            # The reaper's "whose test lease ran out".
            models.Index(
                fields=["check_lease_expires_at"],
                name="mailbox_check_lease",
                condition=Q(check_lease_expires_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return self.email

    @property
    def error(self) -> errors.ErrorCode | None:
        return errors.get(self.error_code)

    def admin_url(self) -> str:
        """The mailbox's page in the admin, absolute (FLEET_BASE_URL): for e-mails and webhooks,
        which are read outside any request."""
        from django.urls import reverse

        return settings.FLEET_BASE_URL + reverse("admin:fleet_mailbox_change", args=[self.pk])

    def webhook_data(self) -> dict:
        """How a mailbox appears in webhook payloads (and never with a secret)."""
        entry = self.error
        return {
            "uid": str(self.uid),
            "email": self.email,
            "display_name": self.display_name,
            "status": self.status,
            "auth_method": self.auth_method,
            "error": (
                {
                    "code": entry.code,
                    "message": self.error_message or entry.message,
                    "hint": entry.hint,
                }
                if entry
                else None
            ),
        }

    def set_status(
        self,
        status: str,
        error: errors.ErrorCode | None = None,
        message: str = "",
        actor=None,
        via: str = "",
    ) -> MailboxEvent:
        """Move to `status` (with an error code when it is an error), record the change and tell
        the workspace's webhook."""
        return type(self).set_status_many([self], status, error, message, actor, via)[0]

    @classmethod
    @transaction.atomic
    def set_status_many(
        cls,
        mailboxes: list[Mailbox],
        status: str,
        error: errors.ErrorCode | None = None,
        message: str = "",
        actor=None,
        via: str = "",
    ) -> list[MailboxEvent]:
        """`set_status` for many mailboxes at once (a bulk add's chunk): the same events and
        webhooks, in one INSERT and one UPDATE instead of two statements per mailbox. The one
        place a mailbox's status is written."""
        if not mailboxes:
            return []
        message = message or (error.message if error else "")
        events = insert_many(
            MailboxEvent(
                workspace_id=m.workspace_id,
                mailbox=m,
                email=m.email,
                kind=MailboxEvent.Kind.STATUS,
                from_status=m.status,
                to_status=status,
                error_code=error.code if error else "",
                message=message,
                actor=actor,
                via=via,
            )
            for m in mailboxes
        )
        now = timezone.now()
        cls.objects.filter(pk__in=[m.pk for m in mailboxes]).update(
            status=status,
            error_code=error.code if error else "",
            error_message=message if error else "",
            updated_at=now,
        )
        outbox: dict[int, tuple[Workspace, list[tuple[str, dict]]]] = {}
        alerts = []
        for m in mailboxes:
            previous, previous_code = m.status, m.error_code
            m.status, m.updated_at = status, now
            m.error_code = error.code if error else ""
            m.error_message = message if error else ""
            if previous == status:
                continue
            if m.workspace_id not in outbox:
                outbox[m.workspace_id] = (m.workspace, [])
            data = m.webhook_data()
            pending = outbox[m.workspace_id][1]
            pending.append(
                ("mailbox.status_changed", {"mailbox": data, "from": previous, "to": status})
            )
            alert = AlertItem.for_change(m, previous, previous_code, now)
            if alert is not None:
                alerts.append(alert)
                pending.append((alert.webhook_event, alert.webhook_data(data)))
        # Leaving `active` for an error, or coming back: a line for the workspace's digest
        # e-mail (fleet/alerts.py), in the same transaction as the change; one INSERT for all.
        AlertItem.objects.bulk_create(alerts)
        for workspace, pending in outbox.values():
            WebhookDelivery.objects.emit_many(workspace, pending)
        return events

    def note(self, message: str, actor=None, via: str = "", kind: str = "note") -> MailboxEvent:
        """A line in the mailbox's history that is not a status change."""
        return MailboxEvent.objects.create(
            workspace_id=self.workspace_id,
            mailbox=self,
            email=self.email,
            kind=kind,
            message=message,
            actor=actor,
            via=via,
        )


class ConsentKind(models.TextChoices):
    USER = "user", "User consent (OAuth)"
    ADMIN = "admin", "Tenant admin consent"
    EXTERNAL = "external", "External app consent"


class ConsentStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"


class ConsentRequest(models.Model):
    """A consent that has to happen: a user's OAuth consent, a tenant admin's consent, or a third
    party's consent link, tracked from `queued` to an end state."""

    workspace_lookup = "workspace"

    Kind = ConsentKind

    Status = ConsentStatus

    OPEN_STATUSES = (Status.QUEUED, Status.PENDING, Status.PROCESSING)
    EXPIRING_HOURS = 24

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="consent_requests"
    )
    mailbox = models.ForeignKey(
        Mailbox, null=True, blank=True, on_delete=models.SET_NULL, related_name="consent_requests"
    )
    credential = models.ForeignKey(
        Credential, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=64, blank=True)
    domain = models.CharField(max_length=253, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.USER)
    consent_url = models.URLField(max_length=2000, blank=True)
    request_data = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # The OAuth round trip in progress: sha256 of its `state` (single use: cleared when the
    # callback claims it), when it expires, and msal's flow (PKCE verifier, nonce) encrypted.
    oauth_state = models.CharField(max_length=64, null=True, blank=True, unique=True)
    state_expires_at = models.DateTimeField(null=True, blank=True)
    auth_flow = EncryptedTextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=ConsentStatus.values), name="consent_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=ConsentKind.values), name="consent_kind_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["workspace", "status"], name="consent_ws_status"),
            # The expiry task scans open requests by expiry time.
            models.Index(fields=["status", "expires_at"], name="consent_status_expiry"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.target}"

    @property
    def target(self) -> str:
        if self.mailbox_id:
            return self.mailbox.email
        if self.username:
            return f"{self.username}@{self.domain}"
        if self.kind == self.Kind.ADMIN and self.credential_id:
            return f"tenant of {self.credential.name}"
        return "a new mailbox"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES

    def set_status(
        self, status: str, error: errors.ErrorCode | None = None, message: str = ""
    ) -> None:
        """The one place a consent request changes status (webhooks hook in here)."""
        if status == self.status and not error and not self.error_code:
            return
        previous = self.status
        self.status = status
        self.error_code = error.code if error else ""
        self.error_message = (message or error.message) if error else ""
        fields = ["status", "error_code", "error_message", "updated_at"]
        if status == self.Status.COMPLETED:
            self.completed_at = timezone.now()
            fields.append("completed_at")
        if status not in self.OPEN_STATUSES:
            # An ended request keeps no OAuth round trip that could still be completed.
            self.oauth_state, self.auth_flow, self.state_expires_at = None, "", None
            fields += ["oauth_state", "auth_flow", "state_expires_at"]
        self.save(update_fields=fields)
        if previous != status:
            WebhookDelivery.objects.emit(
                self.workspace,
                "consent_request.status_changed",
                {
                    "uid": str(self.uid),
                    "kind": self.kind,
                    "mailbox_email": self.mailbox.email if self.mailbox_id else "",
                    "from": previous,
                    "to": status,
                    "error_code": self.error_code,
                },
            )

    @classmethod
    def open_q(cls) -> Q:
        return Q(status__in=cls.OPEN_STATUSES)

    @classmethod
    def expiring_q(cls) -> Q:
        """Still open, and expiring within EXPIRING_HOURS (or overdue for the expiry task)."""
        soon = timezone.now() + timedelta(hours=cls.EXPIRING_HOURS)
        return cls.open_q() & Q(expires_at__lte=soon)


class EventKind(models.TextChoices):
    STATUS = "status", "Status change"
    CONNECTION_TEST = "connection_test", "Connection test"
    TOTP_REVEAL = "totp_reveal", "TOTP code shown"
    NOTE = "note", "Note"


class MailboxEvent(models.Model):
    """History of a mailbox: status changes, connection tests, secret reveals. The audit trail and
    the source of the dashboard's trends, so it keeps the address when the mailbox is deleted."""

    workspace_lookup = "workspace"

    Kind = EventKind

    # A connection made: a mailbox became active. Lost: an active one fell into error or reauth.
    MADE = Q(kind=EventKind.STATUS, to_status=MailboxStatus.ACTIVE) & ~Q(
        from_status=MailboxStatus.ACTIVE
    )
    LOST = Q(
        kind=EventKind.STATUS,
        from_status=MailboxStatus.ACTIVE,
        to_status__in=[MailboxStatus.ERROR, MailboxStatus.REAUTH_REQUIRED],
    )

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="events")
    mailbox = models.ForeignKey(
        Mailbox, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    email = models.CharField(max_length=254)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.STATUS)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    message = models.TextField(blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Where it was started: "admin", "api" or "task" (blank: before this was recorded).
    via = models.CharField(max_length=8, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["mailbox", "-created_at"], name="event_mailbox_time"),
            # Dashboard trends: one workspace's events over the last 30 days.
            models.Index(fields=["workspace", "created_at"], name="event_ws_time"),
        ]

    def __str__(self) -> str:
        if self.kind == self.Kind.STATUS:
            return f"{self.email}: {self.from_status} → {self.to_status}"
        return f"{self.email}: {self.get_kind_display()}"


class AlertKind(models.TextChoices):
    DISCONNECTED = "disconnected", "Disconnected"
    RECONNECTED = "reconnected", "Reconnected"


class AlertDigestStatus(models.TextChoices):
    PENDING = "pending", "Waiting to be sent"
    SENT = "sent", "Sent"
    NO_RECIPIENTS = "no_recipients", "Nobody to send to"  # no manager/owner wants alert e-mails
    FAILED = "failed", "Gave up"


class AlertDigest(Leased):
    """One digest e-mail of a workspace: the alert items it carries (claimed when it is made, in
    the same transaction), who it goes to, and whether it went. Sent by the task that leases it
    (fleet/alerts.py); at most one per workspace per ALERT_DIGEST_MINUTES."""

    workspace_lookup = "workspace"

    Status = AlertDigestStatus

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="alert_digests")
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, editable=False
    )
    # The addresses it goes to, fixed when it is made (a resend goes to the same people).
    recipients = models.JSONField(default=list, blank=True, editable=False)
    attempts = models.PositiveSmallIntegerField(default=0, editable=False)
    last_error = models.CharField(max_length=300, blank=True, editable=False)
    next_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    sent_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=AlertDigestStatus.values), name="alertdigest_status_valid"
            )
        ]
        indexes = [
            # The window check: a workspace's latest digest.
            models.Index(fields=["workspace", "-created_at"], name="alertdigest_ws_time"),
            # The sender's question: digests still to send.
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="pending"), name="alertdigest_due"
            ),
        ]

    def __str__(self) -> str:
        return f"Alert digest #{self.pk}, {self.created_at:%Y-%m-%d %H:%M}"


class AlertItem(models.Model):
    """A mailbox that left `active` for an error (or reauth), or came back to `active` from one:
    written by `Mailbox.set_status_many` with the change, waiting for its workspace's next digest
    (`digest` is null until a digest claims it)."""

    workspace_lookup = "workspace"

    Kind = AlertKind

    DROPPED_TO = (MailboxStatus.ERROR, MailboxStatus.REAUTH_REQUIRED)

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="alert_items")
    mailbox = models.ForeignKey(
        Mailbox, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    email = models.CharField(max_length=254)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    from_status = models.CharField(max_length=16)
    to_status = models.CharField(max_length=16)
    # Disconnected: the code it dropped with; reconnected: the code it had until it came back.
    error_code = models.CharField(max_length=64, blank=True)
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    digest = models.ForeignKey(
        AlertDigest, null=True, blank=True, on_delete=models.SET_NULL, related_name="items"
    )

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=AlertKind.values), name="alertitem_kind")
        ]
        indexes = [
            # Items waiting for a digest: few rows at any time, whatever the history's size.
            models.Index(
                fields=["workspace", "created_at"],
                condition=Q(digest__isnull=True),
                name="alertitem_waiting",
            ),
            models.Index(fields=["digest"], name="alertitem_digest"),
        ]

    def __str__(self) -> str:
        return f"{self.email} {self.get_kind_display().lower()} ({self.from_status} → {self.to_status})"

    @classmethod
    def for_change(
        cls, mailbox: Mailbox, previous: str, previous_code: str, when
    ) -> AlertItem | None:
        """The alert a status change makes, or None: only leaving `active` for an error or
        reauth (disconnected), or coming back to `active` from one (reconnected)."""
        if previous == MailboxStatus.ACTIVE and mailbox.status in cls.DROPPED_TO:
            kind, code, message = AlertKind.DISCONNECTED, mailbox.error_code, mailbox.error_message
        elif previous in cls.DROPPED_TO and mailbox.status == MailboxStatus.ACTIVE:
            kind, code, message = AlertKind.RECONNECTED, previous_code, ""
        else:
            return None
        return cls(
            workspace_id=mailbox.workspace_id,
            mailbox=mailbox,
            email=mailbox.email,
            kind=kind,
            from_status=previous,
            to_status=mailbox.status,
            error_code=code,
            message=message,
            created_at=when,
        )

    @property
    def error(self) -> errors.ErrorCode | None:
        return errors.get(self.error_code)

    @property
    def webhook_event(self) -> str:
        return f"mailbox.{self.kind}"

    def webhook_data(self, mailbox_data: dict) -> dict:
        """`mailbox.disconnected` / `mailbox.reconnected`: the mailbox, the code (dropped with,
        or recovered from) with the catalogue's message and hint, and its admin page."""
        entry = self.error
        return {
            "mailbox": mailbox_data,
            "from": self.from_status,
            "to": self.to_status,
            "code": self.error_code,
            "message": entry.message if entry else self.message,
            "hint": entry.hint if entry else "",
            "link": self.mailbox.admin_url() if self.mailbox_id else "",
        }


# --- Rolled-up counts for the dashboard ------------------------------------------------------------
# Counting a million mailboxes (or their events) on every dashboard view takes seconds; these
# tables hold the same counts, a few rows per workspace. Database triggers (migration
# 0017_scale_tallies: statement-level with transition tables on PostgreSQL, row-level on SQLite)
# keep them in step with every INSERT, UPDATE and DELETE of the source rows — the ORM's bulk
# writes, `QuerySet.update`, cascades and raw SQL included — in the same transaction. Rows are
# never written by Fleet's code; `fleet/tallies.py` reads them and can recount them from scratch.
# Their workspace column carries no foreign key: a workspace's rows fall to zero as its mailboxes
# are deleted, whatever order Django's cascade deletes in.


class MailboxTally(models.Model):
    """Mailboxes per workspace, status, warmup state, error code and auth method."""

    workspace_lookup = "workspace"

    workspace = models.ForeignKey(
        Workspace, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    status = models.CharField(max_length=16)
    warmup_status = models.CharField(max_length=16)
    error_code = models.CharField(max_length=64)
    auth_method = models.CharField(max_length=16)
    mailboxes = models.BigIntegerField(default=0)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "status", "warmup_status", "error_code", "auth_method"],
                name="mailbox_tally_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.status}/{self.warmup_status}/{self.error_code}: {self.mailboxes}"


class DomainTally(models.Model):
    """Mailboxes per workspace, domain and deliverability state (Microsoft's own consumer
    domains, provider outlook_com, left out as on the dashboard). Each check is 1 found, 0
    missing, -1 never checked (the mailbox's boolean or NULL)."""

    workspace_lookup = "workspace"

    workspace = models.ForeignKey(
        Workspace, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    domain = models.CharField(max_length=254)
    spf = models.SmallIntegerField()
    dkim = models.SmallIntegerField()
    dmarc = models.SmallIntegerField()
    mx = models.SmallIntegerField()
    dmarc_policy = models.CharField(max_length=16)
    mailboxes = models.BigIntegerField(default=0)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "domain", "spf", "dkim", "dmarc", "mx", "dmarc_policy"],
                name="domain_tally_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.domain}: {self.mailboxes}"


class EventDayTally(models.Model):
    """Connections made (→ active) and lost (active → error or reauth) per workspace and UTC
    day: the dashboard's trend chart."""

    workspace_lookup = "workspace"

    workspace = models.ForeignKey(
        Workspace, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    day = models.DateField()
    made = models.BigIntegerField(default=0)
    lost = models.BigIntegerField(default=0)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "day"], name="event_day_tally_key")
        ]

    def __str__(self) -> str:
        return f"{self.day}: +{self.made} -{self.lost}"


class WebhookCounter(models.Model):
    """The last webhook `sequence` given out in a workspace. Its row is locked by the transaction
    that emits an event (so a rolled-back event gives its number back: no gaps) and by the
    sender choosing a workspace's next delivery (so one sender at a time keeps them in order)."""

    workspace = models.OneToOneField(
        Workspace, primary_key=True, on_delete=models.CASCADE, related_name="webhook_counter"
    )
    last_sequence = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.workspace_id}: {self.last_sequence}"

    @classmethod
    def next_sequence(cls, workspace_id: int, count: int = 1) -> int:
        """The workspace's next webhook sequence number (the last of `count` reserved at once).
        The UPDATE locks the counter row until the caller's transaction ends, so numbers are
        handed out (and given back on rollback) in commit order."""
        for _ in range(2):
            if cls.objects.filter(pk=workspace_id).update(
                last_sequence=models.F("last_sequence") + count
            ):
                return cls.objects.values_list("last_sequence", flat=True).get(pk=workspace_id)
            try:
                with transaction.atomic():
                    cls.objects.create(workspace_id=workspace_id, last_sequence=count)
                return count
            except IntegrityError:
                continue  # created by a concurrent transaction meanwhile: count on from theirs
        raise RuntimeError(f"no webhook counter for workspace {workspace_id}")


class WebhookDeliveryQuerySet(ScopedQuerySet):
    def emit(self, workspace: Workspace, event: str, data: dict) -> WebhookDelivery | None:
        """Store `event` in the workspace's outbox, numbered with the workspace's next
        `sequence` in this same transaction. fleet/webhooks.py has it sent once the transaction
        commits (a post_save receiver: the model layer does not know about tasks). Does
        nothing when the workspace has no webhook (or it was turned off)."""
        if event not in WebhookDelivery.EVENTS:
            raise ValueError(f"unknown webhook event {event!r}")
        if not workspace.webhooks_on:
            return None
        with transaction.atomic():
            delivery = self._numbered(
                workspace, event, WebhookCounter.next_sequence(workspace.pk), data
            )
            delivery.save()
        return delivery

    @staticmethod
    def _numbered(workspace: Workspace, event: str, sequence: int, data: dict) -> WebhookDelivery:
        delivery = WebhookDelivery(workspace=workspace, event=event, sequence=sequence)
        delivery.payload = {
            "id": str(delivery.uid),
            "event": event,
            "sequence": sequence,
            "occurred_at": delivery.created_at.isoformat(),
            "created_at": delivery.created_at.isoformat(),
            "workspace": {"slug": workspace.slug, "name": workspace.name},
            "data": data,
        }
        return delivery

    def emit_many(
        self, workspace: Workspace, events: list[tuple[str, dict]]
    ) -> list[WebhookDelivery]:
        """`emit` for several events of one workspace (a bulk add's chunk, its alerts): their
        sequence numbers in one UPDATE, the rows in one INSERT, in the order given."""
        for event, _ in events:
            if event not in WebhookDelivery.EVENTS:
                raise ValueError(f"unknown webhook event {event!r}")
        if not events or not workspace.webhooks_on:
            return []
        if len(events) == 1:
            return [self.emit(workspace, *events[0])]
        with transaction.atomic():
            last = WebhookCounter.next_sequence(workspace.pk, len(events))
            first = last - len(events) + 1
            deliveries = WebhookDelivery.objects.bulk_create(
                self._numbered(workspace, event, sequence, data)
                for sequence, (event, data) in enumerate(events, start=first)
            )
            # bulk_create sends no post_save: send it, so the receiver in fleet/webhooks.py has
            # them sent on commit (one send task per workspace and transaction all the same).
            for delivery in deliveries:
                models.signals.post_save.send(
                    sender=WebhookDelivery,
                    instance=delivery,
                    created=True,
                    update_fields=None,
                    raw=False,
                    using=self.db,
                )
        return deliveries


class WebhookDelivery(Leased):
    """The outbox: one signed event for one workspace's webhook, with its delivery attempts.
    A workspace's deliveries go out one at a time in `sequence` order (fleet/webhooks.py); the
    one being sent is leased by its sender's task."""

    workspace_lookup = "workspace"

    EVENTS = {
        "mailbox.pending": "A mailbox was connected and waits for a manager's approval",
        "mailbox.status_changed": "A mailbox's connection status changed",
        "mailbox.warmup_changed": "A mailbox's warmup was started, paused or resumed",
        "mailbox.deleted": "A mailbox was deleted",
        "mailbox.disconnected": "An active mailbox dropped to error or reauth_required",
        "mailbox.reconnected": "A mailbox in error or reauth_required is active again",
        "consent_request.status_changed": "A consent request moved to another status",
        "webhook.test": "A test event sent from the admin",
    }

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    # Per workspace, gapless and increasing: receivers order by it.
    sequence = models.PositiveBigIntegerField(editable=False)
    event = models.CharField(max_length=64)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = WebhookDeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["workspace", "sequence"], name="webhook_ws_sequence")
        ]
        indexes = [
            models.Index(fields=["workspace", "-created_at"], name="webhook_ws_time"),
            # The sender's and sweeper's question: a workspace's oldest pending delivery.
            models.Index(
                fields=["workspace", "sequence"],
                condition=Q(status="pending"),
                name="webhook_pending_seq",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} #{self.sequence} {self.uid}"


class ApiKeyKind(models.TextChoices):
    PLATFORM = "platform", "Platform key (sk_user_…): the user's workspaces"
    WORKSPACE = "workspace", "Workspace key (sk_…): one workspace"


class ApiKeyQuerySet(ScopedQuerySet):
    def restrict(self, user, role: str = Role.VIEWER) -> ApiKeyQuerySet:
        """A user's own platform keys, plus the workspace keys of workspaces where they hold
        `role` (keys are managed by managers, so callers pass MANAGER)."""
        if user is None or not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self
        return super().restrict(user, role) | self.filter(user_id=user.pk, workspace=None)


class ApiKey(models.Model):
    """A key for the JSON API. Only a SHA-256 of the key is stored (keys are 40 random
    characters, so a slow password hash adds nothing); the key itself is shown once.

    A platform key acts as its user in every workspace the user belongs to, with the user's role
    there. A workspace key acts as the user who made it, inside its one workspace only, with at
    most the role it was given: the lower of that role and the user's current one."""

    workspace_lookup = "workspace"

    Kind = ApiKeyKind

    PLATFORM_PREFIX = "sk_user_"
    WORKSPACE_PREFIX = "sk_"
    SHOWN_CHARS = 6  # random characters the admin shows to tell keys apart

    name = models.CharField(max_length=100, help_text="What the key is for, e.g. 'CRM sync'.")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="fleet_api_keys"
    )
    workspace = models.ForeignKey(
        Workspace, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys"
    )
    role = models.CharField(
        max_length=16,
        choices=Role.choices,
        blank=True,
        help_text="Workspace keys: the most this key may do (never more than its creator).",
    )
    prefix = models.CharField(max_length=24, editable=False)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=ApiKeyKind.values), name="apikey_kind"),
            # A workspace key names its workspace and role; a platform key neither.
            models.CheckConstraint(
                condition=(
                    Q(kind=ApiKeyKind.WORKSPACE, workspace__isnull=False, role__in=Role.values)
                    | Q(kind=ApiKeyKind.PLATFORM, workspace__isnull=True, role="")
                ),
                name="apikey_scope_consistent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode()).hexdigest()

    def new_secret(self) -> str:
        """Give this (unsaved) key its secret; returns the key itself, which is never stored."""
        alphabet = string.ascii_letters + string.digits  # no "_": "sk_user_" stays unambiguous
        start = self.WORKSPACE_PREFIX if self.workspace_id else self.PLATFORM_PREFIX
        raw = start + "".join(secrets.choice(alphabet) for _ in range(40))
        self.kind = ApiKeyKind.WORKSPACE if self.workspace_id else ApiKeyKind.PLATFORM
        self.prefix = raw[: len(start) + self.SHOWN_CHARS]
        self.hashed_key = self.hash(raw)
        return raw

    @property
    def is_platform(self) -> bool:
        return self.kind == ApiKeyKind.PLATFORM

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def cap(self, workspace_id: int, user_role: str | None) -> str | None:
        """What this key may do in that workspace, given its user's role there
        (fleet.access.key_role looks that up): None outside the key's reach; a workspace key
        never more than its own role."""
        if self.workspace_id is None:
            return user_role
        if workspace_id != self.workspace_id:
            return None
        return Role.lower_of(user_role, self.role)


class BulkAddRun(Leased):
    """One Graph app-only bulk add: the accounts asked for, progress, and the outcome. A running
    run is leased by its task; the reaper puts a run whose worker died back in the queue, and
    the next task goes on with the results not yet done."""

    workspace_lookup = "workspace"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished"
        FAILED = "failed", "Failed"  # the run itself could not go on (e.g. no token)

    class Outcome(models.TextChoices):
        ALL_CONNECTED = "all_connected", "All connected"
        PARTLY_CONNECTED = "partly_connected", "Partly connected"
        REJECTED = "rejected", "Rejected"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="bulk_adds")
    credential = models.ForeignKey(
        Credential, null=True, on_delete=models.SET_NULL, related_name="bulk_adds"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    connected = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True)  # why the whole run failed
    error_message = models.TextField(blank=True)
    # Switch mailboxes already connected by OAuth consent to Graph app-only too (else they are
    # kept and reported ALREADY_CONNECTED).
    convert = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["workspace", "-created_at"], name="bulkadd_ws_time")]

    def __str__(self) -> str:
        return f"Bulk add of {self.total} mailbox(es), {self.created_at:%Y-%m-%d %H:%M}"


class BulkAddResult(models.Model):
    """One account of a bulk add, in the shape of the seed's per-mailbox result."""

    workspace_lookup = "run__workspace"

    run = models.ForeignKey(BulkAddRun, on_delete=models.CASCADE, related_name="results")
    position = models.PositiveIntegerField()
    email = models.CharField(max_length=254)
    name = models.CharField(max_length=255, blank=True)
    done = models.BooleanField(default=False)
    success = models.BooleanField(default=False)
    mailbox = models.ForeignKey(
        Mailbox, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    spf_correct = models.BooleanField(null=True, blank=True)
    dkim_correct = models.BooleanField(null=True, blank=True)
    dmarc_correct = models.BooleanField(null=True, blank=True)
    mx_correct = models.BooleanField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_detail = models.CharField(max_length=500, blank=True)  # e.g. the primary address

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="bulkadd_result_position")
        ]
        indexes = [models.Index(fields=["run", "error_code"], name="bulkadd_result_code")]

    def __str__(self) -> str:
        return self.email


class ImportBatch(models.Model):
    """One CSV/XLSX import of mailboxes: who brought what into which workspace, what came of each
    row (first 50 errors, as in SendKit's CSV import API), and the mailboxes it created, whose connection tests
    make up its progress."""

    workspace_lookup = "workspace"

    MAX_ERRORS = 50

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="imports")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    tag = models.ForeignKey(Tag, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    file_name = models.CharField(max_length=255, blank=True)
    total_rows = models.PositiveIntegerField(default=0)
    imported = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # [{"row": 3, "email": "x@y.com" | "unknown", "error": "Missing email or password"}, …]
    errors = models.JSONField(default=list, blank=True)
    mailboxes = models.ManyToManyField(Mailbox, blank=True, related_name="import_batches")

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "import batches"
        indexes = [models.Index(fields=["workspace", "-created_at"], name="import_ws_time")]

    def __str__(self) -> str:
        return f"{self.file_name or 'import'} · {self.created_at:%Y-%m-%d %H:%M}"

    def progress(self) -> dict[str, int]:
        """Connection-test progress of the imported mailboxes, in one query."""
        counts = dict(
            self.mailboxes.order_by().values_list("status").annotate(n=models.Count("id"))
        )
        total = sum(counts.values())
        pending = counts.get(MailboxStatus.PENDING, 0)
        active = counts.get(MailboxStatus.ACTIVE, 0)
        return {
            "total": total,
            "tested": total - pending,
            "active": active,
            "failed": total - pending - active,
            "pending": pending,
        }


class DomainTenant(models.Model):
    """Which Entra ID tenant has verified a mail domain (public facts from the domain's OpenID
    configuration, shared by every workspace): what the move plan groups mailboxes by."""

    domain = models.CharField(max_length=253, unique=True)
    tenant_id = models.CharField(max_length=36, blank=True)  # "": no tenant has verified it
    consumer = models.BooleanField(default=False)  # Outlook.com / Hotmail personal accounts
    checked_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.domain} → {self.tenant_id or 'no tenant'}"


class MoveRun(models.Model):
    """One move of a workspace's app-password mailboxes off Basic auth: the app-only group is
    switched after a passing XOAUTH2 test, the consent group gets consent requests. Progress is
    on its items; `lease_until` is renewed while a worker runs it, so a dead worker's run is
    picked up again (`fleet.move.reclaim_expired`)."""

    workspace_lookup = "workspace"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished"  # every item handled (consents may still be open)
        FAILED = "failed", "Failed"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="moves")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    moved = models.PositiveIntegerField(default=0)
    consent_sent = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)  # a worker holds the run until then
    attempts = models.PositiveIntegerField(default=0)  # times a worker started it
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["workspace", "-created_at"], name="move_ws_time"),
            models.Index(fields=["status", "lease_until"], name="move_status_lease"),
        ]

    def __str__(self) -> str:
        return f"Move of {self.total} mailbox(es) off Basic auth, {self.created_at:%Y-%m-%d %H:%M}"

    @property
    def done(self) -> bool:
        return self.status in (self.Status.FINISHED, self.Status.FAILED)


class MoveItem(models.Model):
    """One mailbox of a move run: its group, where it stands, and the code when it failed."""

    workspace_lookup = "run__workspace"

    class Group(models.TextChoices):
        APP_ONLY = "app_only", "App-only (tenant credential)"
        CONSENT = "consent", "Owner's consent"
        BLOCKED = "blocked", "Blocked"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        MOVED = "moved", "Moved"
        AWAITING_CONSENT = "awaiting_consent", "Waiting for consent"
        FAILED = "failed", "Failed (left as it was)"
        BLOCKED = "blocked", "Blocked"

    run = models.ForeignKey(MoveRun, on_delete=models.CASCADE, related_name="items")
    mailbox = models.ForeignKey(
        Mailbox, null=True, on_delete=models.SET_NULL, related_name="move_items"
    )
    email = models.CharField(max_length=254)
    group = models.CharField(max_length=16, choices=Group.choices)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    credential = models.ForeignKey(
        Credential, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    consent_request = models.ForeignKey(
        ConsentRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error_code = models.CharField(max_length=64, blank=True)
    error_detail = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["run", "group", "email"]
        indexes = [models.Index(fields=["run", "state"], name="moveitem_run_state")]

    def __str__(self) -> str:
        return self.email


class AuditVia(models.TextChoices):
    ADMIN = "admin", "Admin"
    API = "api", "API"
    TASK = "task", "Task"
    # A public page with no Fleet user behind it: Microsoft's consent callback.
    WEB = "web", "Consent page"


class AuditEntry(models.Model):
    """Who changed what, from where: one row per state-changing operation (fleet/audit.py writes
    them, in the transaction of the change). Instantly's audit log answers the same questions:
    who, what, from which address, whether through the API.

    The workspace and actor are kept as plain ids (no foreign-key constraint, nothing cascades):
    the log outlives a deleted workspace, user or object, and a delete never touches 10M rows."""

    workspace_lookup = "workspace"

    Via = AuditVia
    SYSTEM = "system"

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    workspace = models.ForeignKey(
        Workspace,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    # The actor's username at the time, or "system": the log reads the same after a rename.
    actor_name = models.CharField(max_length=150)
    api_key_prefix = models.CharField(max_length=24, blank=True)
    via = models.CharField(max_length=8, choices=Via.choices)
    client_address = models.CharField(max_length=45, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    object_type = models.CharField(max_length=40)
    # The object's public id (a mailbox's or consent request's uid, else its pk) and its pk (for
    # the admin's link); its name as it was then.
    object_id = models.CharField(max_length=64)
    object_pk = models.PositiveBigIntegerField(null=True, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=64)
    # {"field": {"before": …, "after": …}}; a secret field is only ever "changed".
    changes = models.JSONField(default=dict, blank=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        default_permissions = ("view",)
        indexes = [
            # The list and the API page: one (or a few) workspaces' newest entries, read from
            # the index in order (keyset), never sorted or counted.
            models.Index(fields=["workspace", "-created_at", "-id"], name="audit_ws_time"),
            # Superusers' unfiltered list, and pruning (created_at < cutoff) in batches.
            models.Index(fields=["-created_at", "-id"], name="audit_time"),
            # "What happened to this object", and "which entries did this request write" (the
            # search box and the API's object_id filter: exact ids, never a scan).
            models.Index(fields=["object_id", "-created_at"], name="audit_object"),
            models.Index(
                fields=["request_id"], name="audit_request", condition=~Q(request_id="")
            ),
            # The actor and action filters: each an ordered range of its own (an action is
            # often rare; read through the workspace index it would be a long scan).
            models.Index(fields=["actor", "-created_at"], name="audit_actor_time"),
            models.Index(fields=["action", "-created_at"], name="audit_action_time"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.action} {self.object_type} {self.object_repr}"


class ReconnectRun(models.Model):
    """One "Reconnect all failing": the consent requests asked of a workspace's OAuth mailboxes
    that need reauthorization, grouped so that one page lists their links and shows progress.
    Progress is read from the mailboxes themselves (`active` again), not kept here."""

    workspace_lookup = "workspace"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="reconnects")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # What was chosen, as the person chose it ("all failing", "tag=…"), for the page's title.
    selection = models.CharField(max_length=300, blank=True)
    total = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["workspace", "-created_at"], name="reconnect_ws_time")]

    def __str__(self) -> str:
        return f"Reconnect of {self.total} mailbox(es), {self.created_at:%Y-%m-%d %H:%M}"


class ReconnectItem(models.Model):
    """One mailbox of a reconnect run and the consent request it was given (a new one, or the
    open one it already had)."""

    workspace_lookup = "run__workspace"

    run = models.ForeignKey(ReconnectRun, on_delete=models.CASCADE, related_name="items")
    mailbox = models.ForeignKey(
        Mailbox, null=True, on_delete=models.SET_NULL, related_name="reconnect_items"
    )
    email = models.CharField(max_length=254)
    consent_request = models.ForeignKey(
        ConsentRequest, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reused = models.BooleanField(default=False, help_text="An open consent request was reused.")
    emailed_to = models.CharField(max_length=254, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["run", "email"]
        constraints = [
            models.UniqueConstraint(fields=["run", "mailbox"], name="reconnect_item_once")
        ]

    def __str__(self) -> str:
        return self.email


class UptimeHour(models.Model):
    """Connection tests and disconnections of one workspace in one hour (UTC): the dashboard's
    uptime without reading the events (1M mailboxes tested daily write 30M events a month).
    Kept in step with MailboxEvent by database triggers (migration 0016), so every writer of
    events counts, whatever code path it takes; Fleet's code never writes these rows."""

    workspace_lookup = "workspace"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    checks = models.PositiveIntegerField(default=0)  # CONNECTION_TEST events
    passed = models.PositiveIntegerField(default=0)  # … of them without an error code
    disconnections = models.PositiveIntegerField(default=0)  # MailboxEvent.LOST events

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["workspace", "-hour"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "hour"], name="uptime_ws_hour")
        ]

    def __str__(self) -> str:
        return f"{self.workspace_id} {self.hour:%Y-%m-%d %H}:00"
