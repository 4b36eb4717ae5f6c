"""Rebuild the dashboard's tallies from the mailboxes and their events (fleet/tallies.py).

The database triggers keep them in step on their own; this is for a tally in doubt (rows written
with the triggers disabled, a restore of some tables only)."""

from django.core.management.base import BaseCommand

from fleet import tallies


class Command(BaseCommand):
    help = "Recount the dashboard's rolled-up counts from the source rows."

    def handle(self, *args, **options):
        tallies.recount()
        self.stdout.write("Tallies recounted.")
