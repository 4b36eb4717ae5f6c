"""System checks: `manage.py check --deploy` refuses production settings that point Microsoft's
endpoints or the mail servers new mailboxes get at the sandbox (or any loopback address)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, register

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@register(Tags.security, deploy=True)
def microsoft_endpoints_not_sandbox(app_configs, **kwargs):
    problems = []
    for name in ("MICROSOFT_AUTHORITY_HOST", "MICROSOFT_GRAPH_URL"):
        value = getattr(settings, name)
        if is_loopback(value):
            problems.append(
                Error(
                    f"{name} points at {value}, the Microsoft sandbox on loopback.",
                    hint=f"Unset {name} (Microsoft's public cloud) or set a national cloud's "
                    "endpoint; the sandbox is for tests and the demo only.",
                    id="fleet.E001",
                )
            )
    return problems


@register(Tags.security, deploy=True)
def mail_servers_not_sandbox(app_configs, **kwargs):
    problems = []
    for name in ("MAIL_SMTP_HOST", "MAIL_IMAP_HOST", "MAIL_IMAP_CONSUMER_HOST"):
        value = getattr(settings, name)
        if is_loopback(f"//{value}"):
            problems.append(
                Error(
                    f"{name} is {value}, a loopback host (the sandbox's mail servers).",
                    hint=f"Unset {name} to configure new mailboxes with Microsoft's servers.",
                    id="fleet.E002",
                )
            )
    return problems
