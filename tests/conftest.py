"""Shared fixtures: two workspaces and the personas that prove access control.

- alice: operator of A
- bob: manager of A and viewer of B
- olga: staff, but a member of nothing (the outsider)
- root: a superuser
"""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from fleet.models import Mailbox, Membership, Role, Tag, Workspace


@pytest.fixture
def ws_a(db):
    return Workspace.objects.create(name="Alpha", slug="alpha")


@pytest.fixture
def ws_b(db):
    return Workspace.objects.create(name="Beta", slug="beta")


def make_user(username, **extra):
    return get_user_model().objects.create_user(
        username=username, password="pw-for-tests-1", is_staff=True, **extra
    )


@pytest.fixture
def personas(ws_a, ws_b):
    alice = make_user("alice")
    bob = make_user("bob")
    olga = make_user("olga")
    root = make_user("root", is_superuser=True)
    Membership.objects.create(user=alice, workspace=ws_a, role=Role.OPERATOR)
    Membership.objects.create(user=bob, workspace=ws_a, role=Role.MANAGER)
    Membership.objects.create(user=bob, workspace=ws_b, role=Role.VIEWER)
    return {"alice": alice, "bob": bob, "olga": olga, "root": root}


@pytest.fixture
def mailboxes(ws_a, ws_b):
    tag_a = Tag.objects.create(workspace=ws_a, name="alpha-tag")
    tag_b = Tag.objects.create(workspace=ws_b, name="beta-tag")
    a = Mailbox.objects.create(
        workspace=ws_a, email="ann@alpha.example", auth_method="app_password", password="pw-a"
    )
    b = Mailbox.objects.create(
        workspace=ws_b, email="ben@beta.example", auth_method="app_password", password="pw-b"
    )
    a.tags.add(tag_a)
    b.tags.add(tag_b)
    return {"a": a, "b": b, "tag_a": tag_a, "tag_b": tag_b}


