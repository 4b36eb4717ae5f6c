"""Starting a bulk add from the admin (operator role), end to end through a real db_worker, and
the Graph credentials it needs: verify's distinct codes, required expiry, expiry warnings."""

from datetime import date, timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from fleet.credentials import verify
from fleet.models import BulkAddRun, ConsentRequest, Credential, Mailbox
from tests.test_bulk_add import ACME, CLIENT_ID, SECRET
from tests.test_tasks import run_workers
from tests.test_tokens import sandbox_env

START = "admin:fleet_bulkaddrun_start"


def graph_credential_of(workspace, **extra):
    return Credential.objects.create(
        **{
            "workspace": workspace,
            "name": f"{workspace.name} Graph",
            "kind": Credential.Kind.GRAPH_APP_ONLY,
            "tenant_id": ACME,
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "secret_expires_at": date.today() + timedelta(days=300),
            "status": Credential.Status.VALID,
            **extra,
        }
    )


@pytest.fixture
def credential_a(ws_a):
    return graph_credential_of(ws_a)


def post(client, **data):
    return client.post(reverse(START), data)


def test_mailbox_list_offers_the_bulk_add(personas, client_for):
    page = client_for(personas["alice"]).get(reverse("admin:fleet_mailbox_changelist"))
    assert reverse(START) in page.content.decode()


def test_operator_starts_a_run_and_lands_on_its_results(
    ws_a, credential_a, personas, client_for, django_capture_on_commit_callbacks
):
    operator = client_for(personas["alice"])
    form = operator.get(reverse(START)).context["form"]
    assert list(form.fields["workspace"].queryset) == [ws_a]  # operator+ workspaces only
    with django_capture_on_commit_callbacks(execute=True):
        answer = post(
            operator,
            workspace=ws_a.pk,
            accounts='jim@acme-outreach.com,Jimothy H\nmichael@acme-outreach.com, "Scarn, Michael"\n',
        )
    run = BulkAddRun.objects.get()
    assert answer.status_code == 302
    assert answer["Location"] == reverse("admin:fleet_bulkaddrun_change", args=[run.pk])
    assert (run.workspace, run.credential, run.created_by, run.status, run.total) == (
        ws_a,
        credential_a,
        personas["alice"],
        "queued",
        2,
    )
    assert [(r.email, r.name, r.done) for r in run.results.all()] == [
        ("jim@acme-outreach.com", "Jimothy H", False),
        ("michael@acme-outreach.com", "Scarn, Michael", False),
    ]
    task = DBTaskResult.objects.get()
    assert task.task_path == "fleet.tasks.run_bulk_add" and task.args_kwargs["args"] == [run.pk]
    page = operator.get(answer["Location"]).content.decode()
    assert "data-refresh" in page and "0 of 2 checked" in page


def test_csv_upload(ws_a, credential_a, personas, client_for):
    upload = SimpleUploadedFile(
        "boxes.csv",
        "\ufeffmailbox_email;display_name\nJim@acme-outreach.com;Jimothy H\nann@acme-outreach.com;\n".encode(),
        content_type="text/csv",
    )
    answer = client_for(personas["alice"]).post(
        reverse(START), {"workspace": ws_a.pk, "csv_file": upload}
    )
    assert answer.status_code == 302
    assert [(r.email, r.name) for r in BulkAddRun.objects.get().results.all()] == [
        ("jim@acme-outreach.com", "Jimothy H"),
        ("ann@acme-outreach.com", ""),
    ]
    wrong = SimpleUploadedFile("x.csv", b"email,name\na@b.example,A\n", content_type="text/csv")
    page = client_for(personas["alice"]).post(
        reverse(START), {"workspace": ws_a.pk, "csv_file": wrong}
    )
    assert "CSV must have a mailbox_email column" in page.content.decode()
    assert BulkAddRun.objects.count() == 1


