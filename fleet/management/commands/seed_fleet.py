"""A realistic fleet for scale checks and benchmarks: N mailboxes over W workspaces, with status
history, tags, consent requests and bulk add runs.

On PostgreSQL the mailboxes, their events and tag links stream in with COPY (ids allocated up
front, so events need no read-back), in chunks that keep memory flat: 1,000,000 mailboxes take a
few minutes and a few hundred MB. Elsewhere (SQLite) rows go in with bulk_create.
"""

import random
import uuid
from contextlib import contextmanager
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management import get_commands
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
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
    Tag,
    Workspace,
)
from fleet.secrets import Ciphertext, encrypt

BATCH = 5000  # bulk_create batch; also the PostgreSQL chunk written per COPY round
COPY_CHUNK = 50_000
DOMAINS_PER_WORKSPACE = 40
TAGGED_EVERY = 5  # one mailbox in five carries its workspace's "warm" tag
# Share of mailboxes per final status.
STATUS_MIX = [
    ("active", 70),
    ("pending", 8),
    ("error", 12),
    ("reauth_required", 6),
    ("disabled", 4),
]
SKIP_CODES = {"VALIDATION_ERROR", "PERMISSION_DENIED", "NOT_FOUND", "INVALID_CREDENTIAL_ID"}
# The audit log's own seeding command (the audit helper's), run by --audit-entries when present.
AUDIT_SEED_COMMAND = "seed_audit"

MAILBOX_COLUMNS = (
    "id", "uid", "workspace_id", "email", "display_name", "provider", "auth_method", "status",
    "error_code", "error_message", "smtp_host", "smtp_port", "smtp_security", "imap_host",
    "imap_port", "imap_security", "password", "totp_secret", "refresh_token", "access_token",
    "graph_user_id", "needs_approval", "warmup_status", "warmup_daily_volume",
    "warmup_response_rate", "dmarc_policy", "last_checked_at", "check_due_at", "created_at",
    "updated_at",
)  # fmt: skip
EVENT_COLUMNS = (
    "workspace_id", "mailbox_id", "email", "kind", "from_status", "to_status", "error_code",
    "message", "via", "created_at",
)  # fmt: skip


