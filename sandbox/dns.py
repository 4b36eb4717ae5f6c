"""The sandbox's DNS server: answers TXT and CNAME questions for the demo and test domains from
a zone given as a dict, over real UDP (and TCP) on loopback, so that the deliverability checks run
against a real resolver path. Domains can be scripted to fail (SERVFAIL) or to stay silent."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer


@dataclass
class Zone:
    """`records` maps a lower-case name to [(type, value)], type "TXT", "CNAME", "MX", "A" or
    "AAAA"."""

    records: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    servfail: set[str] = field(default_factory=set)  # names answered with SERVFAIL
    silent: set[str] = field(default_factory=set)  # names never answered (client times out)

    def add_microsoft_domain(self, domain: str, spf: bool = True, dkim: bool = True) -> None:
        """A domain set up as Microsoft 365 asks: SPF include and both DKIM selector CNAMEs.
        https://learn.microsoft.com/en-us/defender-office-365/email-authentication-dkim-configure"""
        domain = domain.lower()
        if spf:
            self.records.setdefault(domain, []).append(
                ("TXT", "v=spf1 include:spf.protection.outlook.com -all")
            )
        if dkim:
            tenant = domain.split(".")[0]
            for selector in ("selector1", "selector2"):
                self.records.setdefault(f"{selector}._domainkey.{domain}", []).append(
                    (
                        "CNAME",
                        f"{selector}-{tenant}._domainkey.{tenant}.onmicrosoft.com.",
                    )
                )

    def add_dmarc(self, domain: str, policy: str = "quarantine") -> None:
        """`_dmarc.<domain>` with the given policy (https://www.rfc-editor.org/rfc/rfc7489#section-6.3)."""
        self.records.setdefault(f"_dmarc.{domain.lower()}", []).append(
            ("TXT", f"v=DMARC1; p={policy}; rua=mailto:dmarc@{domain.lower()}")
        )

    def add_mx(self, domain: str, exchange: bool = True) -> None:
        """An MX at Exchange Online Protection (`<domain-with-dashes>.mail.protection.outlook.com`),
        or, with `exchange=False`, at some other mail host."""
        domain = domain.lower()
        host = (
            f"{domain.replace('.', '-')}.mail.protection.outlook.com."
            if exchange
            else "mx1.mailhost.example."
        )
        self.records.setdefault(domain, []).append(("MX", host))

    @classmethod
    def from_directory(cls, directory) -> Zone:
        """The records the sandbox directory's `dns` section asks for (the demo's domains):
        `spf`, `dkim` (booleans), `dmarc` (a policy, or null for none), `mx` (true: Exchange
        Online, "other": another host, false: none)."""
        zone = cls()
        for domain, setup in directory.dns.items():
            zone.add_microsoft_domain(
                domain, spf=setup.get("spf", True), dkim=setup.get("dkim", True)
            )
            if setup.get("dmarc"):
                zone.add_dmarc(domain, setup["dmarc"])
            if setup.get("mx", False):
                zone.add_mx(domain, exchange=setup["mx"] is True)
        return zone


class ZoneResolver(BaseResolver):
    def __init__(self, zone: Zone):
        self.zone = zone

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name in self.zone.silent:
            time.sleep(30)  # longer than any client timeout
            return reply
        if name in self.zone.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        records = self.zone.records.get(name)
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        qtype = QTYPE[request.q.qtype]
        for rtype, value in records:
            if rtype == "TXT" and qtype in ("TXT", "ANY"):
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(value), ttl=60))
            elif rtype == "CNAME" and qtype in ("CNAME", "ANY", "TXT", "A"):
                reply.add_answer(RR(name, QTYPE.CNAME, rdata=CNAME(value), ttl=60))
            elif rtype == "MX" and qtype in ("MX", "ANY"):
                reply.add_answer(RR(name, QTYPE.MX, rdata=MX(value, 10), ttl=60))
            elif rtype == "A" and qtype in ("A", "ANY"):
                reply.add_answer(RR(name, QTYPE.A, rdata=A(value), ttl=0))
            elif rtype == "AAAA" and qtype in ("AAAA", "ANY"):
                reply.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(value), ttl=0))
        return reply


class SandboxDNS:
    """A UDP DNS server on 127.0.0.1; port 0 picks a free port (see `.port`)."""

    def __init__(self, zone: Zone, host: str = "127.0.0.1", port: int = 0):
        self.zone = zone
        self.server = DNSServer(
            ZoneResolver(zone),
            address=host,
            port=port,
            logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"),
        )

    @property
    def port(self) -> int:
        return self.server.server.server_address[1]

    def start(self) -> SandboxDNS:
        self.server.start_thread()
        return self

    def stop(self) -> None:
        self.server.stop()
        self.server.server.server_close()
