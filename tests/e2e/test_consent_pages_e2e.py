"""The consent pages (issue 14, item 9) in Chromium at 1280x800: after a consent the page says
what happens next and, for a visitor signed in to Fleet, leads to the mailbox and back; the
consent request's Add form asks for what each kind needs, with key/value request data."""

import re

import pytest
from playwright.sync_api import expect

from fleet import consent
from fleet.models import ConsentRequest, Credential, Mailbox
from tests.e2e.conftest import Shots, log_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def laptop(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.shots = Shots(page, request.node.name)
    yield page
    context.close()


def sign_in_at_the_sandbox(page, sandbox):
    page.wait_for_url(re.compile(re.escape(sandbox.browser_url)))
    if page.locator("input[type=password]").count():
        page.fill("input[type=password]", "sandbox")
    page.click("button[value=accept]")
    page.wait_for_url(re.compile(r"/oauth/callback/"))


def test_consent_result_leads_back_to_fleet(
    laptop, live_server, people, ws_a, sandbox, oauth_app, settings
):
    settings.FLEET_BASE_URL = live_server.url
    eve = Mailbox.objects.create(
        workspace=ws_a, email="eve@acme-outreach.com", auth_method="oauth", status="reauth_required"
    )
    # A manager opens the link in the browser where they use Fleet.
    log_in(laptop, live_server, "mo")
    link = consent.initiate(ws_a, mailbox_uid=eve.uid, base_url=live_server.url).consent_url
    laptop.goto(link)
    sign_in_at_the_sandbox(laptop, sandbox)
    expect(laptop.locator("h1")).to_contain_text("Connected: eve@acme-outreach.com")
    expect(laptop.locator("#next-steps")).to_contain_text("Fleet tests the connection now")
    laptop.shots("signed-in-visitor")
    laptop.click("#open-mailbox")
    laptop.wait_for_url(re.compile(rf"/admin/fleet/mailbox/{eve.pk}/change/"))
    expect(laptop.locator("#content h2").first).to_have_text("eve@acme-outreach.com")
    laptop.go_back()
    laptop.click("#back-to-fleet")
    laptop.wait_for_url(f"{live_server.url}/admin/")

    # The mailbox's owner, not signed in to Fleet, is told what happens and nothing more.
    laptop.context.clear_cookies()
    eve.refresh_from_db()
    again = consent.initiate(ws_a, mailbox_uid=eve.uid, base_url=live_server.url)
    laptop.goto(again.consent_url)
    sign_in_at_the_sandbox(laptop, sandbox)
    expect(laptop.locator("#next-steps")).to_contain_text("You can close this page")
    assert laptop.locator("#open-mailbox, #back-to-fleet").count() == 0
    laptop.shots("owner-not-signed-in")


def test_new_mailbox_consent_says_it_waits_for_approval(
    laptop, live_server, people, ws_a, sandbox, oauth_app, settings
):
    settings.FLEET_BASE_URL = live_server.url
    log_in(laptop, live_server, "alice")
    link = consent.initiate(ws_a, new_mailbox=True, base_url=live_server.url).consent_url
    laptop.goto(link)
    laptop.fill("input[name=username]", "rosa@acme-outreach.com")
    sign_in_at_the_sandbox(laptop, sandbox)
    steps = laptop.locator("#next-steps")
    expect(steps).to_contain_text("approves the mailbox")
    rosa = Mailbox.objects.get(email="rosa@acme-outreach.com")
    assert rosa.needs_approval and rosa.status == "pending"
    expect(laptop.locator("#open-mailbox")).to_have_attribute(
        "href", f"/admin/fleet/mailbox/{rosa.pk}/change/"
    )
    laptop.shots("new-mailbox-waits")


def test_add_form_guides_by_kind(laptop, live_server, people, ws_a, oauth_app):
    graph = Credential.objects.create(
        workspace=ws_a,
        name="Acme Graph",
        kind=Credential.Kind.GRAPH_APP_ONLY,
        tenant_id="acme-outreach.com",
        client_id="c",
        client_secret="s",
    )
    ava = Mailbox.objects.create(workspace=ws_a, email="ava@acme-outreach.com", auth_method="oauth")
    log_in(laptop, live_server, "mo")
    laptop.goto(f"{live_server.url}/admin/fleet/consentrequest/add/")
    form = laptop.locator("#consentrequest_form")

    def visible(field):
        return form.locator(f".field-{field}").is_visible()

    assert laptop.locator("#id_kind_0").is_checked()  # user consent first
    assert visible("mailbox") and visible("address") and not visible("credential")
    assert not visible("consent_url")
    assert form.locator("input[placeholder=key]").count() == 4  # key/value rows, not JSON
    assert form.locator("textarea").count() == 0
    laptop.shots("user-kind")
    laptop.check("input[name=kind][value=admin]")
    assert visible("credential") and not visible("mailbox") and not visible("consent_url")
    laptop.shots("admin-kind")
    laptop.check("input[name=kind][value=external]")
    assert visible("consent_url") and visible("mailbox") and not visible("credential")
    laptop.shots("external-kind")

    # Admin consent without a credential: said in words, beside the field, nothing created.
    laptop.select_option("#id_workspace", str(ws_a.pk))
    laptop.check("input[name=kind][value=admin]")
    laptop.click("input[name=_save]")
    expect(laptop.locator(".field-credential .errorlist")).to_contain_text(
        "Pick the credential whose app needs admin consent"
    )
    assert not ConsentRequest.objects.exists()
    laptop.shots("admin-kind-without-credential")
    laptop.check("input[name=kind][value=admin]")
    laptop.select_option("#id_credential", str(graph.pk))
    laptop.click("input[name=_save]")
    expect(laptop.locator("ul.messagelist")).to_contain_text("was added successfully")
    assert ConsentRequest.objects.get().credential == graph

    # User consent for a mailbox that Fleet does not hold yet, typed, with request data.
    laptop.goto(f"{live_server.url}/admin/fleet/consentrequest/add/")
    laptop.select_option("#id_workspace", str(ws_a.pk))
    laptop.fill("#id_address", "jim@acme-outreach.com")
    keys = form.locator("input[placeholder=key]")
    values = form.locator("input[placeholder=value]")
    keys.nth(0).fill("display_name")
    values.nth(0).fill("Jim H")
    keys.nth(1).fill("email_per_day")
    values.nth(1).fill("20")
    laptop.shots("user-kind-typed-address")
    laptop.click("input[name=_save]")
    expect(laptop.locator("ul.messagelist")).to_contain_text("was added successfully")
    jim = ConsentRequest.objects.get(username="jim")
    assert jim.kind == "user" and jim.mailbox is None and jim.domain == "acme-outreach.com"
    assert jim.request_data == {
        "display_name": "Jim H",
        "email_per_day": "20",
        "email": "jim@acme-outreach.com",
    }

    # A typed address of a mailbox the workspace holds is that mailbox.
    laptop.goto(f"{live_server.url}/admin/fleet/consentrequest/add/")
    laptop.select_option("#id_workspace", str(ws_a.pk))
    laptop.check("input[name=kind][value=external]")
    laptop.fill("#id_address", "AVA@acme-outreach.com")
    laptop.fill("#id_consent_url", "https://sequencer.example/connect/ava")
    laptop.click("input[name=_save]")
    expect(laptop.locator("ul.messagelist")).to_contain_text("was added successfully")
    external = ConsentRequest.objects.get(kind="external")
    assert external.mailbox == ava and external.consent_url.endswith("/connect/ava")
    laptop.shots("external-added")
