"""Enqueue Fleet's periodic tasks (token upkeep, consent expiry, the reaper of dead workers'
jobs, the webhook sweeper) on their intervals; the `db_worker` processes run them. Run one of
these per deployment, or `--once` from cron (more than one does no harm: each task is safe to
run on many hosts at once)."""

import time

from django.core.management.base import BaseCommand
from django_tasks_db.models import DBTaskResult

from fleet.tasks import PERIODIC


class Command(BaseCommand):
    help = "Enqueue the periodic tasks on their intervals (or once with --once)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="enqueue each task once, exit")

    def handle(self, *args, **options):
        due = dict.fromkeys(PERIODIC, 0.0)
        tick = min(5.0, *PERIODIC.values())
        while True:
            now = time.monotonic()
            for task, interval in PERIODIC.items():
                if due[task] <= now:
                    # One waiting at a time: while every worker is busy, the same upkeep
                    # queued a hundred times would only run a hundred times over later.
                    waiting = DBTaskResult.objects.filter(
                        task_path=task.module_path, status="READY"
                    )
                    if not waiting.exists():
                        task.enqueue()
                    due[task] = now + interval
            if options["once"]:
                return
            time.sleep(tick)