def test_bad_lines_are_all_reported_before_anything_runs(ws_a, credential_a, personas, client_for):
    page = post(
        client_for(personas["alice"]),
        workspace=ws_a.pk,
        accounts="ok@acme-outreach.com\nnot-an-address\nOK@acme-outreach.com,dup\n,no address\n",
    ).content.decode()
    # Sentences, without the internal code (VALIDATION_ERROR).
    assert "Line 2: &#x27;not-an-address&#x27; is not a valid email address." in page
    assert "Line 3: OK@acme-outreach.com is a duplicate of line 1." in page
    assert "Line 4: missing mailbox_email." in page
    assert "VALIDATION_ERROR" not in page
    too_many = "\n".join(f"u{n}@acme-outreach.com" for n in range(501))
    page = post(client_for(personas["alice"]), workspace=ws_a.pk, accounts=too_many)
    assert "Maximum 500 mailboxes per bulk add (501 given)" in page.content.decode()
    assert not BulkAddRun.objects.exists() and not DBTaskResult.objects.exists()


def test_no_credential_and_not_exactly_one_valid(ws_a, personas, client_for):
    operator = client_for(personas["alice"])
    page = post(operator, workspace=ws_a.pk, accounts="jim@acme-outreach.com")
    # A sentence with what to do (INVALID_CREDENTIAL_ID's hint), not the code.
    assert "Pick a Graph app-only credential of this workspace" in page.content.decode()
    graph_credential_of(ws_a, name="one")
    graph_credential_of(ws_a, name="two")
    page = post(operator, workspace=ws_a.pk, accounts="jim@acme-outreach.com")
    assert "several valid Graph credentials" in page.content.decode()
    assert not BulkAddRun.objects.exists()


def test_isolation(ws_a, ws_b, credential_a, personas, client_for):
    credential_b = graph_credential_of(ws_b)
    alice = client_for(personas["alice"])
    # Another workspace's credential: refused (INVALID_CREDENTIAL_ID, said in words), nothing done.
    page = post(
        alice, workspace=ws_a.pk, credential=credential_b.pk, accounts="a@acme-outreach.com"
    )
    assert "Pick a Graph app-only credential of this workspace" in page.content.decode()
    assert f"{ws_b} · " not in page.content.decode()  # B's credentials are not offered
    # A workspace where alice is not an operator.
    page = post(
        alice, workspace=ws_b.pk, credential=credential_b.pk, accounts="a@acme-outreach.com"
    )
    assert "Select a valid choice" in page.content.decode()
    assert not BulkAddRun.objects.exists()
    # Viewers and outsiders cannot open the page.
    assert client_for(personas["olga"]).get(reverse(START)).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_end_to_end_in_a_worker(sandbox, ws_a, personas, client_for, monkeypatch):
    """The admin form, then a real `db_worker` process runs the task against the sandbox."""
    sandbox_env(sandbox, monkeypatch)
    sandbox.directory.tenant(ACME).consented_apps.add("00000000-f1ee-4de0-8000-000000000002")
    credential = graph_credential_of(
        ws_a,
        client_id="00000000-f1ee-4de0-8000-000000000002",
        client_secret="fleet-demo-graph-secret",
    )
    Mailbox.objects.create(
        workspace=ws_a, email="Rosa@acme-outreach.com", auth_method="app_password"
    )
    answer = post(
        client_for(personas["alice"]),
        workspace=ws_a.pk,
        accounts="rosa@acme-outreach.com\nsam@acme-outreach.com,Sam O.\nsales@acme-outreach.com\npaul@acme-outreach.com",
    )
    assert answer.status_code == 302
    run_workers(1)
    run = BulkAddRun.objects.get()
    assert (run.status, run.outcome, run.connected, run.failed) == (
        "finished",
        "partly_connected",
        2,
        2,
    )
    assert DBTaskResult.objects.get().status == "SUCCESSFUL"
    assert Mailbox.objects.filter(workspace=ws_a).count() == 2  # rosa updated, sam created
    rosa = Mailbox.objects.get(email__iexact="rosa@acme-outreach.com")
    assert (rosa.auth_method, rosa.status, rosa.credential_id) == (
        "graph_app_only",
        "active",
        credential.pk,
    )
    page = client_for(personas["alice"]).get(answer["Location"]).content.decode()
    assert "data-refresh" not in page  # finished: the page stops refreshing
    assert "WRONG_ALIAS" in page and "primary address: olivia@acme-outreach.com" in page
    assert "Assign the user a licence that includes Exchange Online" in page  # the hint


