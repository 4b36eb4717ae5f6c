"""Tenant isolation: alice (operator of A), bob (manager of A, viewer of B), olga (outsider),
root (superuser) over every changelist, change page, choice list, autocomplete and action."""

import json

import pytest
from django.urls import reverse

from fleet.models import (
    ConsentRequest,
    Credential,
    Mailbox,
    MailboxEvent,
    Membership,
    Tag,
    Workspace,
)


@pytest.fixture
def world(personas, mailboxes, ws_a, ws_b):
    for ws, mb in [(ws_a, mailboxes["a"]), (ws_b, mailboxes["b"])]:
        Credential.objects.create(
            workspace=ws, name=f"cred-{ws.slug}", kind="oauth_app", client_id=f"cid-{ws.slug}"
        )
        ConsentRequest.objects.create(workspace=ws, mailbox=mb, kind="user")
        mb.set_status("active")
    return {**personas, **mailboxes, "ws_a": ws_a, "ws_b": ws_b}


MODELS = [Workspace, Membership, Credential, Tag, Mailbox, ConsentRequest, MailboxEvent]


def visible(model, user):
    return set(model.objects.restrict(user).values_list("pk", flat=True))


def in_workspace(model, ws):
    lookup = model.workspace_lookup
    return set(model.objects.filter(**{lookup: ws.pk}).values_list("pk", flat=True))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_restrict_matrix(world, model):
    a, b = in_workspace(model, world["ws_a"]), in_workspace(model, world["ws_b"])
    assert a and b
    assert visible(model, world["alice"]) == a
    assert visible(model, world["bob"]) == a | b
    assert visible(model, world["olga"]) == set()
    assert visible(model, world["root"]) >= a | b


def test_restrict_by_role(world):
    # bob manages A but only views B
    assert set(Mailbox.objects.restrict(world["bob"], "manager")) == {world["a"]}
    assert set(Mailbox.objects.restrict(world["alice"], "manager")) == set()


def changelist(model):
    return reverse(f"admin:fleet_{model._meta.model_name}_changelist")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_changelists_show_only_own_workspaces(world, client_for, model):
    c = client_for(world["alice"])
    response = c.get(changelist(model))
    assert response.status_code == 200
    shown = {obj.pk for obj in response.context["cl"].result_list}
    assert shown == in_workspace(model, world["ws_a"])


def test_changelist_html_does_not_leak_other_workspace(world, client_for):
    html = client_for(world["alice"]).get(changelist(Mailbox)).content.decode()
    assert "ann@alpha.example" in html
    assert "ben@beta.example" not in html
    assert "Beta" not in html  # not even in the workspace filter


def test_outsider_sees_no_fleet_models(world, client_for):
    c = client_for(world["olga"])
    assert c.get(changelist(Mailbox)).status_code == 403
    index = c.get(reverse("admin:index")).content.decode()
    assert "Mailboxes" not in index


@pytest.mark.parametrize("model", [Mailbox, Credential, Tag, ConsentRequest, Membership])
def test_other_workspace_object_is_404(world, client_for, model):
    obj = model.objects.filter(**{model.workspace_lookup: world["ws_b"].pk}).first()
    c = client_for(world["alice"])
    for view in ("change", "delete", "history"):
        url = reverse(f"admin:fleet_{model._meta.model_name}_{view}", args=[obj.pk])
        assert c.get(url).status_code == 404, (model, view)


def test_workspace_page_of_other_workspace_is_404(world, client_for):
    url = reverse("admin:fleet_workspace_change", args=[world["ws_b"].pk])
    assert client_for(world["alice"]).get(url).status_code == 404
    assert client_for(world["bob"]).get(url).status_code == 200


def test_foreign_key_choices_are_scoped(world, client_for):
    c = client_for(world["alice"])
    form = c.get(reverse("admin:fleet_mailbox_add")).context["adminform"].form
    assert set(form.fields["workspace"].queryset) == {world["ws_a"]}
    assert set(form.fields["tags"].queryset) == {world["tag_a"]}
    # bob may add only where he is at least an operator: A, not B.
    form = (
        client_for(world["bob"]).get(reverse("admin:fleet_mailbox_add")).context["adminform"].form
    )
    assert set(form.fields["workspace"].queryset) == {world["ws_a"]}


def test_forged_post_into_another_workspace_is_refused(world, client_for):
    c = client_for(world["alice"])
    response = c.post(
        reverse("admin:fleet_mailbox_add"),
        {
            "workspace": world["ws_b"].pk,
            "email": "sneaky@beta.example",
            "provider": "microsoft365",
            "auth_method": "app_password",
            "smtp_host": "smtp.office365.com",
            "smtp_port": 587,
            "smtp_security": "starttls",
            "imap_host": "outlook.office365.com",
            "imap_port": 993,
            "imap_security": "ssl",
        },
    )
    assert response.status_code == 200  # the form comes back with an error
    assert "workspace" in response.context["adminform"].form.errors
    assert not Mailbox.objects.filter(email="sneaky@beta.example").exists()


def test_autocomplete_is_scoped(world, client_for):
    url = reverse("admin:autocomplete")
    params = {"app_label": "fleet", "model_name": "mailbox", "field_name": "tags", "term": ""}
    c = client_for(world["alice"])
    names = {r["text"] for r in json.loads(c.get(url, params).content)["results"]}
    assert names == {"alpha-tag"}
    c = client_for(world["olga"])
    assert c.get(url, params).status_code == 403


def test_actions_only_touch_own_workspace(world, client_for):
    c = client_for(world["bob"])  # manager of A, viewer of B
    response = c.post(
        changelist(Mailbox),
        {"action": "disable", "_selected_action": [world["a"].pk, world["b"].pk]},
    )
    assert response.status_code == 302
    world["a"].refresh_from_db()
    world["b"].refresh_from_db()
    assert world["a"].status == "disabled"
    assert world["b"].status == "active"


def test_operator_cannot_run_manager_actions(world, client_for):
    c = client_for(world["alice"])
    response = c.get(changelist(Mailbox))
    assert "disable" not in dict(
        response.context["cl"].model_admin.get_action_choices(response.wsgi_request)
    )
    c.post(changelist(Mailbox), {"action": "disable", "_selected_action": [world["a"].pk]})
    world["a"].refresh_from_db()
    assert world["a"].status == "active"


def test_list_filter_choices_are_scoped(world, client_for):
    response = client_for(world["bob"]).get(changelist(Mailbox))
    filters = {f.title: f for f in response.context["cl"].filter_specs}
    workspace_choices = {label for _, label in filters["workspace"].lookup_choices}
    assert workspace_choices == {"Alpha", "Beta"}
    # alice has one workspace and one tag (Django hides a filter with a single choice);
    # the other workspace's names appear nowhere on the page.
    response = client_for(world["alice"]).get(changelist(Mailbox))
    filters = {f.title: f for f in response.context["cl"].filter_specs}
    for title, expected in [("workspace", {"Alpha"}), ("tags", {"alpha-tag"})]:
        if title in filters:
            assert {label for _, label in filters[title].lookup_choices} == expected
    html = response.content.decode()
    assert "beta-tag" not in html and "Beta" not in html


def test_superuser_sees_everything(world, client_for):
    response = client_for(world["root"]).get(changelist(Mailbox))
    assert {m.email for m in response.context["cl"].result_list} >= {
        "ann@alpha.example",
        "ben@beta.example",
    }