@pytest.fixture
def client_for(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def on_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture(autouse=True)
def test_settings(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins
    # Production uses hashed file names from `collectstatic`; tests render pages without it.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with an empty cache: rate-limit counters (per key, and the bad-key one
    per client address, 127.0.0.1 for every test) do not carry over from earlier tests, nor do
    app-only tokens (kept in the process and, encrypted, in the cache) or discovery answers."""
    from django.core.cache import cache

    from fleet.microsoft import graph

    cache.clear()
    graph.forget_all_tokens()


# --- DNS: every look-up stays on loopback ----------------------------------------------------
@pytest.fixture(scope="session")
def loopback_dns():
    """A DNS server on 127.0.0.1 for the whole run (the sandbox's, with an empty zone)."""
    from sandbox.dns import SandboxDNS, Zone

    server = SandboxDNS(Zone()).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def dns_on_loopback(loopback_dns, settings):
    """Names are resolved by the loopback DNS server, never by the machine's resolver: tests send
    no traffic off loopback (webhook URLs are resolved when saved). A test adds records with
    `loopback_dns.zone.records[name] = [("A", "127.0.0.1")]`; unknown names are NXDOMAIN."""
    loopback_dns.zone.records.clear()
    settings.DNS_NAMESERVERS = ["127.0.0.1"]
    settings.DNS_PORT = loopback_dns.port
    settings.DNS_TIMEOUT = 2.0
    return loopback_dns


# --- API (fleet/api/) ------------------------------------------------------------------------
def issue_key(*, name: str, user, workspace=None, role: str = ""):
    """An API key made as the admin makes one (ApiKeyAdmin.save_model): its secret from
    new_secret(), then saved. Returns (ApiKey, the key itself)."""
    from fleet.models import ApiKey

    key = ApiKey(name=name, user=user, workspace=workspace, role=role if workspace else "")
    raw = key.new_secret()
    key.save()
    return key, raw


@pytest.fixture
def api_keys(personas, ws_a, ws_b):
    """Raw API keys by name: platform keys of each persona, workspace keys made by bob (manager
    of A), and a revoked one."""
    made = {}
    for name in ("alice", "bob", "olga", "root"):
        _, made[f"{name}_platform"] = issue_key(name=name, user=personas[name])
    _, made["a_manager"] = issue_key(
        name="A manager", user=personas["bob"], workspace=ws_a, role=Role.MANAGER
    )
    _, made["a_viewer"] = issue_key(
        name="A viewer", user=personas["bob"], workspace=ws_a, role=Role.VIEWER
    )
    _, made["a_operator"] = issue_key(
        name="A operator", user=personas["bob"], workspace=ws_a, role=Role.OPERATOR
    )
    _, made["b_viewer"] = issue_key(
        name="B viewer", user=personas["bob"], workspace=ws_b, role=Role.VIEWER
    )
    revoked, made["revoked"] = issue_key(name="old", user=personas["bob"])
    revoked.revoke()
    return made


@pytest.fixture
def api():
    """`api(method, path, key, **kwargs)`: one API request through Django's test client
    (JSON bodies by default), returning the response with `.json()`."""
    from rest_framework.test import APIClient

    def call(method, path, key=None, *, data=None, format="json", headers=None, **extra):
        client = APIClient()
        if key is not None:
            extra["HTTP_X_API_KEY"] = key
        for name, value in (headers or {}).items():
            extra["HTTP_" + name.upper().replace("-", "_")] = value
        return getattr(client, method.lower())(path, data=data, format=format, **extra)

    return call


# --- The Microsoft sandbox ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def sandbox_server(tmp_path_factory):
    """One sandbox for the session: HTTPS on an ephemeral loopback port (trustme CA written to a
    file) plus the browser-facing http listener."""
    from sandbox.server import Sandbox

    with Sandbox(cert_dir=tmp_path_factory.mktemp("sandbox")) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server, settings):
    """The sandbox, freshly reset, with Fleet's settings pointing at it. REQUESTS_CA_BUNDLE stays
    set to the system bundle (which does not trust the sandbox): our CA setting must win."""
    sandbox_server.reset()
    settings.MICROSOFT_AUTHORITY_HOST = sandbox_server.base_url
    settings.MICROSOFT_GRAPH_URL = sandbox_server.graph_url
    settings.MICROSOFT_CA_BUNDLE = sandbox_server.ca_file
    settings.FLEET_BASE_URL = "http://testserver"
    return sandbox_server


@pytest.fixture
def sandbox_mail(sandbox, settings, monkeypatch):
    """The sandbox's SMTP/IMAP servers (XOAUTH2 with its tokens, certificates from its CA), with
    the client trusting them here and in worker processes; `point_at` directs a mailbox there."""
    from sandbox.exchange import basic_auth_reply, validate_app_token
    from sandbox.identity import validate_access_token
    from sandbox.mailservers import MailServers

    with MailServers(
        token_validator=validate_access_token,
        app_token_validator=validate_app_token,
        basic_auth_policy=basic_auth_reply,
        ca=sandbox.ca,
    ) as servers:
        settings.MAIL_TLS_CA_FILE = sandbox.ca_file
        settings.MAIL_TIMEOUT = 3.0
        monkeypatch.setenv("MAIL_TLS_CA_FILE", sandbox.ca_file)
        monkeypatch.setenv("MAIL_TIMEOUT", "3")
        yield servers


@pytest.fixture
def oauth_app(sandbox, ws_a):
    """An app registration known to the sandbox, as an oauth_app credential of workspace A."""
    from fleet.models import Credential

    app = sandbox.directory.add_app(
        "11111111-2222-4333-8444-555555555555", "s3cret-value", "Fleet tests"
    )
    return Credential.objects.create(
        workspace=ws_a,
        name="Fleet OAuth",
        kind=Credential.Kind.OAUTH_APP,
        tenant_id="common",
        client_id=app.client_id,
        client_secret=app.client_secret,
    )


# --- Background workers -------------------------------------------------------------------------
@pytest.fixture
def worker(transactional_db):
    """A real `db_worker` process polling the test database for the test's duration. It reads
    its settings from the environment: fixtures that point Fleet somewhere (`worker_env`,
    `sandbox_mail`) come before it in a test's arguments."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_tasks import database_url

    process = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--interval", "0.1", "--no-startup-delay"],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "DATABASE_URL": database_url()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process
    process.terminate()
    _, err = process.communicate(timeout=20)
    assert "Traceback" not in (err or ""), err


@pytest.fixture
def worker_env(sandbox, settings, monkeypatch):
    """Worker processes see what this process sees: Microsoft is the sandbox, DNS and Graph
    settings as the test set them."""
    for name in (
        "MICROSOFT_AUTHORITY_HOST",
        "MICROSOFT_GRAPH_URL",
        "MICROSOFT_CA_BUNDLE",
        "DNS_PORT",
        "DNS_TIMEOUT",
        "GRAPH_RETRY_BACKOFF",
        "GRAPH_MAX_ATTEMPTS",
    ):
        monkeypatch.setenv(name, str(getattr(settings, name)))
    monkeypatch.setenv("DNS_NAMESERVERS", ",".join(settings.DNS_NAMESERVERS))
