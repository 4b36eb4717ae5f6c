"""Demo data for the README's run command: a superuser, two workspaces, members with each role,
and in each workspace mailboxes in every status and auth method with their history, a consent
request of each kind, an import batch and a bulk-add run, so that every demo user (the viewer's
only workspace is Globex) has something on every page. Safe to run again.

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

from fleet import consent, errors
from fleet.checks import is_loopback
from fleet.credentials import request_verification
from fleet.models import (
    BulkAddResult,
    BulkAddRun,
    ConsentRequest,
    Credential,
    ImportBatch,
    Mailbox,
    Membership,
    Role,
    Tag,
    Workspace,
)
from fleet.providers import server_settings

DEMO_PASSWORD = "fleet-demo"

# What the sandbox drops (sandbox/server.py Switches, SANDBOX_DEMO_DROP_AFTER): a password, a grant.
DEMO_DROPS = ["cara@acme-outreach.com", "ava@acme-outreach.com"]
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
    # Connected by an unannounced consent: waits for a manager's Approve (Mailivery's Microsoft connect API).
    ("kim.ventures@outlook.com", "Kim Ventures", "oauth", "pending", "approval", "not_started"),
]
# The viewer's workspace: its tenant has Basic auth turned off (sandbox/directory.json), so its
# app-password mailbox shows BASIC_AUTH_DISABLED; its Graph app awaits the tenant's admin consent.
GLOBEX_SAMPLES = [
    ("lena@globex-sales.com", "Lena Fox", "oauth", "active", None, "active"),
    ("omar@globex-sales.com", "Omar Haddad", "oauth", "reauth_required", None, "paused"),
    (
        "max@globex-sales.com",
        "Max Weber",
        "app_password",
        "error",
        "BASIC_AUTH_DISABLED",
        "not_started",
    ),
    ("noor@globex-sales.com", "Noor Aziz", "graph_app_only", "pending", None, "not_started"),
    ("pia@globex-sales.com", "Pia Lund", "app_password", "disabled", None, "not_started"),
    ("quin.globex@outlook.com", "Quin Hart", "oauth", "pending", "approval", "not_started"),
]
# A third party's consent page (external consent requests are completed by hand).
EXTERNAL_CONSENT_URL = "https://sequencer.example/connect?mailbox="

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
GLOBEX_TENANT = "7c4d2e9f-1b3a-4f6c-8d2e-9105ebe0b002"
# The app password the sandbox's mail servers accept for every directory user: the sandbox reads
# the same variable with the same default (sandbox/settings.py; Fleet does not import it).
SANDBOX_APP_PASSWORD = os.environ.get("SANDBOX_APP_PASSWORD", "").strip() or "sandbox-app-password"
# The refresh token the sandbox holds for each directory user's demo grant (sandbox/identity.py's
# DEMO_GRANT_PREFIX + the address), redeemable once by its apps.
SANDBOX_DEMO_GRANT = "sandbox-demo-grant:"


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
        operator = User.objects.get(username="operator")
        acme_boxes = self.mailboxes(acme, SAMPLES, sandbox)
        globex_boxes = self.mailboxes(globex, GLOBEX_SAMPLES, sandbox)
        acme_graph = globex_graph = None
        if sandbox:
            acme_graph = self.credentials(acme, tenant_id=SANDBOX_GRAPH_APP["tenant_id"])
            globex_graph = self.credentials(globex, tenant_id=GLOBEX_TENANT, consented=False)
        if sandbox:
            self.demo_grants(acme)
            self.demo_grants(globex)
            self.demo_drop_retest(acme)
        self.consent_requests(acme, acme_boxes, "eve", "ava", acme_graph)
        self.consent_requests(globex, globex_boxes, "omar", "lena", globex_graph)
        self.import_batch(
            acme, operator, "acme-app-passwords.csv", [acme_boxes[n] for n in ("cara", "dan", "tara")]
        )
        self.import_batch(globex, None, "globex-app-passwords.csv", [globex_boxes["max"]])
        self.acme_bulk_add(acme, operator, acme_graph, acme_boxes)
        self.globex_bulk_add(globex, globex_graph)
        self.stdout.write(
            f"Demo data ready: {Mailbox.objects.count()} mailboxes in "
            f"{Workspace.objects.count()} workspaces; log in as admin / {DEMO_PASSWORD}."
        )

    def mailboxes(self, workspace, samples, sandbox) -> dict[str, Mailbox]:
        """The samples in `workspace`, by the address's first word ("eve")."""
        tag, _ = Tag.objects.get_or_create(workspace=workspace, name="demo")
        start = timezone.now() - timedelta(days=20)
        found = {}
        for i, (email, name, auth, status, error, warmup) in enumerate(samples):
            mailbox, created = Mailbox.objects.get_or_create(
                workspace=workspace,
                email=email,
                defaults={
                    "display_name": name,
                    "auth_method": auth,
                    "warmup_status": warmup,
                    "needs_approval": error == "approval",
                    "created_at": start + timedelta(days=i),
                    **server_settings(email),  # the sandbox's mail servers in the demo
                },
            )
            found[email.split("@")[0].split(".")[0]] = mailbox
            if not created:
                continue
            if auth == "app_password" and sandbox:
                # The sandbox's app password, except for dan, whose error the demo shows.
                mailbox.password = "wrong" if error == "INVALID_CREDENTIALS" else SANDBOX_APP_PASSWORD
                mailbox.save(update_fields=["password"])
            mailbox.tags.add(tag)
            if status != "pending":
                code = errors.get(error) if error and error != "approval" else None
                event = mailbox.set_status(status, code)
                event.created_at = start + timedelta(days=i, hours=2)
                event.save(update_fields=["created_at"])
        return found

    def credentials(self, workspace, *, tenant_id: str, consented: bool = True) -> Credential:
        """Microsoft is the sandbox: the workspace gets the sandbox's app registrations, so that
        "Connect with Microsoft" and "Bulk add (Graph)" work in the demo. Returns the Graph one."""
        Credential.objects.update_or_create(
            workspace=workspace,
            kind=Credential.Kind.OAUTH_APP,
            client_id=SANDBOX_APP["client_id"],
            defaults={
                "name": "Microsoft sandbox app",
                "tenant_id": "common",
                "client_secret": SANDBOX_APP["client_secret"],
            },
        )
        graph, created = Credential.objects.get_or_create(
            workspace=workspace,
            kind=Credential.Kind.GRAPH_APP_ONLY,
            client_id=SANDBOX_GRAPH_APP["client_id"],
            defaults={
                "name": "Microsoft sandbox Graph app (bulk add)",
                "tenant_id": tenant_id,
                "client_secret": SANDBOX_GRAPH_APP["client_secret"],
                "secret_expires_at": timezone.localdate() + timedelta(days=365),
            },
        )
        if created:
            if not consented:
                # As Verify finds it (AADSTS65001) until Globex's administrator consents.
                graph.status = Credential.Status.INVALID
                graph.last_error = errors.ADMIN_APPROVAL_REQUIRED.code
                graph.last_error_message = errors.ADMIN_APPROVAL_REQUIRED.message
                graph.save(update_fields=["status", "last_error", "last_error_message"])
            request_verification(graph)  # checked again once the worker runs
        return graph

    def demo_grants(self, workspace) -> None:
        """The connected OAuth mailboxes hold the sandbox's demo grant (its refresh token
        `sandbox-demo-grant:<address>`, sandbox/identity.py) with the sandbox's OAuth app, so
        that their connection tests refresh real tokens and the sandbox's planned drop
        (SANDBOX_DEMO_DROP_AFTER) can revoke one. Set again on every run: a sandbox started
        afresh knows only these (tokens of an earlier run died with it)."""
        app = Credential.objects.get(
            workspace=workspace, kind=Credential.Kind.OAUTH_APP, client_id=SANDBOX_APP["client_id"]
        )
        connected = Mailbox.objects.filter(
            workspace=workspace,
            auth_method=Mailbox.AuthMethod.OAUTH,
            status=Mailbox.Status.ACTIVE,
            needs_approval=False,
        )
        for mailbox in connected:
            mailbox.credential = app
            mailbox.refresh_token = SANDBOX_DEMO_GRANT + mailbox.email
            mailbox.access_token, mailbox.token_expires_at = "", None
            mailbox.save(
                update_fields=[
                    "credential",
                    "refresh_token",
                    "access_token",
                    "token_expires_at",
                    "updated_at",
                ]
            )

    def demo_drop_retest(self, workspace) -> None:
        """The two mailboxes the sandbox drops after SANDBOX_DEMO_DROP_AFTER seconds are due for
        their health check a minute after that (fleet/health.py), so a newcomer sees the sweep
        find them, the alert digest and the reauth mailbox without pressing a button."""
        drop_after = float(os.environ.get("SANDBOX_DEMO_DROP_AFTER") or 120)
        Mailbox.objects.filter(workspace=workspace, email__in=DEMO_DROPS).update(
            check_due_at=timezone.now() + timedelta(seconds=drop_after + 60)
        )

    def consent_requests(self, workspace, boxes, reconnect: str, external: str, graph) -> None:
        """One of each kind: a reconnect (user), the tenant admin's for the Graph app (admin,
        with the sandbox), a third party's page (external)."""
        have = set(
            ConsentRequest.objects.filter(workspace=workspace).values_list("kind", flat=True)
        )
        wanted = [
            (ConsentRequest.Kind.USER, {"mailbox_uid": boxes[reconnect].uid}),
            (
                ConsentRequest.Kind.EXTERNAL,
                {
                    "mailbox_uid": boxes[external].uid,
                    "consent_url": EXTERNAL_CONSENT_URL + boxes[external].email,
                },
            ),
        ]
        if graph is not None:
            wanted.append((ConsentRequest.Kind.ADMIN, {"credential": graph}))
        for kind, fields in wanted:
            if kind in have:
                continue
            try:
                consent.initiate(workspace, kind=kind, **fields)
            except errors.FleetError as failure:  # no OAuth app outside the sandbox
                self.stdout.write(f"No {kind} consent request in {workspace}: {failure.message}")

    def import_batch(self, workspace, user, file_name: str, imported: list[Mailbox]) -> None:
        """A CSV import as the import leaves it: its mailboxes, a duplicate, a refused row."""
        if ImportBatch.objects.filter(workspace=workspace).exists():
            return
        batch = ImportBatch.objects.create(
            workspace=workspace,
            created_by=user,
            created_at=timezone.now() - timedelta(days=10),
            file_name=file_name,
            tag=Tag.objects.filter(workspace=workspace, name="demo").first(),
            total_rows=len(imported) + 2,
            imported=len(imported),
            skipped=1,
            failed=1,
            errors=[
                {
                    "row": len(imported) + 3,
                    "email": "not-an-address",
                    "error": "Invalid email address",
                }
            ],
        )
        batch.mailboxes.set(imported)

    def acme_bulk_add(self, workspace, user, graph, boxes) -> None:
        """A finished Graph bulk add, partly connected: finn and gia in, an alias and an
        unlicensed user out (the sandbox answers the same when it is run again)."""
        if BulkAddRun.objects.filter(workspace=workspace).exists():
            return
        results = [
            ("finn@acme-outreach.com", "Finn Hale", boxes["finn"], "", ""),
            ("gia@acme-outreach.com", "Gia Moreau", boxes["gia"], "", ""),
            (
                "sales@acme-outreach.com",
                "Sales",
                None,
                errors.WRONG_ALIAS.code,
                "primary address: olivia@acme-outreach.com",
            ),
            ("paul@acme-outreach.com", "Paul Reyes", None, errors.MAILBOX_NOT_ENABLED.code, ""),
        ]
        self.bulk_add(workspace, user, graph, results, BulkAddRun.Status.FINISHED)

    def globex_bulk_add(self, workspace, graph) -> None:
        """A bulk add that could not get a token: Globex's administrator has not consented."""
        if BulkAddRun.objects.filter(workspace=workspace).exists():
            return
        code = errors.ADMIN_APPROVAL_REQUIRED.code
        results = [
            ("noor@globex-sales.com", "Noor Aziz", None, code, ""),
            ("lena@globex-sales.com", "Lena Fox", None, code, ""),
        ]
        self.bulk_add(workspace, None, graph, results, BulkAddRun.Status.FAILED, error=code)

    def bulk_add(self, workspace, user, graph, results, status, error: str = "") -> None:
        connected = sum(1 for *_, mailbox, code, _ in results if mailbox is not None)
        finished = timezone.now() - timedelta(days=5)
        run = BulkAddRun.objects.create(
            workspace=workspace,
            credential=graph,
            created_by=user,
            status=status,
            outcome=(
                BulkAddRun.Outcome.REJECTED
                if not connected
                else BulkAddRun.Outcome.ALL_CONNECTED
                if connected == len(results)
                else BulkAddRun.Outcome.PARTLY_CONNECTED
            ),
            total=len(results),
            processed=len(results),
            connected=connected,
            failed=len(results) - connected,
            error_code=error,
            error_message=errors.get(error).message if error else "",
            created_at=finished - timedelta(seconds=30),
            started_at=finished - timedelta(seconds=29),
            finished_at=finished,
        )
        BulkAddResult.objects.bulk_create(
            BulkAddResult(
                run=run,
                position=n,
                email=email,
                name=name,
                done=True,
                success=mailbox is not None,
                mailbox=mailbox,
                spf_correct=True if mailbox else None,
                dkim_correct=True if mailbox else None,
                error_code=code,
                error_detail=detail,
            )
            for n, (email, name, mailbox, code, detail) in enumerate(results)
        )
