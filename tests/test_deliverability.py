"""SPF/DKIM/DMARC/MX checks against a real DNS server on loopback (the sandbox's)."""

import pytest

from fleet.deliverability import check_domain, check_domains
from sandbox.dns import SandboxDNS, Zone


@pytest.fixture
def dns_server(settings):
    zone = Zone()
    zone.add_microsoft_domain("good.example")
    zone.add_microsoft_domain("nospf.example", spf=False)
    zone.add_microsoft_domain("nodkim.example", dkim=False)
    zone.records["onedkim.example"] = [("TXT", "v=spf1 include:spf.protection.outlook.com -all")]
    zone.records["selector1._domainkey.onedkim.example"] = [("CNAME", "s1.onmicrosoft.com.")]
    zone.records["otherspf.example"] = [("TXT", "v=spf1 include:_spf.google.com ~all")]
    zone.records["twospf.example"] = [
        ("TXT", "v=spf1 include:spf.protection.outlook.com -all"),
        ("TXT", "v=spf1 include:_spf.google.com ~all"),
    ]
    zone.records["verification.example"] = [
        ("TXT", "MS=ms12345678"),
        ("TXT", "v=spf1 ip4:192.0.2.1 include:spf.protection.outlook.com -all"),
    ]
    # DMARC and MX: present and right, absent, wrong.
    zone.add_dmarc("good.example", "reject")
    zone.add_mx("good.example")
    zone.add_dmarc("nospf.example", "none")
    zone.add_mx("nospf.example", exchange=False)  # MX at another host
    zone.records["_dmarc.nodkim.example"] = [("TXT", "v=DMARC1; rua=mailto:x@nodkim.example")]
    zone.records["_dmarc.otherspf.example"] = [
        ("TXT", "v=DMARC1; p=reject"),
        ("TXT", "v=DMARC1; p=none"),  # two records: no DMARC at all (RFC 7489 §6.6.3)
    ]
    zone.records["_dmarc.twospf.example"] = [("TXT", "v=DMARC1; p=sometimes")]
    zone.add_mx("twospf.example")
    zone.add_mx("twospf.example", exchange=False)  # one MX elsewhere: not only Exchange
    zone.servfail.add("broken.example")
    zone.silent.add("slow.example")
    server = SandboxDNS(zone).start()
    settings.DNS_NAMESERVERS = ["127.0.0.1"]
    settings.DNS_PORT = server.port
    settings.DNS_TIMEOUT = 0.5
    yield server
    server.stop()


@pytest.mark.parametrize(
    "domain, spf, dkim",
    [
        ("good.example", True, True),
        ("GOOD.example.", True, True),
        ("nospf.example", False, True),
        ("nodkim.example", True, False),
        ("onedkim.example", True, False),  # both selectors are needed
        ("otherspf.example", False, False),
        ("twospf.example", False, False),  # two SPF records: permerror
        ("verification.example", True, False),  # other TXT records are ignored
        ("missing.example", False, False),  # NXDOMAIN: nothing published
    ],
)
def test_spf_and_dkim(dns_server, domain, spf, dkim):
    result = check_domain(domain)
    assert (result.spf_correct, result.dkim_correct, result.error) == (spf, dkim, "")


@pytest.mark.parametrize("domain", ["broken.example", "slow.example"])
def test_dns_failures_are_reported_not_raised(dns_server, domain):
    result = check_domain(domain)
    assert (result.spf_correct, result.dkim_correct) == (None, None)
    assert result.error == "DNS_LOOKUP_FAILED"


def test_each_domain_is_checked_once(dns_server):
    results = check_domains(["good.example", "Good.Example", "nospf.example", "good.example"])
    assert set(results) == {"good.example", "nospf.example"}
    assert results["nospf.example"].as_dict() == {
        "spf_correct": False,
        "dkim_correct": True,
        "dmarc_correct": True,
        "mx_correct": False,
    }


@pytest.mark.parametrize(
    "domain, dmarc, policy, mx",
    [
        ("good.example", True, "reject", True),
        ("nospf.example", True, "none", False),  # DMARC p=none; MX elsewhere
        ("nodkim.example", False, "", False),  # a DMARC record without a policy; no MX
        ("otherspf.example", False, "", False),  # two DMARC records
        ("twospf.example", False, "", False),  # an unknown policy; mixed MX hosts
        ("missing.example", False, "", False),  # nothing published
    ],
)
def test_dmarc_and_mx(dns_server, domain, dmarc, policy, mx):
    result = check_domain(domain)
    assert (result.dmarc_correct, result.dmarc_policy, result.mx_correct, result.error) == (
        dmarc,
        policy,
        mx,
        "",
    )
