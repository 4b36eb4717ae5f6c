"""No button or link leads to a 403 for the user who sees it; the 403 page names the role and
leads back; a PermissionDenied is logged as one line."""

import io
import logging
import re
from html import unescape
from urllib.parse import urljoin, urlsplit

import pytest
from django.urls import reverse

from fleet import errors
from fleet.models import ConsentRequest, Credential, ImportBatch, Mailbox, Membership, Role
from tests.conftest import make_user

HREF = re.compile(r'(?:href|formaction)="([^"#]*)"')
# Pages whose links are followed (two levels: these, then the pages they link to).
SKIP = ("/admin/logout/", "/admin/password_change/", "/admin/fleet/mailbox/export/")


@pytest.fixture
def fleet_of(ws_a):
    """A workspace with something in every list, so every list shows its links."""
    credential = Credential.objects.create(
        workspace=ws_a,
        name="Graph app",
        kind=Credential.Kind.GRAPH_APP_ONLY,
        tenant_id="contoso.example",
        client_id="11111111-2222-3333-4444-555555555555",
        client_secret="s3cret",
        status=Credential.Status.INVALID,
        last_error=errors.ADMIN_APPROVAL_REQUIRED.code,
    )
    mailbox = Mailbox.objects.create(
        workspace=ws_a,
        email="ann@alpha.example",
        auth_method="app_password",
        password="pw",
        totp_secret="JBSWY3DPEHPK3PXP",
        status=Mailbox.Status.ERROR,
        error_code=errors.INVALID_CREDENTIALS.code,
    )
    ConsentRequest.objects.create(workspace=ws_a, kind="user", mailbox=mailbox)
    ImportBatch.objects.create(workspace=ws_a, file_name="m.csv", imported=1, failed=0)
    return {"credential": credential, "mailbox": mailbox}


@pytest.fixture
def role_users(ws_a):
    users = {}
    for role in Role.values:
        user = make_user(f"{role}-only")
        Membership.objects.create(user=user, workspace=ws_a, role=role)
        users[role] = user
    return users


def links_on(html: str, base: str) -> set[str]:
    found = set()
    for raw in HREF.findall(html):
        url = urljoin(base, unescape(raw))
        parts = urlsplit(url)
        if parts.netloc or not parts.path.startswith("/admin/") or parts.path in SKIP:
            continue
        found.add(url)
    return found


@pytest.mark.parametrize("role", Role.values)
def test_no_link_a_role_sees_answers_403(role, role_users, fleet_of, client_for):
    """Every link and form button on the dashboard and on the pages it links to, followed as the
    user who sees them: none is a 403 (the viewer was offered *Bulk add (Graph)* before)."""
    c = client_for(role_users[role])
    start = reverse("admin:index")
    seen, forbidden = {start}, []
    level = {start}
    for _ in range(2):
        following = set()
        for url in level:
            page = c.get(url)
            if page.status_code == 403:
                forbidden.append(url)
            if page.status_code != 200 or "html" not in page.get("Content-Type", ""):
                continue
            following |= links_on(page.content.decode(), url) - seen
        seen |= following
        level = following
    for url in level:
        if c.get(url).status_code == 403:
            forbidden.append(url)
    assert len(seen) > 20  # the crawl did reach the lists and objects
    assert forbidden == [], f"{role} is offered links that answer 403: {forbidden}"


def test_viewer_is_not_offered_operator_buttons(role_users, fleet_of, client_for):
    viewer = client_for(role_users["viewer"])
    page = viewer.get(reverse("admin:fleet_mailbox_changelist")).content.decode()
    assert "Bulk add (Graph)" not in page and "Connect new Outlook" not in page
    credentials = viewer.get(reverse("admin:fleet_credential_changelist")).content.decode()
    assert "request admin consent" not in credentials
    assert errors.ADMIN_APPROVAL_REQUIRED.code in credentials  # the code itself is still shown


def test_operator_is_offered_the_buttons(role_users, fleet_of, client_for):
    page = client_for(role_users["operator"]).get(reverse("admin:fleet_mailbox_changelist"))
    html = page.content.decode()
    assert "Bulk add (Graph)" in html and "Connect new Outlook" in html


def test_403_page_names_the_role_and_leads_back(role_users, client_for):
    c = client_for(role_users["viewer"])
    came_from = "http://testserver" + reverse("admin:fleet_mailbox_changelist")
    page = c.get(reverse("admin:fleet_bulkaddrun_start"), HTTP_REFERER=came_from)
    assert page.status_code == 403
    html = page.content.decode()
    assert "Adding mailboxes in bulk needs the operator role in a workspace." in html
    assert f'href="{came_from}"' in html  # back where the user came from
    assert 'id="site-name"' in html and "fleet/admin.css" in html  # the admin's own frame
    # Django's own refusals (no reason given) say how roles work instead.
    page = c.get(reverse("admin:fleet_mailbox_add"))
    assert page.status_code == 403 and "viewer → operator → manager → owner" in page.content.decode()


def test_403_under_api_stays_an_envelope(client):
    from django.core.exceptions import PermissionDenied

    from fleet.api.envelope import permission_denied

    request = __import__("django.test", fromlist=["RequestFactory"]).RequestFactory().get("/api/v1/x")
    response = permission_denied(request, PermissionDenied("no"))
    assert response.status_code == 403 and b'"PERMISSION_DENIED"' in response.content


def test_permission_denied_is_logged_as_one_line(role_users, client_for):
    handler = next(
        h
        for h in logging.getLogger().handlers
        if any(type(f).__name__ == "PermissionDeniedOneLine" for f in h.filters)
    )
    stream = io.StringIO()
    old = handler.setStream(stream)
    try:
        page = client_for(role_users["viewer"]).get(reverse("admin:fleet_bulkaddrun_start"))
    finally:
        handler.setStream(old)
    assert page.status_code == 403
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Forbidden" in lines[0] and "needs the operator role" in lines[0]
    assert "Traceback" not in stream.getvalue()
