"""Address search on PostgreSQL: the admin searches `email__icontains`, which PostgreSQL runs as
UPPER(email::text) LIKE UPPER('%…%'). A trigram GIN index on that very expression answers such
searches without scanning the table. SQLite (the small default) has no such index and needs none."""

from django.db import migrations

INDEX = "mailbox_email_upper_trgm"


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {INDEX} ON fleet_mailbox "
        "USING gin ((UPPER(email::text)) gin_trgm_ops)"
    )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("fleet", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
