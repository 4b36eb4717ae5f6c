"""Re-encrypt every stored secret with the first key of FIELD_ENCRYPTION_KEYS.

Rotation: put the new key first, keep the old ones after it, run this command, then remove the
old keys. Rows that no configured key decrypts are listed and left untouched.
"""

from cryptography.fernet import InvalidToken
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import F, TextField
from django.db.models.functions import Cast

from fleet.secrets import Ciphertext, encrypted_fields, fernet

BATCH = 500


class Command(BaseCommand):
    help = "Re-encrypt every secret with the first FIELD_ENCRYPTION_KEYS key."

    def handle(self, *args, **options):
        f = fernet()
        total = unreadable = 0
        for model, field in encrypted_fields():
            label = f"{model._meta.label}.{field}"
            # Read the stored ciphertext itself, not the decrypted value.
            rows = (
                model._base_manager.exclude(**{field: ""})
                .exclude(**{f"{field}__isnull": True})
                .annotate(_raw=Cast(F(field), TextField()))
                .values_list("pk", "_raw")
                .order_by("pk")
            )
            batch: list = []
            for pk, raw in rows.iterator(chunk_size=BATCH):
                try:
                    rotated = f.rotate(raw.encode()).decode()
                except InvalidToken:
                    unreadable += 1
                    self.stderr.write(f"{label} pk={pk}: no configured key decrypts it; left as is")
                    continue
                obj = model(pk=pk)
                setattr(obj, field, Ciphertext(rotated))
                batch.append(obj)
                if len(batch) >= BATCH:
                    total += self._save(model, field, batch)
            total += self._save(model, field, batch)
        self.stdout.write(f"Re-encrypted {total} secret(s); {unreadable} unreadable.")
        if unreadable:
            raise CommandError(
                f"{unreadable} secret(s) could not be decrypted: add the key they were written "
                "with to FIELD_ENCRYPTION_KEYS and run the command again."
            )

    def _save(self, model, field, batch) -> int:
        count = len(batch)
        if batch:
            with transaction.atomic():
                model._base_manager.bulk_update(batch, [field])
            batch.clear()
        return count
