"""The demo data gives every demo user something on every page (issue 14, item 4): each user's
workspaces hold mailboxes in every status and auth method, a consent request of each kind, an
import batch and a bulk-add run — the viewer's only workspace (Globex) included."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from fleet.models import (
    BulkAddRun,
    ConsentRequest,
    Credential,
    ImportBatch,
    Mailbox,
    Workspace,
)

pytestmark = pytest.mark.django_db

DEMO_USERS = ("manager", "operator", "viewer")


@pytest.fixture
def demo(settings):
    # The demo's Microsoft is the sandbox (bin/run's .env): the credentials and consent
    # requests that need it are made too. Nothing here talks to it.
    settings.MICROSOFT_AUTHORITY_HOST = "https://127.0.0.1:8443"
    call_command("seed_demo", stdout=io.StringIO())


def test_every_demo_user_has_every_kind_of_row(demo):
    for username in DEMO_USERS:
        user = get_user_model().objects.get(username=username)
        workspaces = Workspace.objects.restrict(user)
        assert workspaces.exists(), username
        for workspace in workspaces:
            boxes = Mailbox.objects.filter(workspace=workspace)
            assert set(boxes.values_list("status", flat=True)) == set(Mailbox.Status.values), (
                username,
                workspace,
            )
            assert set(boxes.values_list("auth_method", flat=True)) == set(
                Mailbox.AuthMethod.values
            )
            assert boxes.filter(needs_approval=True).exists()
            kinds = set(
                ConsentRequest.objects.filter(workspace=workspace).values_list("kind", flat=True)
            )
            assert kinds == set(ConsentRequest.Kind.values), (username, workspace)
            assert ImportBatch.objects.filter(workspace=workspace, mailboxes__isnull=False).exists()
            run = BulkAddRun.objects.filter(workspace=workspace).get()
            assert run.results.count() == run.total and run.failed > 0


def test_the_viewer_sees_rows_on_every_list(demo, client):
    client.force_login(get_user_model().objects.get(username="viewer"))
    for page in ("mailbox", "consentrequest", "importbatch", "bulkaddrun", "credential"):
        answer = client.get(f"/admin/fleet/{page}/")
        assert answer.status_code == 200, page
        assert answer.context["cl"].result_count > 0, page
        assert all(
            row.workspace.slug == "globex"
            for row in answer.context["cl"].result_list.select_related(None)
            if hasattr(row, "workspace")
        )


def test_globex_shows_what_its_tenant_answers(demo):
    globex = Workspace.objects.get(slug="globex")
    graph = Credential.objects.get(workspace=globex, kind=Credential.Kind.GRAPH_APP_ONLY)
    assert graph.status == "invalid" and graph.last_error == "ADMIN_APPROVAL_REQUIRED"
    assert Mailbox.objects.get(email="max@globex-sales.com").error_code == "BASIC_AUTH_DISABLED"


def test_seed_demo_runs_again_without_duplicates(demo):
    counts = [
        Model.objects.count()
        for Model in (Mailbox, ConsentRequest, ImportBatch, BulkAddRun, Credential)
    ]
    call_command("seed_demo", stdout=io.StringIO())
    assert counts == [
        Model.objects.count()
        for Model in (Mailbox, ConsentRequest, ImportBatch, BulkAddRun, Credential)
    ]


def test_the_mailboxes_the_sandbox_drops_are_tested_a_minute_after_the_drop(demo, monkeypatch):
    """bin/run's demo (issue 12, item 7): the health sweep finds the two mailboxes the sandbox
    drops after SANDBOX_DEMO_DROP_AFTER seconds, without anyone pressing a button."""
    from datetime import timedelta

    from django.utils import timezone

    monkeypatch.setenv("SANDBOX_DEMO_DROP_AFTER", "30")
    before = timezone.now()
    call_command("seed_demo", stdout=io.StringIO())
    for email in ("cara@acme-outreach.com", "ava@acme-outreach.com"):
        due = Mailbox.objects.get(email=email).check_due_at
        assert before + timedelta(seconds=90) <= due <= timezone.now() + timedelta(seconds=90)
    others = Mailbox.objects.exclude(email__in=["cara@acme-outreach.com", "ava@acme-outreach.com"])
    assert not others.filter(check_due_at__lte=timezone.now() + timedelta(minutes=5)).exists()