class Command(BaseCommand):
    help = "Seed a large fleet (default 100,000 mailboxes over 20 workspaces) for scale checks."

    def add_arguments(self, parser):
        parser.add_argument("--mailboxes", type=int, default=100_000)
        parser.add_argument("--workspaces", type=int, default=20)
        parser.add_argument(
            "--seed", type=int, default=7, help="random seed (same fleet each time)"
        )
        parser.add_argument(
            "--audit-entries",
            type=int,
            default=0,
            help=f"also seed this many audit entries (the `{AUDIT_SEED_COMMAND}` command)",
        )

    def handle(self, *args, mailboxes, workspaces, seed, audit_entries=0, **options):
        if mailboxes < 0 or workspaces < 1:
            raise CommandError("--mailboxes must be ≥ 0 and --workspaces ≥ 1.")
        if audit_entries and AUDIT_SEED_COMMAND not in get_commands():
            raise CommandError(
                f"--audit-entries needs the audit log's `{AUDIT_SEED_COMMAND}` command, "
                "which this installation does not have."
            )
        self.rng = random.Random(seed)  # noqa: S311 — sample data, not security
        self.now = timezone.now()
        self.codes = [c for c in errors.CATALOGUE if c not in SKIP_CODES]
        self.statuses = [s for s, weight in STATUS_MIX for _ in range(weight)]
        self.password = encrypt("app-password-for-scale-tests")  # one ciphertext, stored as is
        spaces = self._workspaces(workspaces)
        per_space = mailboxes // workspaces
        if connection.vendor == "postgresql" and not Mailbox.objects.exists():
            # An empty fleet: one transaction (all or nothing), its secondary indexes built once
            # at the end instead of maintained row by row.
            with transaction.atomic(), _indexes_built_after():
                created = self._seed(spaces, per_space)
        else:
            created = self._seed(spaces, per_space)
        if connection.vendor == "postgresql":
            # VACUUM (outside a transaction) also sets the visibility map, so that the lists'
            # capped counts are index-only scans from the start, as autovacuum makes them later.
            refresh = "ANALYZE" if connection.in_atomic_block else "VACUUM ANALYZE"
            with connection.cursor() as cursor:
                for table in BULK_TABLES:
                    cursor.execute(f"{refresh} {table}")
        self.stdout.write(f"Created {created} mailboxes; fleet has {Mailbox.objects.count()}.")
        if audit_entries:
            from django.core.management import call_command

            call_command(AUDIT_SEED_COMMAND, entries=audit_entries, stdout=self.stdout)

    def _seed(self, spaces: list[Workspace], per_space: int) -> int:
        created = 0
        for ws in spaces:
            tag = Tag.objects.get_or_create(workspace=ws, name="warm")[0]
            start = Mailbox.objects.filter(workspace=ws).count()
            if connection.vendor == "postgresql":
                created += self._copy(ws, tag, start, per_space)
            else:
                created += self._bulk_create(ws, tag, start, per_space)
            self._consents_and_runs(ws)
            self.stdout.write(f"{ws.slug}: {start + max(0, per_space - start)} mailboxes")
        return created

    def _workspaces(self, count: int) -> list[Workspace]:
        User = get_user_model()
        spaces = []
        with transaction.atomic():
            for n in range(1, count + 1):
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
                            self.now + timedelta(days=self.rng.choice([12, 90, 400]))
                        ).date(),
                    },
                )
        return spaces

    def _mailbox(self, ws, i: int) -> dict:
        """One mailbox's column values (the same whichever way it is written)."""
        rng = self.rng
        status = rng.choice(self.statuses)
        auth = rng.choice(["oauth", "app_password", "graph_app_only"])
        code = rng.choice(self.codes) if status == "error" else ""
        due = self.now + timedelta(minutes=rng.randint(-15, 24 * 60))
        return {
            "uid": uuid.uuid4(),  # random even with --seed: a second run adds to the first
            "workspace_id": ws.pk,
            "email": f"user{i:06d}@{ws.slug}-{i % DOMAINS_PER_WORKSPACE:02d}.example",
            "display_name": f"User {i}",
            "provider": "microsoft365",
            "auth_method": auth,
            "status": status,
            "error_code": code,
            "error_message": errors.get(code).message if code else "",
            "password": self.password if auth == "app_password" else "",
            "warmup_status": rng.choice(["not_started", "active", "active", "paused"]),
            # Swept daily (fleet/health.py): tested a day before its next test, which falls in
            # the coming day — a few minutes overdue for some, as in a running fleet.
            "last_checked_at": due - timedelta(days=1),
            "check_due_at": due if status != "disabled" else None,
            "created_at": self.now - timedelta(days=rng.randint(31, 120)),
        }

    def _history(self, status: str) -> list[tuple[str, str, object]]:
        """(from, to, when) of the status changes that led to `status`."""
        rng = self.rng
        when = self.now - timedelta(days=rng.randint(0, 59), minutes=rng.randint(0, 1440))
        changes = [("pending", "active", when)]
        if status != "active":
            later = min(self.now, when + timedelta(days=rng.randint(0, 5)))
            changes.append(("active", status, later))
        return changes

    # --- PostgreSQL: COPY -----------------------------------------------------------------------
    def _copy(self, ws, tag, start: int, end: int) -> int:
        defaults = {
            "smtp_host": "smtp.office365.com", "smtp_port": 587, "smtp_security": "starttls",
            "imap_host": "outlook.office365.com", "imap_port": 993, "imap_security": "ssl",
            "totp_secret": "", "refresh_token": "", "access_token": "", "graph_user_id": "",
            "needs_approval": False, "warmup_daily_volume": 20, "warmup_response_rate": 30,
            "dmarc_policy": "", "updated_at": self.now,
        }  # fmt: skip
        # Every other column at its model default (leases, keep-alive and alert fields…), so a
        # column added later never breaks the COPY.
        rest = {
            f.column: f.get_default()
            for f in Mailbox._meta.concrete_fields
            if f.column not in MAILBOX_COLUMNS and not getattr(f, "generated", False)
        }
        fixed = tuple(rest.values())
        created = 0
        for chunk_start in range(start, end, COPY_CHUNK):
            chunk_end = min(end, chunk_start + COPY_CHUNK)
            with transaction.atomic(), connection.cursor() as cursor:
                first_id = self._allocate_ids(cursor, chunk_end - chunk_start)
                rows, events, tags = [], [], []
                for offset, i in enumerate(range(chunk_start, chunk_end)):
                    values = {**defaults, **self._mailbox(ws, i), "id": first_id + offset}
                    rows.append(tuple(values[c] for c in MAILBOX_COLUMNS) + fixed)
                    for from_status, to_status, when in self._history(values["status"]):
                        events.append(
                            (ws.pk, values["id"], values["email"], "status", from_status,
                             to_status, "", "", "", when)
                        )  # fmt: skip
                    if i % TAGGED_EVERY == 0:
                        tags.append((values["id"], tag.pk))
                _copy_rows(cursor, "fleet_mailbox", MAILBOX_COLUMNS + tuple(rest), rows)
                _copy_rows(cursor, "fleet_mailboxevent", EVENT_COLUMNS, events)
                _copy_rows(cursor, "fleet_mailbox_tags", ("mailbox_id", "tag_id"), tags)
                created += len(rows)
        return created

    @staticmethod
    def _allocate_ids(cursor, n: int) -> int:
        """Reserve n consecutive mailbox ids from the table's identity sequence: the first one."""
        cursor.execute("SELECT pg_get_serial_sequence('fleet_mailbox', 'id')")
        sequence = cursor.fetchone()[0]
        cursor.execute("LOCK TABLE fleet_mailbox IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute(f"SELECT nextval('{sequence}')")
        first = cursor.fetchone()[0]
        cursor.execute("SELECT setval(%s, %s)", [sequence, first + n - 1])
        return first

    # --- other databases: bulk_create --------------------------------------------------------------
    def _bulk_create(self, ws, tag, start: int, end: int) -> int:
        created = 0
        for chunk_start in range(start, end, BATCH):
            chunk = []
            for i in range(chunk_start, min(end, chunk_start + BATCH)):
                values = self._mailbox(ws, i)
                values["password"] = Ciphertext(values["password"]) if values["password"] else ""
                chunk.append(Mailbox(**values))
            with transaction.atomic():
                Mailbox.objects.bulk_create(chunk, batch_size=BATCH)
                saved = dict(
                    Mailbox.objects.filter(
                        workspace=ws, email__in=[m.email for m in chunk]
                    ).values_list("email", "id")
                )
                MailboxEvent.objects.bulk_create(
                    (
                        MailboxEvent(
                            workspace=ws,
                            mailbox_id=saved[m.email],
                            email=m.email,
                            from_status=from_status,
                            to_status=to_status,
                            created_at=when,
                        )
                        for m in chunk
                        for from_status, to_status, when in self._history(m.status)
                    ),
                    batch_size=BATCH,
                )
                Mailbox.tags.through.objects.bulk_create(
                    Mailbox.tags.through(mailbox_id=saved[m.email], tag_id=tag.pk)
                    for n, m in enumerate(chunk, start=chunk_start)
                    if n % TAGGED_EVERY == 0
                )
            created += len(chunk)
        return created

    def _consents_and_runs(self, ws):
        rng, now = self.rng, self.now
        mailbox_ids = list(
            Mailbox.objects.filter(workspace=ws).order_by("id").values_list("id", flat=True)[:200]
        )
        ConsentRequest.objects.bulk_create(
            ConsentRequest(
                workspace=ws,
                mailbox_id=mailbox_id,
                kind=rng.choice(["user", "user", "admin", "external"]),
                status=rng.choice(["queued", "pending", "completed", "completed", "expired"]),
                expires_at=now + timedelta(hours=rng.randint(-48, 96)),
            )
            for mailbox_id in mailbox_ids
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


BULK_TABLES = ("fleet_mailbox", "fleet_mailboxevent", "fleet_mailbox_tags")


@contextmanager
def _indexes_built_after():
    """Inside a transaction: drop the bulk tables' secondary indexes (those no constraint
    needs), let the caller write, then build them again from their own definitions. A failure
    rolls the drop back with everything else. Foreign keys are checked per statement rather
    than all at COMMIT, so the server does not queue millions of checks."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        cursor.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = "
            "current_schema() AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM "
            "pg_constraint c WHERE c.conname = i.indexname) AND i.indexdef NOT LIKE "
            "'CREATE UNIQUE %%'",
            [list(BULK_TABLES)],
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    yield
    with connection.cursor() as cursor:
        for _, definition in indexes:
            cursor.execute(definition)


def _copy_rows(cursor, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    if not rows:
        return
    names = ", ".join(columns)
    with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
