"""A realistic fleet for scale checks and benchmarks: N mailboxes over W workspaces, with status
history, consent requests and bulk add runs. Rows are written in large batches."""

import random
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from fleet import errors
from fleet.models import (
    BulkAddResult,
    BulkAddRun,
    ConsentRequest,
    Credential,
    Mailbox,
    MailboxEvent,
    Membership,
    Role,
    Workspace,
)
from fleet.secrets import Ciphertext, encrypt

BATCH = 5000
# Share of mailboxes per final status.
STATUS_MIX = [
    ("active", 70),
    ("pending", 8),
    ("error", 12),
    ("reauth_required", 6),
    ("disabled", 4),
]
SKIP_CODES = {"VALIDATION_ERROR", "PERMISSION_DENIED", "NOT_FOUND", "INVALID_CREDENTIAL_ID"}


class Command(BaseCommand):
    help = "Seed a large fleet (default 100,000 mailboxes over 20 workspaces) for scale checks."

    def add_arguments(self, parser):
        parser.add_argument("--mailboxes", type=int, default=100_000)
        parser.add_argument("--workspaces", type=int, default=20)
        parser.add_argument(
            "--seed", type=int, default=7, help="random seed (same fleet each time)"
        )

    def handle(self, *args, mailboxes, workspaces, seed, **options):
        rng = random.Random(seed)  # noqa: S311 — sample data, not security
        now = timezone.now()
        codes = [c for c in errors.CATALOGUE if c not in SKIP_CODES]
        statuses = [s for s, weight in STATUS_MIX for _ in range(weight)]
        password = encrypt("app-password-for-scale-tests")  # one ciphertext, stored as is
        User = get_user_model()

        with transaction.atomic():
            spaces = []
            for n in range(1, workspaces + 1):
                ws, _ = Workspace.objects.get_or_create(
                    slug=f"client-{n:02d}", defaults={"name": f"Client {n:02d}"}
                )
                spaces.append(ws)
                manager, _ = User.objects.get_or_create(
                    username=f"manager-{n:02d}", defaults={"is_staff": True}
                )
                Membership.objects.get_or_create(
                    user=manager, workspace=ws, defaults={"role": Role.MANAGER}
                )
                Credential.objects.get_or_create(
                    workspace=ws,
                    name="Graph app",
                    defaults={
                        "kind": "graph_app_only",
                        "tenant_id": f"tenant-{n}",
                        "client_id": f"client-{n}",
                        "status": "valid",
                        "secret_expires_at": (
                            now + timedelta(days=rng.choice([12, 90, 400]))
                        ).date(),
                    },
                )

        per_space = mailboxes // workspaces
        created = 0
        for ws in spaces:
            start = Mailbox.objects.filter(workspace=ws).count()
            batch, histories = [], []
            for i in range(start, per_space):
                status = rng.choice(statuses)
                domain = f"{ws.slug}-{i % 40:02d}.example"
                auth = rng.choice(["oauth", "app_password", "graph_app_only"])
                code = rng.choice(codes) if status == "error" else ""
                m = Mailbox(
                    workspace=ws,
                    email=f"user{i:06d}@{domain}",
                    display_name=f"User {i}",
                    provider="microsoft365",
                    auth_method=auth,
                    status=status,
                    error_code=code,
                    error_message=errors.get(code).message if code else "",
                    warmup_status=rng.choice(["not_started", "active", "active", "paused"]),
                    last_checked_at=now - timedelta(hours=rng.randint(1, 500)),
                    created_at=now - timedelta(days=rng.randint(31, 120)),
                )
                if auth == "app_password":
                    m.password = Ciphertext(password)  # one encryption, stored as is
                batch.append(m)
                histories.append(status)
                if len(batch) >= BATCH:
                    created += self._save(ws, batch, histories, rng, now)
            created += self._save(ws, batch, histories, rng, now)
            self._consents_and_runs(ws, rng, now)
            self.stdout.write(
                f"{ws.slug}: {Mailbox.objects.filter(workspace=ws).count()} mailboxes"
            )
        self.stdout.write(f"Created {created} mailboxes; fleet has {Mailbox.objects.count()}.")

    def _save(self, ws, batch, histories, rng, now) -> int:
        if not batch:
            return 0
        with transaction.atomic():
            Mailbox.objects.bulk_create(batch, batch_size=BATCH)
            saved = Mailbox.objects.filter(
                workspace=ws, email__in=[m.email for m in batch]
            ).values_list("id", "email")
            final = dict(zip([m.email for m in batch], histories, strict=True))
            events = []
            for mailbox_id, email in saved:
                status = final[email]
                when = now - timedelta(days=rng.randint(0, 59), minutes=rng.randint(0, 1440))
                events.append(_event(ws, mailbox_id, email, "pending", "active", when))
                if status != "active":
                    later = min(now, when + timedelta(days=rng.randint(0, 5)))
                    events.append(_event(ws, mailbox_id, email, "active", status, later))
            MailboxEvent.objects.bulk_create(events, batch_size=BATCH)
        count = len(batch)
        batch.clear()
        histories.clear()
        return count

    def _consents_and_runs(self, ws, rng, now):
        mailbox_ids = list(Mailbox.objects.filter(workspace=ws).values_list("id", flat=True)[:400])
        ConsentRequest.objects.bulk_create(
            ConsentRequest(
                workspace=ws,
                mailbox_id=mailbox_id,
                kind=rng.choice(["user", "user", "admin", "external"]),
                status=rng.choice(["queued", "pending", "completed", "completed", "expired"]),
                expires_at=now + timedelta(hours=rng.randint(-48, 96)),
            )
            for mailbox_id in mailbox_ids[:200]
        )
        credential = Credential.objects.filter(workspace=ws).first()
        for r in range(3):
            run = BulkAddRun.objects.create(
                workspace=ws,
                credential=credential,
                status="finished",
                total=100,
                processed=100,
                created_at=now - timedelta(days=r * 7),
            )
            results = [
                BulkAddResult(
                    run=run,
                    position=i,
                    email=f"bulk{r}-{i}@{ws.slug}.example",
                    done=True,
                    success=i % 10 != 0,
                    error_code="" if i % 10 else "WRONG_ALIAS",
                    spf_correct=True,
                    dkim_correct=i % 4 != 0,
                )
                for i in range(100)
            ]
            BulkAddResult.objects.bulk_create(results)
            run.connected = sum(1 for x in results if x.success)
            run.failed = run.total - run.connected
            run.outcome = "partly_connected"
            run.finished_at = run.created_at
            run.save()


def _event(ws, mailbox_id, email, from_status, to_status, when):
    return MailboxEvent(
        workspace=ws,
        mailbox_id=mailbox_id,
        email=email,
        from_status=from_status,
        to_status=to_status,
        created_at=when,
    )
