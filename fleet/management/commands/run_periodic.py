"""Enqueue Fleet's periodic tasks (token upkeep, consent expiry) on their intervals; the
`db_worker` processes run them. Run one of these per deployment, or `--once` from cron."""

import time

from django.core.management.base import BaseCommand

from fleet.tasks import PERIODIC


class Command(BaseCommand):
    help = "Enqueue the periodic tasks on their intervals (or once with --once)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="enqueue each task once, exit")

    def handle(self, *args, **options):
        due = dict.fromkeys(PERIODIC, 0.0)
        while True:
            now = time.monotonic()
            for task, interval in PERIODIC.items():
                if due[task] <= now:
                    task.enqueue()
                    due[task] = now + interval
            if options["once"]:
                return
            time.sleep(5)
