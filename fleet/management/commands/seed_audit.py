"""Audit entries for scale checks and benchmarks: N entries over the existing workspaces (those
`seed_fleet` made, or 20 new ones), a year of history, newest last.

On PostgreSQL the rows are made by the server itself (INSERT … SELECT FROM generate_series, a
million per statement: nothing crosses the wire, faster than COPY from Python), with the log's
secondary indexes dropped during a large load and built once afterwards; elsewhere in batches
of bulk_create."""

from __future__ import annotations

import random
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.utils import timezone

from fleet.models import AuditEntry, Membership, Role, Workspace

CHUNK = 1_000_000
BULK = 5000
# A realistic mix: tests and changes of mailboxes most of all, rarer actions rarely.
ACTION_MIX = (
    ["mailbox.test_queued"] * 30
    + ["mailbox.created"] * 20
    + ["mailbox.updated"] * 15
    + ["mailbox.warmup_started"] * 8
    + ["mailbox.warmup_paused"] * 5
    + ["mailbox.tags_set"] * 5
    + ["mailbox.warmup_resumed"] * 4
    + ["mailbox.disabled"] * 4
    + ["mailbox.enabled"] * 3
    + ["mailbox.totp_revealed"] * 2
    + ["mailbox.deleted"] * 2
    + ["consentrequest.created"] * 2
)
RARE_ACTION, RARE_EVERY = "apikey.revoked", 100_000
VIA = ["admin", "api", "task"]
SPAN = timedelta(days=365)


class Command(BaseCommand):
    help = "Seed audit entries (default 1,000,000) over the existing workspaces for scale checks."

    def add_arguments(self, parser):
        parser.add_argument("--entries", type=int, default=1_000_000)
        parser.add_argument("--workspaces", type=int, default=20, help="made when there are none")

    def handle(self, *args, entries: int, workspaces: int, **options):
        spaces, actors = self._workspaces_and_actors(workspaces)
        before = AuditEntry.objects.count()
        if connection.vendor == "postgresql":
            self._on_postgres(entries, spaces, actors, before)
        else:
            self._in_batches(entries, spaces, actors)
        self.stdout.write(f"Seeded {entries} audit entries; the log holds {before + entries}.")

    def _workspaces_and_actors(self, count: int) -> tuple[list[int], list[tuple[int, str]]]:
        spaces = list(Workspace.objects.order_by("pk").values_list("pk", flat=True))
        User = get_user_model()
        if not spaces:
            with transaction.atomic():
                for n in range(1, count + 1):
                    ws = Workspace.objects.create(slug=f"client-{n:02d}", name=f"Client {n:02d}")
                    user, _ = User.objects.get_or_create(
                        username=f"manager-{n:02d}", defaults={"is_staff": True}
                    )
                    Membership.objects.create(user=user, workspace=ws, role=Role.MANAGER)
                    spaces.append(ws.pk)
        # One acting member per workspace (its first), in the workspaces' order.
        first = {}
        for ws_id, user_id, name in Membership.objects.order_by("pk").values_list(
            "workspace_id", "user_id", "user__username"
        ):
            first.setdefault(ws_id, (user_id, name))
        actors = [first.get(ws, (None, AuditEntry.SYSTEM)) for ws in spaces]
        return spaces, actors

    def _on_postgres(self, entries, spaces, actors, before) -> None:
        large = entries >= 200_000
        indexes = [i for i in AuditEntry._meta.indexes] if large else []
        with connection.schema_editor() as editor:
            for index in indexes:
                editor.execute(f'DROP INDEX IF EXISTS "{index.name}"')
        now = timezone.now()
        for start in range(1, entries + 1, CHUNK):
            end = min(entries, start + CHUNK - 1)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    SEED_SQL,
                    {
                        "start": start,
                        "end": end,
                        "total": entries,
                        "now": now,
                        "span": SPAN,
                        "ws": spaces,
                        "actor_ids": [a[0] for a in actors],
                        "actor_names": [a[1] for a in actors],
                        "actions": ACTION_MIX,
                        "rare": RARE_ACTION,
                        "rare_every": RARE_EVERY,
                        "via": VIA,
                    },
                )
            self.stdout.write(f"  {end} / {entries}")
        with connection.schema_editor() as editor:
            for index in indexes:
                editor.add_index(AuditEntry, index)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE fleet_auditentry")

    def _in_batches(self, entries, spaces, actors) -> None:
        rng = random.Random(7)  # noqa: S311 — sample data
        now = timezone.now()
        batch = []
        for g in range(1, entries + 1):
            at = g % len(spaces)
            actor_id, name = actors[at]
            system = g % 7 == 3
            batch.append(
                AuditEntry(
                    created_at=now - SPAN * (entries - g) / entries,
                    workspace_id=spaces[at],
                    actor_id=None if system else actor_id,
                    actor_name=AuditEntry.SYSTEM if system else name,
                    via=VIA[g % 3],
                    request_id=f"{g:032x}",
                    object_type="mailbox",
                    object_id=f"seed-{g % 1_000_000}",
                    object_pk=g % 1_000_000 + 1,
                    object_repr=f"user{g % 1_000_000}@seed.example",
                    action=RARE_ACTION if g % RARE_EVERY == 0 else rng.choice(ACTION_MIX),
                    changes={"status": {"before": "active", "after": "disabled"}},
                )
            )
            if len(batch) >= BULK:
                AuditEntry.objects.bulk_create(batch)
                batch.clear()
        AuditEntry.objects.bulk_create(batch)


# Row g of N: created (N - g)/N of a year ago (ids follow time, as in life), in workspace
# g mod W with that workspace's member as actor (every seventh row the system), an action from
# the mix (every RARE_EVERY-th row a rare one).
SEED_SQL = """
INSERT INTO fleet_auditentry (
    created_at, workspace_id, actor_id, actor_name, api_key_prefix, via, client_address,
    request_id, object_type, object_id, object_pk, object_repr, action, changes
)
SELECT
    %(now)s - %(span)s * ((%(total)s - g)::float8 / %(total)s),
    (%(ws)s::bigint[])[1 + g %% cardinality(%(ws)s::bigint[])],
    CASE WHEN g %% 7 = 3 THEN NULL
         ELSE (%(actor_ids)s::bigint[])[1 + g %% cardinality(%(ws)s::bigint[])] END,
    CASE WHEN g %% 7 = 3 THEN 'system'
         ELSE (%(actor_names)s::text[])[1 + g %% cardinality(%(ws)s::bigint[])] END,
    CASE WHEN g %% 3 = 1 THEN 'sk_' || substr(md5(g::text), 1, 6) ELSE '' END,
    (%(via)s::text[])[1 + g %% 3],
    CASE WHEN g %% 3 = 2 THEN '' ELSE '10.' || (g %% 250) || '.' || (g %% 199) || '.7' END,
    md5(g::text),
    'mailbox',
    md5('m' || (g %% 1000000))::uuid::text,
    g %% 1000000 + 1,
    'user' || (g %% 1000000) || '@seed.example',
    CASE WHEN g %% %(rare_every)s = 0 THEN %(rare)s
         ELSE (%(actions)s::text[])[1 + (hashtext(g::text) & 2147483647) %% cardinality(%(actions)s::text[])] END,
    '{"status": {"before": "active", "after": "disabled"}}'::jsonb
FROM generate_series(%(start)s::bigint, %(end)s::bigint) AS g
"""
