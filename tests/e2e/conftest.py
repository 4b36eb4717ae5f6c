"""Browser end-to-end tests: Playwright drives Debian's Chromium (headless) against a live
Fleet server, with real task workers, the Microsoft sandbox and loopback mail servers.

Screenshots of every step are saved under artifacts/e2e/<test name>/ (kept by CI).
"""

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import make_user

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "e2e"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "pw-for-tests-1"


@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: `apt-get install chromium` (bin/test does it).")
    # Playwright's sync API keeps an event loop in this thread; our ORM calls in the tests stay
    # synchronous and safe. Only while these tests run (check --deploy refuses the variable).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            # As on these machines: no sandbox as root, and no calls home.
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


class Shots:
    """Numbered screenshots of one test's steps."""

    def __init__(self, page, name: str):
        self.page = page
        self.folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", name)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.count = 0

    def __call__(self, step: str) -> None:
        self.count += 1
        self.page.screenshot(path=self.folder / f"{self.count:02d}-{step}.png", full_page=True)


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.shots = Shots(page, request.node.name)
    yield page
    context.close()


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")


@pytest.fixture
def people(transactional_db, ws_a, ws_b):
    """alice operates A; mo manages A; vic views B only; root is a superuser."""
    from fleet.models import Membership

    users = {
        "alice": make_user("alice"),
        "mo": make_user("mo"),
        "vic": make_user("vic"),
        "root": make_user("root", is_superuser=True),
    }
    Membership.objects.create(user=users["alice"], workspace=ws_a, role="operator")
    Membership.objects.create(user=users["mo"], workspace=ws_a, role="manager")
    Membership.objects.create(user=users["vic"], workspace=ws_b, role="viewer")
    return users
