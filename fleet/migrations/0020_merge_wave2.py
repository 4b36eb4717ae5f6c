"""Joins the second wave's migrations, written side by side (health sweeps, token upkeep, alerts,
reconnect and uptime, scale tallies, the audit log); none depends on another."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0013_health_sweep"),
        ("fleet", "0014_token_upkeep"),
        ("fleet", "0015_alerts"),
        ("fleet", "0016_reconnect_uptime"),
        ("fleet", "0017_scale_tallies"),
        ("fleet", "0019_audit_log"),
    ]

    operations = []
