import csv
import io

import pytest
from django.urls import reverse

from fleet.api.bulk import BulkAddResultSerializer
from fleet.models import BulkAddResult, BulkAddRun, Mailbox


def seed(result) -> dict:
    """A result as Woodpecker's bulk-add API shows it (the API's representation, without Fleet's two fields)."""
    data = BulkAddResultSerializer(result).data
    return {k: v for k, v in data.items() if k not in ("mailbox_uid", "error_detail")}


@pytest.fixture
def run(ws_a):
    run = BulkAddRun.objects.create(
        workspace=ws_a,
        total=3,
        processed=3,
        connected=1,
        failed=2,
        status="finished",
        outcome="partly_connected",
    )
    mailbox = Mailbox.objects.create(
        workspace=ws_a, email="jim@alpha.example", auth_method="graph_app_only"
    )
    BulkAddResult.objects.create(
        run=run,
        position=0,
        email="jim@alpha.example",
        name="Jim",
        done=True,
        success=True,
        mailbox=mailbox,
        spf_correct=True,
        dkim_correct=False,
    )
    BulkAddResult.objects.create(
        run=run,
        position=1,
        email="alias@alpha.example",
        name='=HYPERLINK("x")',
        done=True,
        error_code="WRONG_ALIAS",
        error_detail="primary address: michael@alpha.example",
    )
    BulkAddResult.objects.create(
        run=run,
        position=2,
        email="nobody@alpha.example",
        done=True,
        error_code="INVALID_CREDENTIAL_ID",
    )
    return run


def test_results_page_explains_codes_and_filters(run, personas, client_for):
    c = client_for(personas["alice"])
    url = reverse("admin:fleet_bulkaddrun_change", args=[run.pk])
    page = c.get(url).content.decode()
    assert "WRONG_ALIAS" in page and "Add the mailbox by its primary address" in page
    assert "primary address: michael@alpha.example" in page
    filtered = c.get(url, {"code": "WRONG_ALIAS"}).context["results"]
    assert [r.email for r in filtered] == ["alias@alpha.example"]


def test_results_export_as_csv_without_formulas(run, personas, client_for):
    url = reverse("admin:fleet_bulkaddrun_change", args=[run.pk])
    response = client_for(personas["alice"]).get(url, {"format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["error"] for r in rows] == ["", "WRONG_ALIAS", "INVALID_CREDENTIAL_ID"]
    assert rows[1]["name"] == '\'=HYPERLINK("x")'
    assert rows[0]["success"] == "True" and rows[0]["dkim_correct"] == "False"


def test_seed_shape(run):
    ok, alias, _ = run.results.order_by("position")
    assert seed(ok) == {
        "success": True,
        "id": ok.mailbox_id,
        "email": "jim@alpha.example",
        "name": "Jim",
        "deliverability": {
            "spf_correct": True,
            "dkim_correct": False,
            "dmarc_correct": False,
            "mx_correct": False,
        },
        "error": None,
    }
    assert seed(alias)["deliverability"] is None and seed(alias)["id"] is None
    assert seed(alias)["error"] == "WRONG_ALIAS"


def test_runs_of_other_workspaces_are_404(run, ws_b, personas, client_for):
    other = BulkAddRun.objects.create(workspace=ws_b, total=0)
    c = client_for(personas["alice"])
    assert c.get(reverse("admin:fleet_bulkaddrun_change", args=[other.pk])).status_code == 404
    listed = c.get(reverse("admin:fleet_bulkaddrun_changelist")).context["cl"].result_list
    assert [r.pk for r in listed] == [run.pk]
