"""Fleet settings: one file, every value from the environment (see .env.example)."""

import importlib.util
import os
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A .env file beside manage.py is read when present; real environment variables win.
# FLEET_READ_DOTENV=false skips it: bin/test sets it (and every process the tests start inherits
# it), so that the developer's .env — bin/run's demo points Microsoft and MAIL_* at the loopback
# sandbox — never leaks into the settings under test. An environment variable rather than a second
# settings module, because the tests' worker processes (manage.py db_worker) read this same module.
if os.environ.get("FLEET_READ_DOTENV", "true").strip().lower() not in ("false", "0", "no", "off"):
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _env(name: str, cast, default):
    """Read one variable; a value that does not parse names the variable."""
    try:
        return cast(name, default=default)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"{name} has an invalid value: {exc}") from exc


_BOOLS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
    "": False,
}


def strict_bool(name: str, default: bool) -> bool:
    """Like env.bool, but "maybe" or "ture" is an error instead of a silent False."""
    raw = env.str(name, default=str(default)).strip().lower()
    if raw not in _BOOLS:
        raise ValueError(f"{raw!r} is not one of true/false, yes/no, on/off, 1/0")
    return _BOOLS[raw]


DEBUG = _env("DEBUG", strict_bool, False)

SECRET_KEY = _env("SECRET_KEY", env.str, "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`)."
        )
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG-on"

# Fernet keys for secrets at rest, comma separated: the first encrypts, all decrypt.
# Separate from SECRET_KEY so that rotating one does not lose the other.
FIELD_ENCRYPTION_KEYS = _env("FIELD_ENCRYPTION_KEYS", env.list, [])
if not FIELD_ENCRYPTION_KEYS and not DEBUG:
    raise ImproperlyConfigured(
        "FIELD_ENCRYPTION_KEYS must be set when DEBUG is off (generate one with "
        "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)."
    )
if not FIELD_ENCRYPTION_KEYS:
    # DEBUG only: a fixed development key, so that a developer's database stays readable.
    FIELD_ENCRYPTION_KEYS = ["ZmxlZXQtZGV2LWtleS1uZXZlci11c2UtaW4tcHJvZCE="]

