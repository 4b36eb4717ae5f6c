"""What each role may do in the admin."""

import re

import pytest
from django.urls import reverse

from fleet.models import Credential, Mailbox, Membership, Role


@pytest.fixture
def team(ws_a, personas):
    from tests.conftest import make_user

    users = {}
    for role in Role.values:
        user = make_user(f"{role}-user")
        Membership.objects.create(user=user, workspace=ws_a, role=role)
        users[role] = user
    return users


@pytest.fixture
def mailbox(ws_a):
    return Mailbox.objects.create(workspace=ws_a, email="r@alpha.example", auth_method="oauth")


def test_viewer_reads_but_cannot_change(team, mailbox, client_for):
    c = client_for(team["viewer"])
    page = c.get(reverse("admin:fleet_mailbox_change", args=[mailbox.pk]))
    assert page.status_code == 200
    assert "Save" not in page.content.decode()
    response = c.post(
        reverse("admin:fleet_mailbox_change", args=[mailbox.pk]), {"display_name": "x"}
    )
    assert response.status_code == 403
    assert c.get(reverse("admin:fleet_mailbox_add")).status_code == 403


@pytest.mark.parametrize(
    "role, can_add_credential",
    [("viewer", False), ("operator", False), ("manager", True), ("owner", True)],
)
def test_credentials_need_manager(team, client_for, role, can_add_credential):
    c = client_for(team[role])
    status = c.get(reverse("admin:fleet_credential_add")).status_code
    assert (status == 200) is can_add_credential


@pytest.mark.parametrize(
    "role, can_edit_members", [("operator", False), ("manager", False), ("owner", True)]
)
def test_members_need_owner(team, client_for, role, can_edit_members, ws_a):
    c = client_for(team[role])
    assert (c.get(reverse("admin:fleet_membership_add")).status_code == 200) is can_edit_members


def test_owner_adds_member_by_username(team, client_for, ws_a, personas):
    c = client_for(team["owner"])
    response = c.post(
        reverse("admin:fleet_membership_add"),
        {"workspace": ws_a.pk, "username": "olga", "role": "viewer"},
    )
    assert response.status_code == 302
    assert Membership.objects.get(user=personas["olga"]).role == "viewer"
    response = c.post(
        reverse("admin:fleet_membership_add"),
        {"workspace": ws_a.pk, "username": "nobody-here", "role": "viewer"},
    )
    assert "No active user" in response.content.decode()


def test_warmup_fields_are_read_only_below_manager(team, mailbox, client_for):
    form = (
        client_for(team["operator"])
        .get(reverse("admin:fleet_mailbox_change", args=[mailbox.pk]))
        .context["adminform"]
        .form
    )
    assert "warmup_daily_volume" not in form.fields
    form = (
        client_for(team["manager"])
        .get(reverse("admin:fleet_mailbox_change", args=[mailbox.pk]))
        .context["adminform"]
        .form
    )
    assert "warmup_daily_volume" in form.fields


def test_only_superusers_create_workspaces(team, client_for, personas):
    assert client_for(team["owner"]).get(reverse("admin:fleet_workspace_add")).status_code == 403
    assert client_for(personas["root"]).get(reverse("admin:fleet_workspace_add")).status_code == 200


def test_credential_secret_is_write_only(team, client_for, ws_a):
    cred = Credential.objects.create(
        workspace=ws_a, name="app", kind="oauth_app", client_id="cid", client_secret="TOPSECRET-1"
    )
    c = client_for(team["manager"])
    url = reverse("admin:fleet_credential_change", args=[cred.pk])
    html = c.get(url).content.decode()
    assert "TOPSECRET-1" not in html
    assert ">set<" in html
    data = {
        "workspace": ws_a.pk,
        "name": "app renamed",
        "kind": "oauth_app",
        "tenant_id": "organizations",
        "client_id": "cid",
        "client_secret": "",
        "redirect_uri": "",
        "secret_expires_at": "",
    }
    assert c.post(url, data).status_code == 302
    cred.refresh_from_db()
    assert cred.name == "app renamed" and cred.client_secret == "TOPSECRET-1"  # blank keeps it
    assert c.post(url, {**data, "client_secret": "NEW-SECRET-2"}).status_code == 302
    cred.refresh_from_db()
    assert cred.client_secret == "NEW-SECRET-2"
    assert c.post(url, {**data, "client_secret__clear": "1"}).status_code == 302
    cred.refresh_from_db()
    assert cred.client_secret == ""
    changelist = c.get(reverse("admin:fleet_credential_changelist")).content.decode()
    assert "NEW-SECRET-2" not in changelist and "not set" in changelist


