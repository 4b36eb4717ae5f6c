"""No SSRF through webhook URLs (fleet/webhook_targets.py): refused when saved (API and admin) and
again at delivery, resolved once and connected to the checked address, no redirects.

Nothing here sends a packet off loopback: names are answered by the loopback DNS server
(tests/conftest.py), and for 10.0.0.1 and 169.254.169.254 a socket audit hook shows that no
connection was even attempted."""

import sys

import pytest
import trustme
from django.urls import reverse

from fleet import webhook_targets, webhooks
from fleet.models import Membership, Role, WebhookDelivery
from tests.receivers import Receiver

CONNECTS: list = []
RECORDING = {"on": False}


def _audit(event, args):
    if event == "socket.connect" and RECORDING["on"]:
        CONNECTS.append(args[1])


sys.addaudithook(_audit)


@pytest.fixture
def connects():
    """Every socket.connect address made while the test runs."""
    CONNECTS.clear()
    RECORDING["on"] = True
    yield CONNECTS
    RECORDING["on"] = False


# A public address (an IANA example address) that is only ever checked, never connected to.
PUBLIC = "93.184.215.14"

REFUSED = [
    ("https://127.0.0.1/hook", "loopback"),
    ("https://127.0.0.1:8443/hook", "loopback"),
    ("https://10.0.0.1/hook", "private"),
    ("https://192.168.1.10/hook", "private"),
    ("https://172.16.0.5/hook", "private"),
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://100.64.0.1/hook", "private"),
    ("https://0.0.0.0/hook", "unspecified"),
    ("https://224.0.0.1/hook", "multicast"),
    ("https://240.0.0.1/hook", "reserved"),
    ("https://[::1]/hook", "loopback"),
    ("https://[fd00::1]/hook", "private"),
    ("https://[fe80::1]/hook", "link-local"),
    ("https://[::ffff:127.0.0.1]/hook", "loopback"),
    ("https://localhost/hook", "loopback"),
    ("https://api.localhost/hook", "loopback"),
    ("https://loopback.fleet.test/hook", "loopback"),  # the loopback DNS says 127.0.0.1
    ("https://mixed.fleet.test/hook", "private"),  # one public and one private address
    (f"http://{PUBLIC}/hook", "https"),
    ("ftp://hooks.fleet.test/hook", "https"),
]


@pytest.fixture
def zone(dns_on_loopback):
    records = dns_on_loopback.zone.records
    records["loopback.fleet.test"] = [("A", "127.0.0.1")]
    records["mixed.fleet.test"] = [("A", PUBLIC), ("A", "10.1.2.3")]
    records["public.fleet.test"] = [
        ("A", PUBLIC),
        ("AAAA", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"),
    ]
    return records


@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_check_refuses_before_connecting(zone, connects, url, why):
    with pytest.raises(webhook_targets.AddressRefused) as refusal:
        webhook_targets.check(url)
    assert why in str(refusal.value)
    # Only the loopback DNS server was asked (UDP "connect" to 127.0.0.1), nothing else.
    assert all(address[0] == "127.0.0.1" for address in connects), connects


def test_public_addresses_and_names_pass(zone, connects):
    target = webhook_targets.check("https://public.fleet.test:8443/fleet")
    assert [str(ip) for ip in target.addresses] == [
        PUBLIC,
        "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
    ]
    assert target.port == 8443 and target.host == "public.fleet.test"
    assert webhook_targets.check(f"https://{PUBLIC}/").addresses[0].exploded == PUBLIC
    assert all(address[0] == "127.0.0.1" for address in connects)


def test_http_is_allowed_only_when_configured(zone, settings):
    settings.WEBHOOK_ALLOW_HTTP = True
    assert webhook_targets.check(f"http://{PUBLIC}/hook").scheme == "http"


def test_private_networks_setting_allows_a_lan_receiver(zone, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    assert str(webhook_targets.check("https://10.0.0.1/hook").addresses[0]) == "10.0.0.1"


# --- checked when saved -------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_api_refuses_to_save_a_webhook_to_an_internal_address(api, api_keys, ws_a, zone, url, why):
    response = api(
        "post", f"/api/v1/workspaces/{ws_a.pk}/webhook", api_keys["root_platform"],
        data={"url": url, "secret": "whsec"},
    )  # fmt: skip
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and why in error["fields"]["url"][0]
    ws_a.refresh_from_db()
    assert ws_a.webhook_url == ""


def test_api_saves_a_public_webhook_and_one_whose_name_does_not_resolve_yet(
    api, api_keys, ws_a, zone
):
    for url in ("https://public.fleet.test/hook", "https://not-yet.fleet.test/hook"):
        response = api(
            "post", f"/api/v1/workspaces/{ws_a.pk}/webhook", api_keys["root_platform"],
            data={"url": url, "secret": "whsec"},
        )  # fmt: skip
        assert response.status_code == 200, response.content
        ws_a.refresh_from_db()
        assert ws_a.webhook_url == url


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://loopback.fleet.test/x",
        "https://10.0.0.1/",
    ],
)
def test_admin_form_refuses_an_internal_address_with_a_message(
    client_for, personas, ws_a, zone, url
):
    Membership.objects.filter(user=personas["bob"], workspace=ws_a).update(role=Role.OWNER)
    client = client_for(personas["bob"])
    page = client.post(
        reverse("admin:fleet_workspace_change", args=[ws_a.pk]),
        {
            "name": ws_a.name, "slug": ws_a.slug, "webhook_url": url, "webhook_secret": "whsec",
            "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
        },
    )  # fmt: skip
    assert page.status_code == 200  # the form again, with the error
    assert "webhooks go to public addresses only" in page.content.decode()
    ws_a.refresh_from_db()
    assert ws_a.webhook_url == ""


