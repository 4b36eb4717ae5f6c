"""Demo data for the README's run command: a superuser, two workspaces, members with each role,
and sample mailboxes in every state with their history. Safe to run again.

Basic auth's end in the demo: Acme's app-password mailboxes on acme-outreach.com move app-only
(the sandbox's Graph app holds IMAP.AccessAsApp and SMTP.SendAsApp and is granted on the Acme
mailboxes, except tara's), hal.sales@outlook.com needs its owner's consent, ivy is disabled."""

import os
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from fleet import errors
from fleet.checks import is_loopback
from fleet.credentials import request_verification
from fleet.models import Credential, Mailbox, Membership, Role, Tag, Workspace
from fleet.providers import server_settings

DEMO_PASSWORD = "fleet-demo"

SAMPLES = [
    # email, name, auth method, final status, error, warmup
    ("ava@acme-outreach.com", "Ava Stone", "oauth", "active", None, "active"),
    ("ben@acme-outreach.com", "Ben Ortiz", "oauth", "active", None, "paused"),
    ("cara@acme-outreach.com", "Cara Lee", "app_password", "active", None, "not_started"),
    (
        "dan@acme-outreach.com",
        "Dan Wu",
        "app_password",
        "error",
        "INVALID_CREDENTIALS",
        "not_started",
    ),
    ("eve@acme-outreach.com", "Eve Park", "oauth", "reauth_required", None, "paused"),
    ("finn@acme-outreach.com", "Finn Hale", "graph_app_only", "active", None, "active"),
    ("gia@acme-outreach.com", "Gia Moreau", "graph_app_only", "pending", None, "not_started"),
    ("hal.sales@outlook.com", "Hal Brandt", "app_password", "pending", None, "not_started"),
    ("ivy.growth@hotmail.com", "Ivy Chen", "app_password", "disabled", None, "not_started"),
    # Outside the Exchange grant of the Graph app: the move off Basic auth shows a failure that
    # leaves the mailbox as it was (APP_NOT_GRANTED_ON_MAILBOX).
    ("tara@acme-outreach.com", "Tara Singh", "app_password", "active", None, "not_started"),
    # Not connected yet: the demo connects it through the Microsoft sandbox's consent page.
    ("nora@acme-outreach.com", "Nora Quinn", "oauth", "pending", None, "not_started"),
]

# The app registrations in the sandbox's directory (sandbox/directory.json): one for
# delegated consent, one for Graph app-only bulk adds (consented in the Acme tenant).
SANDBOX_APP = {
    "client_id": "00000000-f1ee-4de0-8000-000000000001",
    "client_secret": "fleet-demo-secret",
}
SANDBOX_GRAPH_APP = {
    "client_id": "00000000-f1ee-4de0-8000-000000000002",
    "client_secret": "fleet-demo-graph-secret",
    "tenant_id": "3f2b8c1e-5a9d-4e7b-9c3a-acme0000a001",
}
# The app password the sandbox's mail servers accept for every directory user: the sandbox reads
# the same variable with the same default (sandbox/settings.py; Fleet does not import it).
SANDBOX_APP_PASSWORD = os.environ.get("SANDBOX_APP_PASSWORD", "").strip() or "sandbox-app-password"


class Command(BaseCommand):
    help = "Create the demo superuser, workspaces, members and sample mailboxes."

    @transaction.atomic
    def handle(self, *args, **options):
        User = get_user_model()
        admin, created = User.objects.get_or_create(
            username="admin",
            defaults={"email": "admin@fleet.localhost", "is_staff": True, "is_superuser": True},
        )
        if created:
            admin.set_password(DEMO_PASSWORD)
            admin.save()
        acme, _ = Workspace.objects.get_or_create(slug="acme", defaults={"name": "Acme Outreach"})
        globex, _ = Workspace.objects.get_or_create(
            slug="globex", defaults={"name": "Globex Sales"}
        )
        for username, workspace, role in [
            ("manager", acme, Role.MANAGER),
            ("operator", acme, Role.OPERATOR),
            ("viewer", globex, Role.VIEWER),
        ]:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={"email": f"{username}@fleet.localhost", "is_staff": True},
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
            Membership.objects.get_or_create(
                user=user, workspace=workspace, defaults={"role": role}
            )

        sandbox = is_loopback(settings.MICROSOFT_AUTHORITY_HOST)
        tag, _ = Tag.objects.get_or_create(workspace=acme, name="demo")
        start = timezone.now() - timedelta(days=20)
        for i, (email, name, auth, status, error, warmup) in enumerate(SAMPLES):
            mailbox, created = Mailbox.objects.get_or_create(
                workspace=acme,
                email=email,
                defaults={
                    "display_name": name,
                    "auth_method": auth,
                    "warmup_status": warmup,
                    "created_at": start + timedelta(days=i),
                    **server_settings(email),  # the sandbox's mail servers in the demo
                },
            )
            if not created:
                continue
            if auth == "app_password" and sandbox:
                # The sandbox's app password, except for dan, whose error the demo shows.
                mailbox.password = "wrong" if error else SANDBOX_APP_PASSWORD
                mailbox.save(update_fields=["password"])
            mailbox.tags.add(tag)
            if status != "pending":
                event = mailbox.set_status(status, errors.get(error))
                event.created_at = start + timedelta(days=i, hours=2)
                event.save(update_fields=["created_at"])
        if sandbox:
            # Microsoft is the sandbox: the workspace gets the sandbox's app registration, so
            # that "Connect with Microsoft" works in the demo.
            Credential.objects.update_or_create(
                workspace=acme,
                kind=Credential.Kind.OAUTH_APP,
                client_id=SANDBOX_APP["client_id"],
                defaults={
                    "name": "Microsoft sandbox app",
                    "tenant_id": "common",
                    "client_secret": SANDBOX_APP["client_secret"],
                },
            )
            # …and its Graph app-only registration, for "Add Microsoft mailboxes in bulk".
            graph, created = Credential.objects.get_or_create(
                workspace=acme,
                kind=Credential.Kind.GRAPH_APP_ONLY,
                client_id=SANDBOX_GRAPH_APP["client_id"],
                defaults={
                    "name": "Microsoft sandbox Graph app (bulk add)",
                    "tenant_id": SANDBOX_GRAPH_APP["tenant_id"],
                    "client_secret": SANDBOX_GRAPH_APP["client_secret"],
                    "secret_expires_at": timezone.localdate() + timedelta(days=365),
                },
            )
            if created:
                request_verification(graph)  # valid once the worker runs
        self.stdout.write(
            f"Demo data ready: {Mailbox.objects.count()} mailboxes in "
            f"{Workspace.objects.count()} workspaces; log in as admin / {DEMO_PASSWORD}."
        )
