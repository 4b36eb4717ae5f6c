"""SPF, DKIM, DMARC and MX checks for Microsoft 365 sending domains, one DNS look-up set per domain.

- SPF is correct when the domain publishes exactly one `v=spf1` TXT record and it includes
  `spf.protection.outlook.com` (https://learn.microsoft.com/en-us/defender-office-365/email-authentication-spf-configure).
  More than one SPF record is a permanent error under RFC 7208 §4.5, so it counts as incorrect.
- DKIM is correct when both `selector1._domainkey` and `selector2._domainkey` are CNAMEs
  (https://learn.microsoft.com/en-us/defender-office-365/email-authentication-dkim-configure).

- DMARC is correct when `_dmarc.<domain>` publishes exactly one `v=DMARC1` record with a policy
  (`p=none|quarantine|reject`, RFC 7489 §6.3); the policy is reported. Outlook.com rejects
  senders of more than 5,000 messages a day without SPF, DKIM and DMARC (`550 5.7.515`, since
  5 May 2025).
- MX is correct when every MX host is Exchange Online Protection (`*.mail.protection.outlook.com`,
  https://learn.microsoft.com/microsoft-365/enterprise/external-domain-name-system-records).

A domain that does not exist or publishes nothing is *incorrect*; a look-up that fails (timeout,
SERVFAIL) is *unknown* (None) with an error code, never an exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dns.exception
import dns.resolver
from django.conf import settings

from fleet import errors

SPF_INCLUDE = "include:spf.protection.outlook.com"
EXCHANGE_MX_SUFFIX = ".mail.protection.outlook.com"
DMARC_POLICIES = ("none", "quarantine", "reject")
DKIM_SELECTORS = ("selector1", "selector2")


@dataclass(frozen=True)
class DomainCheck:
    domain: str
    spf_correct: bool | None
    dkim_correct: bool | None
    error: str = ""  # a catalogue code when a look-up failed
    dmarc_correct: bool | None = None
    dmarc_policy: str = ""
    mx_correct: bool | None = None

    def as_dict(self) -> dict:
        return {
            "spf_correct": self.spf_correct,
            "dkim_correct": self.dkim_correct,
            "dmarc_correct": self.dmarc_correct,
            "mx_correct": self.mx_correct,
        }


class LookupFailed(Exception):
    pass


def make_resolver() -> dns.resolver.Resolver:
    """A resolver from settings: DNS_NAMESERVERS (empty: the system's), DNS_PORT, DNS_TIMEOUT."""
    nameservers = settings.DNS_NAMESERVERS
    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = nameservers
        resolver.port = settings.DNS_PORT
    resolver.lifetime = settings.DNS_TIMEOUT
    resolver.timeout = settings.DNS_TIMEOUT
    return resolver


def _answers(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> list:
    try:
        return list(resolver.resolve(name, rdtype, raise_on_no_answer=False) or [])
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (
        dns.exception.Timeout,
        dns.resolver.NoNameservers,
        dns.resolver.NoResolverConfiguration,
    ) as exc:
        raise LookupFailed(f"{rdtype} {name}: {type(exc).__name__}") from exc


def check_domain(domain: str, resolver: dns.resolver.Resolver | None = None) -> DomainCheck:
    resolver = resolver or make_resolver()
    domain = domain.lower().rstrip(".")
    try:
        spf_records = [
            text
            for rdata in _answers(resolver, domain, "TXT")
            if (text := b"".join(rdata.strings).decode(errors="replace").strip())
            .lower()
            .startswith("v=spf1")
        ]
        spf = len(spf_records) == 1 and SPF_INCLUDE in spf_records[0].lower().split()
        dkim = all(
            any(
                r.rdtype == dns.rdatatype.CNAME
                for r in _answers(resolver, f"{s}._domainkey.{domain}", "CNAME")
            )
            for s in DKIM_SELECTORS
        )
        dmarc_policy = dmarc_of(resolver, domain)
        mx_hosts = [
            str(r.exchange).rstrip(".").lower()
            for r in _answers(resolver, domain, "MX")
            if r.rdtype == dns.rdatatype.MX
        ]
    except LookupFailed:
        return DomainCheck(domain, None, None, errors.DNS_LOOKUP_FAILED.code)
    mx = bool(mx_hosts) and all(h.endswith(EXCHANGE_MX_SUFFIX) for h in mx_hosts)
    return DomainCheck(domain, spf, dkim, "", bool(dmarc_policy), dmarc_policy, mx)


def dmarc_of(resolver: dns.resolver.Resolver, domain: str) -> str:
    """The policy of the domain's one DMARC record, or "" (none, several, or no valid p=)."""
    records = [
        text
        for rdata in _answers(resolver, f"_dmarc.{domain}", "TXT")
        if (text := b"".join(rdata.strings).decode(errors="replace").strip())
        .lower()
        .startswith("v=dmarc1")
    ]
    if len(records) != 1:
        return ""
    tags = dict(part.strip().split("=", 1) for part in records[0].split(";") if "=" in part)
    policy = tags.get("p", "").strip().lower()
    return policy if policy in DMARC_POLICIES else ""


def check_domains(domains: Iterable[str], concurrency: int = 8) -> dict[str, DomainCheck]:
    """Check each distinct domain once, a few at a time."""
    unique = sorted({d.lower().rstrip(".") for d in domains})
    resolver = make_resolver()
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(unique)))) as pool:
        return dict(zip(unique, pool.map(lambda d: check_domain(d, resolver), unique), strict=True))