def test_mailbox_page_shows_history_but_no_secret(team, mailbox, client_for):
    mailbox.password = "PLAIN-APP-PW"
    mailbox.save()
    mailbox.set_status("active", actor=team["manager"])
    html = (
        client_for(team["viewer"])
        .get(reverse("admin:fleet_mailbox_change", args=[mailbox.pk]))
        .content.decode()
    )
    assert "PLAIN-APP-PW" not in html
    assert "pending → active" in html


def test_mailbox_list_offers_import_export_and_connect(team, client_for):
    html = (
        client_for(team["operator"]).get(reverse("admin:fleet_mailbox_changelist")).content.decode()
    )
    for button in (
        "Connect new Outlook",
        "Bulk add (Graph)",
        reverse("admin:fleet_mailbox_import"),
        reverse("admin:fleet_mailbox_export"),
    ):
        assert button in html


def _shown(html: str, name: str) -> str:
    """The text of a read-only field on an admin page, by its field name."""
    match = re.search(rf'field-{name}\b.*?<div class="readonly">(.*?)</div>', html, flags=re.DOTALL)
    assert match, f"{name} is not on the page"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def test_view_only_pages_say_whether_each_secret_is_set(team, mailbox, client_for, ws_a):
    mailbox.password = "PLAIN-APP-PW"
    mailbox.save()
    ws_a.webhook_secret = "WEBHOOK-SECRET-9"
    ws_a.save()
    cred = Credential.objects.create(
        workspace=ws_a, name="app", kind="oauth_app", client_id="cid", client_secret="TOPSECRET-1"
    )
    viewer = client_for(team["viewer"])
    pages = {
        "mailbox": viewer.get(reverse("admin:fleet_mailbox_change", args=[mailbox.pk])),
        "credential": viewer.get(reverse("admin:fleet_credential_change", args=[cred.pk])),
        "workspace": viewer.get(reverse("admin:fleet_workspace_change", args=[ws_a.pk])),
    }
    html = {name: page.content.decode() for name, page in pages.items()}
    assert all(page.status_code == 200 for page in pages.values())
    assert _shown(html["mailbox"], "password_is_set") == "set"
    assert _shown(html["mailbox"], "totp_secret_is_set") == "not set"
    assert _shown(html["mailbox"], "refresh_token_is_set") == "not set"
    assert _shown(html["credential"], "client_secret_is_set") == "set"
    assert _shown(html["workspace"], "webhook_secret_is_set") == "set"
    for page, secret in [
        ("mailbox", "PLAIN-APP-PW"),
        ("credential", "TOPSECRET-1"),
        ("workspace", "WEBHOOK-SECRET-9"),
    ]:
        assert secret not in html[page]


def test_every_admin_declares_how_its_secrets_show():
    """A secret an admin page lists needs its `<name>_is_set` display (fleet.admin.base
    secret_display); without one, view-only pages leave it out."""
    from django.contrib import admin

    from fleet.admin.base import SECRET_SHOWN_AS, ScopedAdmin

    checked = 0
    for model_admin in admin.site._registry.values():
        if not isinstance(model_admin, ScopedAdmin):
            continue
        listed = set()
        for _, opts in model_admin.fieldsets or [(None, {"fields": model_admin.fields or []})]:
            for name in opts["fields"]:
                listed.update(name if isinstance(name, (list, tuple)) else [name])
        for secret in set(model_admin._secret_fields()) & listed:
            assert hasattr(model_admin, f"{secret}{SECRET_SHOWN_AS}"), (model_admin, secret)
            checked += 1
    assert checked >= 4  # mailbox password and TOTP, credential and webhook secrets