# --- Graph credentials ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, code",
    [
        ({"client_secret": "not-the-secret"}, "CLIENT_SECRET_INVALID"),
        ({"client_secret": "old-secret"}, "CLIENT_SECRET_EXPIRED"),
        ({"client_id": "12345678-0000-4000-8000-000000000000"}, "APP_NOT_FOUND_IN_TENANT"),
        ({"tenant_id": "nowhere.example"}, "TENANT_NOT_FOUND"),
        ({"tenant_id": "7c4d2e9f-1b3a-4f6c-8d2e-9105ebe0b002"}, "ADMIN_APPROVAL_REQUIRED"),
        ({}, ""),
    ],
)
def test_verify_maps_each_refusal_to_its_own_code(sandbox, ws_a, change, code):
    app = sandbox.directory.add_app(CLIENT_ID, SECRET, "Fleet bulk add (tests)")
    app.expired_secrets.append("old-secret")
    sandbox.directory.tenant(ACME).consented_apps.add(CLIENT_ID)
    credential = graph_credential_of(ws_a, status=Credential.Status.UNVERIFIED, **change)
    verify(credential)
    assert (credential.status, credential.last_error) == ("invalid" if code else "valid", code)


def test_graph_credentials_need_a_secret_expiry(ws_a, personas, client_for):
    manager = client_for(personas["bob"])
    data = {
        "workspace": ws_a.pk,
        "name": "No expiry",
        "kind": "graph_app_only",
        "tenant_id": ACME,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "redirect_uri": "",
    }
    page = manager.post(reverse("admin:fleet_credential_add"), data)
    assert (
        page.status_code == 200
        and "Required for Graph app-only credentials" in page.content.decode()
    )
    assert not Credential.objects.exists()
    data["secret_expires_at"] = (date.today() + timedelta(days=365)).isoformat()
    assert manager.post(reverse("admin:fleet_credential_add"), data).status_code == 302


def test_expiring_secrets_are_flagged_and_consent_is_offered(ws_a, personas, client_for):
    soon = graph_credential_of(
        ws_a, name="Soon", secret_expires_at=timezone.localdate() + timedelta(days=12)
    )
    graph_credential_of(ws_a, name="Later")
    graph_credential_of(
        ws_a, name="Unconsented", status="invalid", last_error="ADMIN_APPROVAL_REQUIRED"
    )
    manager = client_for(personas["bob"])
    page = manager.get(reverse("admin:fleet_credential_changelist")).content.decode()
    assert "expires in 12 d" in page and page.count("expires in") == 1
    flagged = manager.get(reverse("admin:fleet_credential_changelist"), {"secret_expiry": "soon"})
    assert [c.pk for c in flagged.context["cl"].result_list] == [soon.pk]
    unconsented = Credential.objects.get(name="Unconsented")
    consent_url = reverse("admin:fleet_credential_admin_consent", args=[unconsented.pk])
    assert consent_url in page
    assert manager.get(consent_url).status_code == 200
    links = manager.post(consent_url)
    request = ConsentRequest.objects.get(kind="admin", credential=unconsented)
    assert request.consent_url in links.content.decode()
    # Operators may not ask for tenant-wide consent.
    assert client_for(personas["alice"]).post(consent_url).status_code == 403
    assert ConsentRequest.objects.count() == 1