ALLOWED_HOSTS = _env("ALLOWED_HOSTS", env.list, ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = _env("CSRF_TRUSTED_ORIGINS", env.list, [])

INSTALLED_APPS = [
    "fleet.apps.FleetAdminConfig",  # django.contrib.admin with the dashboard as front page
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django.forms",
    "django_tasks",
    "django_tasks_db",
    "import_export",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "csp",
    "fleet",
]
# The Microsoft sandbox (sandbox/, the `demo` extra) adds `manage.py run_sandbox` for the demo
# (bin/run). Never in production: only with DEBUG on and its source present (the wheel leaves it
# out). Its SANDBOX_* variables are read by sandbox/settings.py, not here.
if DEBUG and importlib.util.find_spec("sandbox") is not None:
    INSTALLED_APPS.append("sandbox.apps.SandboxConfig")

MIDDLEWARE = [
    "fleet.api.middleware.ApiRequestMiddleware",
    "fleet.request_guard.HostileInputMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The request's address, id and API key for the audit log (fleet/audit.py).
    "fleet.audit.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: turns its lock-out into the page below.
    "axes.middleware.AxesMiddleware",
]

# --- Content-Security-Policy (django-csp) ----------------------------------------------------
# Scripts only from Fleet's own static files (the admin's, Fleet's, Swagger UI's and Redoc's
# from drf-spectacular-sidecar) or with the request's nonce; no inline scripts or handlers. Inline
# style attributes stay allowed (Django's admin and the dashboard's SVG charts use them).
# CSP_REPORT_ONLY=true sends the same policy as Content-Security-Policy-Report-Only (to try a
# change first); CSP_REPORT_URI names where browsers report violations.
_CSP_DIRECTIVES = {
    "default-src": [SELF],
    "script-src": [SELF, NONCE],
    "style-src": [SELF, "'unsafe-inline'"],
    "img-src": [SELF, "data:"],
    "font-src": [SELF, "data:"],
    "connect-src": [SELF],
    "worker-src": [SELF, "blob:"],  # Redoc's search runs in a worker made from a blob
    "object-src": [NONE],
    "base-uri": [SELF],
    "frame-ancestors": [NONE],  # as X-Frame-Options: DENY
}
if _env("CSP_REPORT_URI", env.str, ""):
    _CSP_DIRECTIVES["report-uri"] = [_env("CSP_REPORT_URI", env.str, "")]
if _env("CSP_REPORT_ONLY", strict_bool, False):
    CONTENT_SECURITY_POLICY_REPORT_ONLY = {"DIRECTIVES": _CSP_DIRECTIVES}
else:
    CONTENT_SECURITY_POLICY = {"DIRECTIVES": _CSP_DIRECTIVES}

# --- Admin sign-in throttling (django-axes) --------------------------------------------------
# After LOGIN_FAILURE_LIMIT failed sign-ins in a row for one user name from one address, that
# combination is locked for LOGIN_COOLOFF_MINUTES after the last attempt (a failure meanwhile
# restarts it); a success resets the count. `manage.py axes_reset` (or axes_reset_username,
# axes_reset_ip) unlocks. https://django-axes.readthedocs.io/en/latest/4_configuration.html
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = _env("LOGIN_FAILURE_LIMIT", env.int, 5)
AXES_COOLOFF_TIME = timedelta(minutes=_env("LOGIN_COOLOFF_MINUTES", env.int, 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/login_locked.html"
AXES_CLIENT_IP_CALLABLE = "fleet.clients.client_address"
AXES_VERBOSE = False
# Proxies in front of Fleet that append to X-Forwarded-For (0: use the connection's address).
TRUSTED_PROXIES = _env("TRUSTED_PROXIES", env.int, 0)

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Widgets render through TEMPLATES, so that templates/ can hold widget templates too.
FORM_RENDERER = "django.forms.renderers.TemplatesSetting"

# SQLite under var/ is the zero-setup default; DATABASE_URL=postgres://… for production and CI.
(BASE_DIR / "var").mkdir(exist_ok=True)
DATABASES = {
    "default": _env("DATABASE_URL", env.db_url, f"sqlite:///{BASE_DIR / 'var' / 'fleet.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] not in (
    "django.db.backends.sqlite3",
    "django.db.backends.postgresql",
):
    raise ImproperlyConfigured(
        "DATABASE_URL must be postgres://user:password@host:port/name or sqlite:///path"
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the task worker write at once: WAL lets readers go on while one writes,
    # IMMEDIATE takes the write lock up front so a transaction never fails half way on "locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests run real worker processes against the test database: a file, not memory.
    DATABASES["default"].setdefault("TEST", {"NAME": str(BASE_DIR / "var" / "test-fleet.sqlite3")})
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", _env("CONN_MAX_AGE", env.int, 60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default"],
    }
}
# Background jobs hold a lease on their rows (fleet/leases.py): seconds a lease lasts without
# renewal (a heartbeat renews it every third of that), and how often the reaper (and the webhook
# sweeper) run under `manage.py run_periodic`. Work of a dead worker resumes within about the
# sum of the two.
JOB_LEASE_SECONDS = _env("JOB_LEASE_SECONDS", env.float, 90.0)
JOB_REAPER_SECONDS = _env("JOB_REAPER_SECONDS", env.float, 60.0)
if JOB_LEASE_SECONDS < 1 or JOB_REAPER_SECONDS < 1:
    raise ImproperlyConfigured("JOB_LEASE_SECONDS and JOB_REAPER_SECONDS must be at least 1")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = _env("TIME_ZONE", env.str, "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = _env("STATIC_ROOT", env.path, BASE_DIR / "var" / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Uploads above this are refused before they are read whole (CSV imports stay far below it).
DATA_UPLOAD_MAX_MEMORY_SIZE = _env("DATA_UPLOAD_MAX_MEMORY_SIZE", env.int, 5 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE

# Production hardening: on unless DEBUG, each one can be turned off behind a TLS-terminating proxy.
SECURE_SSL_REDIRECT = _env("SECURE_SSL_REDIRECT", strict_bool, not DEBUG)
SESSION_COOKIE_SECURE = _env("SESSION_COOKIE_SECURE", strict_bool, not DEBUG)
CSRF_COOKIE_SECURE = _env("CSRF_COOKIE_SECURE", strict_bool, not DEBUG)
SECURE_HSTS_SECONDS = _env("SECURE_HSTS_SECONDS", env.int, 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env("SECURE_HSTS_INCLUDE_SUBDOMAINS", strict_bool, not DEBUG)
SECURE_HSTS_PRELOAD = _env("SECURE_HSTS_PRELOAD", strict_bool, not DEBUG)
if _env("USE_X_FORWARDED_PROTO", strict_bool, False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Tracebacks and error mails never show secrets: see fleet/secrets.py.
DEFAULT_EXCEPTION_REPORTER_FILTER = "fleet.secrets.SecretsExceptionReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # A refused request (PermissionDenied) is one line, not a traceback: fleet/logs.py.
    "filters": {"permission_denied_one_line": {"()": "fleet.logs.PermissionDeniedOneLine"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["permission_denied_one_line"],
        }
    },
    "root": {"handlers": ["console"], "level": _env("LOG_LEVEL", env.str, "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # aiosmtpd (the sandbox's SMTP server) logs every command, and a client's refused
        # certificate as an error: the sandbox provokes those on purpose.
        "mail.log": {"level": "CRITICAL"},
        # django-axes logs every sign-in at INFO ("Deleted 0 failed login attempts"); lock-outs
        # are WARNING and stay.
        "axes": {"level": "WARNING"},
    },
}

LOGIN_URL = "admin:login"

# Shared cache: the API's per-key rate limits are counted here, so every web process (and every
# host) must see the same one. The default, files under var/cache, is shared by the processes of
# one host; several hosts need a shared server, e.g. CACHE_URL=pymemcache://10.0.0.5:11211 or
# CACHE_URL=dbcache://fleet_cache (after `manage.py createcachetable`).
CACHES = {"default": _env("CACHE_URL", env.cache_url, f"filecache://{BASE_DIR / 'var' / 'cache'}")}

# The JSON API (fleet/api/): see the README's "API" section.
API_RATE_LIMIT = _env("API_RATE_LIMIT", env.str, "300/min")  # per key: N/sec|min|hour|day
# Requests with a missing or wrong key per client address; past it every request from that
# address answers 429 until the window has room again.
API_BAD_KEY_RATE_LIMIT = _env("API_BAD_KEY_RATE_LIMIT", env.str, "30/min")
API_MAX_REQUEST_BYTES = _env("API_MAX_REQUEST_BYTES", env.int, 2 * 1024 * 1024)
# Webhook receivers (fleet/webhook_targets.py): plain http only when allowed (default: DEBUG);
# private/loopback/link-local receivers only when allowed (a receiver on the agency's own LAN).
WEBHOOK_ALLOW_HTTP = _env("WEBHOOK_ALLOW_HTTP", strict_bool, DEBUG)
WEBHOOK_ALLOW_PRIVATE_NETWORKS = _env("WEBHOOK_ALLOW_PRIVATE_NETWORKS", strict_bool, False)
WEBHOOK_CA_BUNDLE = _env("WEBHOOK_CA_BUNDLE", env.str, "")  # CA file for receivers' TLS
# JSON bodies nesting arrays/objects deeper than this are refused (fleet/request_guard.py).
REQUEST_MAX_JSON_DEPTH = _env("REQUEST_MAX_JSON_DEPTH", env.int, 32)
# POST /mailboxes/microsoft/bulk waits this long for the worker to finish the run (201/207), then
# answers 202 with a URL to poll. Keep it below the web server's request timeout.
API_BULK_WAIT_SECONDS = _env("API_BULK_WAIT_SECONDS", env.float, 25.0)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["fleet.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["fleet.api.auth.HasApiKey"],
    "DEFAULT_THROTTLE_CLASSES": ["fleet.api.auth.ApiKeyRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "fleet.api.schema.EnvelopeAutoSchema",
    "EXCEPTION_HANDLER": "fleet.api.envelope.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DATETIME_FORMAT": "iso-8601",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Fleet API",
    "DESCRIPTION": "Workspaces, mailboxes, credentials and Microsoft connections of a Fleet "
    'instance. Every answer is an envelope: {"success": true, "data": …} or '
    '{"success": false, "error": {"code": …, "message": …}}.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "SecurityEnum": "fleet.models.Security",
        "MailboxStatusEnum": "fleet.models.MailboxStatus",
        "CredentialStatusEnum": "fleet.models.CredentialStatus",
        "ConsentStatusEnum": "fleet.models.ConsentStatus",
        "CredentialKindEnum": "fleet.models.CredentialKind",
        "ConsentKindEnum": "fleet.models.ConsentKind",
        # Bulk add runs and move runs share these states.
        "RunStatusEnum": [
            ("queued", "Queued"),
            ("running", "Running"),
            ("finished", "Finished"),
            ("failed", "Failed"),
        ],
    },
}

# --- Microsoft ------------------------------------------------------------------------------
# Where Microsoft's identity platform and Graph live. National clouds have their own hosts (e.g.
# https://login.microsoftonline.us + https://graph.microsoft.us/v1.0); the Microsoft sandbox
# (`manage.py run_sandbox`) serves both on loopback, and `check --deploy` refuses it.
MICROSOFT_AUTHORITY_HOST = _env(
    "MICROSOFT_AUTHORITY_HOST", env.str, "https://login.microsoftonline.com"
).rstrip("/")
MICROSOFT_GRAPH_URL = _env(
    "MICROSOFT_GRAPH_URL", env.str, "https://graph.microsoft.com/v1.0"
).rstrip("/")
# A CA bundle (PEM file) that every call to Microsoft trusts, winning over REQUESTS_CA_BUNDLE;
# empty: the system's trust store as `requests` finds it.
MICROSOFT_CA_BUNDLE = _env("MICROSOFT_CA_BUNDLE", env.str, "")
# Seconds to wait for Microsoft on each call (connect and read).
MICROSOFT_HTTP_TIMEOUT = _env("MICROSOFT_HTTP_TIMEOUT", env.float, 10.0)
# The address people reach Fleet at, for links made outside a request (consent links in CSVs and
# API answers, the OAuth redirect URI when a credential has none).
FLEET_BASE_URL = _env("FLEET_BASE_URL", env.str, "http://127.0.0.1:8000").rstrip("/")
# Seconds an OAuth `state` stays valid after the browser was sent to Microsoft (single use).
OAUTH_STATE_TTL = _env("OAUTH_STATE_TTL", env.int, 15 * 60)
# Days a consent request stays open before the expiry task marks it `expired`.
CONSENT_REQUEST_TTL_DAYS = _env("CONSENT_REQUEST_TTL_DAYS", env.int, 7)
# Token upkeep (fleet/tokens.py). Access tokens are fetched when a test or a program needs one;
# a refresh token nothing used for TOKEN_KEEPALIVE_DAYS is redeemed once by the keep-alive, well
# inside Microsoft's 90 days of inactivity
# (https://learn.microsoft.com/entra/identity-platform/refresh-tokens#token-lifetime).
TOKEN_KEEPALIVE_DAYS = _env("TOKEN_KEEPALIVE_DAYS", env.float, 7.0)
if not 0 < TOKEN_KEEPALIVE_DAYS <= 60:
    raise ImproperlyConfigured("TOKEN_KEEPALIVE_DAYS must be more than 0 and at most 60")
# Token requests one keep-alive task has in flight at once (threads of one worker).
TOKEN_REFRESH_CONCURRENCY = _env("TOKEN_REFRESH_CONCURRENCY", env.int, 16)
# Mailboxes per keep-alive task (the dispatcher claims due ones in chunks of this size).
TOKEN_KEEPALIVE_CHUNK = _env("TOKEN_KEEPALIVE_CHUNK", env.int, 500)
if TOKEN_REFRESH_CONCURRENCY < 1 or TOKEN_KEEPALIVE_CHUNK < 1:
    raise ImproperlyConfigured("TOKEN_REFRESH_CONCURRENCY and TOKEN_KEEPALIVE_CHUNK must be >= 1")
# Audit entries older than this are deleted by the periodic `prune_audit_log` task (0: keep all).
AUDIT_RETENTION_DAYS = _env("AUDIT_RETENTION_DAYS", env.int, 365)
# A move off Basic auth (fleet/move.py) holds its run for this many seconds, renewed after every
# chunk of 20 mailboxes; a run whose worker died is queued again by the reaper once it expires.
MOVE_LEASE_SECONDS = _env("MOVE_LEASE_SECONDS", env.int, 5 * 60)
if MOVE_LEASE_SECONDS < 1:
    raise ImproperlyConfigured("MOVE_LEASE_SECONDS must be at least 1")

# Microsoft Graph retries (fleet/microsoft/graph.py): attempts per request (429 and 5xx alike),
# the first backoff in seconds after a 5xx (doubling), and the longest Retry-After honoured.
GRAPH_MAX_ATTEMPTS = _env("GRAPH_MAX_ATTEMPTS", env.int, 5)
GRAPH_RETRY_BACKOFF = _env("GRAPH_RETRY_BACKOFF", env.float, 1.0)
GRAPH_MAX_RETRY_AFTER = _env("GRAPH_MAX_RETRY_AFTER", env.float, 120.0)

# DNS for the SPF/DKIM checks: nameserver IPs (empty: the system's resolvers), port, timeout (s).
DNS_NAMESERVERS = _env("DNS_NAMESERVERS", env.list, [])
DNS_PORT = _env("DNS_PORT", env.int, 53)
DNS_TIMEOUT = _env("DNS_TIMEOUT", env.float, 3.0)

# SMTP/IMAP connection tests (fleet/mailproto.py): a CA bundle for the mail servers' TLS
# certificates (empty: the system's CAs), the timeout in seconds of every protocol step, and how
# many mailboxes one worker tests at once.
MAIL_TLS_CA_FILE = _env("MAIL_TLS_CA_FILE", env.str, "")
# The servers new mailboxes are configured with (imports, OAuth consent): Microsoft's, as SendKit's CSV import API
# documents them; the demo points them at the sandbox's mail servers (`check --deploy` refuses
# loopback hosts).
MAIL_SMTP_HOST = _env("MAIL_SMTP_HOST", env.str, "smtp.office365.com")
MAIL_SMTP_PORT = _env("MAIL_SMTP_PORT", env.int, 587)
MAIL_IMAP_HOST = _env("MAIL_IMAP_HOST", env.str, "outlook.office365.com")
MAIL_IMAP_CONSUMER_HOST = _env("MAIL_IMAP_CONSUMER_HOST", env.str, "imap-mail.outlook.com")
MAIL_IMAP_PORT = _env("MAIL_IMAP_PORT", env.int, 993)
MAIL_TIMEOUT = _env("MAIL_TIMEOUT", env.float, 20.0)
MAIL_CHECK_CONCURRENCY = _env("MAIL_CHECK_CONCURRENCY", env.int, 20)
if MAIL_CHECK_CONCURRENCY < 1:
    raise ImproperlyConfigured("MAIL_CHECK_CONCURRENCY must be at least 1")

# --- E-mail (alert digests, fleet/alerts.py) -------------------------------------------------
# Django's own settings, from the environment. The demo (bin/run) uses the console backend, which
# prints each e-mail to the worker's output.
EMAIL_BACKEND = _env("EMAIL_BACKEND", env.str, "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = _env("EMAIL_HOST", env.str, "localhost")
EMAIL_PORT = _env("EMAIL_PORT", env.int, 25)
EMAIL_HOST_USER = _env("EMAIL_HOST_USER", env.str, "")
EMAIL_HOST_PASSWORD = _env("EMAIL_HOST_PASSWORD", env.str, "")
EMAIL_USE_TLS = _env("EMAIL_USE_TLS", strict_bool, False)  # STARTTLS (port 587)
EMAIL_USE_SSL = _env("EMAIL_USE_SSL", strict_bool, False)  # implicit TLS (port 465)
EMAIL_TIMEOUT = _env("EMAIL_TIMEOUT", env.float, 20.0)
DEFAULT_FROM_EMAIL = _env("DEFAULT_FROM_EMAIL", env.str, "Fleet <fleet@localhost>")
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL cannot both be on")
# A workspace's managers and owners get at most one digest of disconnects and recoveries per
# this many minutes (the first change after a quiet spell goes out at the next run).
ALERT_DIGEST_MINUTES = _env("ALERT_DIGEST_MINUTES", env.float, 15.0)
if ALERT_DIGEST_MINUTES < 0:
    raise ImproperlyConfigured("ALERT_DIGEST_MINUTES must not be negative")
# Health sweeps (fleet/health.py): every mailbox not disabled is tested once per its workspace's
# interval (this is the default for new workspaces, at least 1 hour). A worker tests up to
# HEALTH_CHECK_CONCURRENCY mailboxes at once, HEALTH_CHECK_CHUNK per task, and never more than
# HEALTH_CHECK_PER_HOST at once against one mail server host nor HEALTH_CHECK_PER_TENANT
# against one Microsoft tenant (or mail domain), so that a sweep never looks like an attack.
HEALTH_CHECK_INTERVAL_HOURS = _env("HEALTH_CHECK_INTERVAL_HOURS", env.float, 24.0)
HEALTH_CHECK_CONCURRENCY = _env("HEALTH_CHECK_CONCURRENCY", env.int, 200)
HEALTH_CHECK_CHUNK = _env("HEALTH_CHECK_CHUNK", env.int, 500)
HEALTH_CHECK_PER_HOST = _env("HEALTH_CHECK_PER_HOST", env.int, 200)
HEALTH_CHECK_PER_TENANT = _env("HEALTH_CHECK_PER_TENANT", env.int, 20)
if HEALTH_CHECK_INTERVAL_HOURS < 1:
    raise ImproperlyConfigured("HEALTH_CHECK_INTERVAL_HOURS must be at least 1")
if min(HEALTH_CHECK_CONCURRENCY, HEALTH_CHECK_CHUNK, HEALTH_CHECK_PER_HOST,
       HEALTH_CHECK_PER_TENANT) < 1:  # fmt: skip
    raise ImproperlyConfigured("HEALTH_CHECK_* concurrency and chunk settings must be at least 1")

# CSV/XLSX mailbox imports: files above this size (bytes) are refused before they are read.
IMPORT_MAX_FILE_SIZE = _env("IMPORT_MAX_FILE_SIZE", env.int, 2 * 1024 * 1024)
# Between preview and confirm, the uploaded file waits encrypted (it holds app passwords).
IMPORT_EXPORT_TMP_STORAGE_CLASS = "fleet.imports.EncryptedTempStorage"
IMPORT_EXPORT_SKIP_ADMIN_LOG = True  # every import is recorded as an ImportBatch instead
