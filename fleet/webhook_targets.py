"""Where webhooks may go: no server-side request forgery through a workspace's webhook URL.

A webhook URL must be `https` (plain `http` only with WEBHOOK_ALLOW_HTTP, on by default when
DEBUG) and its host must resolve to public addresses only — not loopback, private (RFC 1918,
unique-local), link-local (169.254.0.0/16: cloud metadata endpoints), shared (100.64.0.0/10),
multicast, reserved or unspecified — unless WEBHOOK_ALLOW_PRIVATE_NETWORKS is on (a receiver on
the agency's own network).

It is checked twice: when the URL is saved (admin form and API, with a message naming the
address) and at every delivery, where the host is resolved once and the connection goes to the
address that was checked (`post`): a name that resolves to a public address when saved and to
127.0.0.1 later (DNS rebinding) is refused before anything connects. Names are resolved through
the configured DNS resolver (DNS_NAMESERVERS, as the deliverability checks); `localhost` and
`*.localhost` are loopback by definition (RFC 6761) and never looked up. Redirects are never
followed.

https://owasp.org/www-community/attacks/Server_Side_Request_Forgery
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import dns.exception
import dns.resolver
import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from requests.adapters import HTTPAdapter

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(Exception):
    """The URL may not receive webhooks; the message says why, for the owner."""


class NotResolved(AddressRefused):
    """The host name does not resolve (yet)."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # as written in the URL (a name or an address), without brackets
    port: int
    addresses: tuple[IPAddress, ...]


def address_kind(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address ("loopback", "private", …), or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for kind, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    ):
        if flag:
            return kind
    if not ip.is_global:  # shared address space (100.64.0.0/10) and the like
        return "private"
    return None


def resolve(host: str) -> tuple[IPAddress, ...]:
    """The addresses of `host`: itself when it is an address; A and AAAA records otherwise."""
    try:
        return (ipaddress.ip_address(host),)
    except ValueError:
        pass
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
    from fleet.deliverability import make_resolver

    resolver = make_resolver()
    found: list[IPAddress] = []
    failure = None
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise NotResolved(f"{host} does not resolve (no such domain).") from None
        except (dns.exception.DNSException, OSError) as exc:
            failure = exc
            continue
        found += [ipaddress.ip_address(r.address) for r in answer if hasattr(r, "address")]
    if not found:
        reason = f" ({type(failure).__name__})" if failure else ""
        raise NotResolved(f"{host} does not resolve to an address{reason}.")
    return tuple(dict.fromkeys(found))


def check(url: str) -> Target:
    """The checked target of `url`, or AddressRefused saying why it may not receive webhooks."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if settings.WEBHOOK_ALLOW_HTTP else ("https",)
    if scheme not in allowed:
        raise AddressRefused("Webhook URLs must use https.")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise AddressRefused(f"The URL's port is not valid: {exc}.") from None
    if not host:
        raise AddressRefused("The URL names no host.")
    addresses = resolve(host)
    if not settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS:
        for ip in addresses:
            kind = address_kind(ip)
            if kind:
                where = host if host == str(ip) else f"{host} resolves to {ip}, which"
                raise AddressRefused(
                    f"{where} is a {kind} address: webhooks go to public addresses only."
                )
    return Target(url, scheme, host, port or (443 if scheme == "https" else 80), addresses)


def validate_webhook_url(url: str) -> None:
    """For the admin form and the API: ValidationError when the URL may not receive webhooks.
    A name that does not resolve yet is accepted here (the owner may set up DNS after Fleet);
    deliveries to it fail, and are retried, until it resolves to a public address."""
    if not url:
        return
    try:
        check(url)
    except NotResolved:
        return
    except AddressRefused as refusal:
        raise ValidationError(str(refusal), code="webhook_address") from None


class _PinnedAdapter(HTTPAdapter):
    """Connects to the checked address while TLS (SNI and certificate) and the Host header use
    the URL's host name."""

    def __init__(self, host: str):
        self.host = host
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["server_hostname"] = self.host
        kwargs["assert_hostname"] = self.host
        super().init_poolmanager(*args, **kwargs)


def post(url: str, *, data: bytes, headers: dict, timeout: float) -> requests.Response:
    """POST to a checked webhook URL, connecting only to the address the check resolved."""
    target = check(url)
    ip = target.addresses[0]
    parts = urlsplit(url)
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    if parts.port:
        netloc += f":{parts.port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    shown_host = f"[{target.host}]" if ":" in target.host else target.host
    host_header = f"{shown_host}:{parts.port}" if parts.port else shown_host
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment: the check is for this address
        session.verify = settings.WEBHOOK_CA_BUNDLE or True
        if target.scheme == "https":
            session.mount("https://", _PinnedAdapter(target.host))
        return session.post(
            pinned,
            data=data,
            headers={**headers, "Host": host_header},
            timeout=timeout,
            allow_redirects=False,
        )
