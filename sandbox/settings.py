"""The sandbox's own settings, from the environment when this module is first imported
(`manage.py run_sandbox` imports it after Django has read the `.env` file beside manage.py into
the environment). Fleet's settings know nothing of the sandbox: production never has it. A value
that does not parse raises ValueError naming the variable."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} has an invalid value: {raw!r} is not a port number") from None


def _seconds(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name} has an invalid value: {raw!r} is not a number of seconds")
    return value


def _str(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


# Loopback only: the sandbox is for tests and the demo.
HOST = _str("SANDBOX_HOST", "127.0.0.1")
# HTTPS port for OpenID configuration, token endpoint and Graph; the browser-facing sign-in page
# is served on BROWSER_PORT over plain http (browsers treat loopback as secure).
PORT = _int("SANDBOX_PORT", 8443)
BROWSER_PORT = _int("SANDBOX_BROWSER_PORT", 8444)
# The SMTP (STARTTLS) and IMAP (SSL) servers, which take XOAUTH2 tokens the sandbox issued and
# the app password APP_PASSWORD for every directory user.
SMTP_PORT = _int("SANDBOX_SMTP_PORT", 8587)
IMAP_PORT = _int("SANDBOX_IMAP_PORT", 8993)
APP_PASSWORD = _str("SANDBOX_APP_PASSWORD", "sandbox-app-password")
# Where its CA certificate (ca.pem) and server certificates are written.
DIR = Path(_str("SANDBOX_DIR", str(BASE_DIR / "var" / "sandbox")))
# The directory of tenants, users and app registrations (JSON); empty: the built-in one.
DIRECTORY = _str("SANDBOX_DIRECTORY", "")
# UDP/TCP port of the DNS server (SPF/DKIM records of the directory's demo domains).
DNS_PORT = _int("SANDBOX_DNS_PORT", 8553)

# The demo's planned drop (bin/run sets it): this many seconds after the sandbox starts, the app
# password of DEMO_DROP_PASSWORD is refused (535 5.7.3) and the grant of DEMO_DROP_GRANT revoked
# (AADSTS50173 → reauth_required), so that the next connection tests disconnect them and their
# managers get an alert. Empty or 0: no drop.
DEMO_DROP_AFTER = _seconds("SANDBOX_DEMO_DROP_AFTER", 0)
DEMO_DROP_PASSWORD = _str("SANDBOX_DEMO_DROP_PASSWORD", "cara@acme-outreach.com")
DEMO_DROP_GRANT = _str("SANDBOX_DEMO_DROP_GRANT", "ava@acme-outreach.com")
# Seconds an access token lives (default 3600, as Microsoft's); the demo shortens it so that
# Fleet refreshes tokens, and meets a revoked grant, within minutes.
TOKEN_LIFETIME = _seconds("SANDBOX_TOKEN_LIFETIME", 3600) or 3600