# --- checked again at delivery ------------------------------------------------------------------
def delivery_for(ws, url):
    ws.webhook_url, ws.webhook_secret = url, "whsec"
    ws.save()  # as if saved while the name still pointed elsewhere: no form, no check
    return WebhookDelivery.objects.emit(ws, "webhook.test", {})


def deliver(delivery):
    """One attempt, as a send task makes it (lease, attempt, record)."""
    webhooks.send_due(delivery.workspace_id, owner="test")


@pytest.mark.parametrize("address", ["10.0.0.1", "169.254.169.254"])
def test_delivery_to_an_internal_address_is_refused_before_any_connect(
    ws_a, zone, connects, address
):
    delivery = delivery_for(ws_a, f"https://{address}/hook")
    deliver(delivery)
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.last_status_code is None  # retried later
    assert delivery.last_error.startswith("Refused before connecting:")
    assert address in delivery.last_error
    assert not [a for a in connects if a[0] == address], connects


def test_dns_rebinding_is_refused_at_delivery(ws_a, zone, connects, settings):
    """Saved while the name pointed to a public address; at delivery it points to 127.0.0.1,
    where a receiver listens: refused, the receiver gets nothing."""
    settings.WEBHOOK_ALLOW_HTTP = True
    receiver = Receiver().start()
    try:
        zone["rebind.fleet.test"] = [("A", PUBLIC)]
        url = f"http://rebind.fleet.test:{receiver.server.server_address[1]}/hook"
        webhook_targets.validate_webhook_url(url)  # accepted when saved
        delivery = delivery_for(ws_a, url)
        zone["rebind.fleet.test"] = [("A", "127.0.0.1")]
        deliver(delivery)
        delivery.refresh_from_db()
        assert "rebind.fleet.test resolves to 127.0.0.1" in delivery.last_error
        assert receiver.requests == []
        assert not [a for a in connects if a[1] == receiver.server.server_address[1]]
    finally:
        receiver.stop()


@pytest.fixture
def https_receiver(settings, tmp_path):
    """An HTTPS receiver on loopback whose certificate is for hooks.fleet.test only."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.fleet.test").configure_cert(context)
    settings.WEBHOOK_CA_BUNDLE = str(ca_file)
    receiver = Receiver(tls=context, name="hooks.fleet.test").start()
    yield receiver
    receiver.stop()


def test_delivery_connects_to_the_checked_address_with_the_name_for_tls(
    ws_a, zone, connects, settings, https_receiver
):
    """hooks.fleet.test is known only to Fleet's resolver (the loopback DNS): the delivery reaches
    it at the address that resolver gave, TLS checks the certificate for the name (SNI) and the
    Host header carries it."""
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True  # the receiver is on loopback
    zone["hooks.fleet.test"] = [("A", "127.0.0.1")]
    delivery = delivery_for(ws_a, https_receiver.url)
    deliver(delivery)
    delivery.refresh_from_db()
    assert delivery.status == "delivered", delivery.last_error
    (received,) = https_receiver.requests
    port = https_receiver.server.server_address[1]
    assert received.headers["Host"] == f"hooks.fleet.test:{port}"
    assert ("127.0.0.1", port) in connects


def test_a_certificate_for_another_name_fails(ws_a, zone, settings, https_receiver):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    zone["other.fleet.test"] = [("A", "127.0.0.1")]
    port = https_receiver.server.server_address[1]
    delivery = delivery_for(ws_a, f"https://other.fleet.test:{port}/hook")
    deliver(delivery)
    delivery.refresh_from_db()
    assert delivery.status == "pending" and "SSLError" in delivery.last_error
    assert https_receiver.requests == []


def test_a_redirect_to_an_internal_address_is_not_followed(ws_a, zone, settings):
    """The receiver answers 302 to another loopback listener: not followed, recorded as a
    failed attempt; the redirect's target never hears from Fleet."""
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = settings.WEBHOOK_ALLOW_HTTP = True
    target = Receiver().start()
    first = Receiver(statuses=[302], location=target.url).start()
    try:
        delivery = delivery_for(ws_a, first.url)
        deliver(delivery)
        delivery.refresh_from_db()
        assert delivery.last_status_code == 302 and delivery.status == "pending"
        assert len(first.requests) == 1 and target.requests == []
    finally:
        first.stop()
        target.stop()
