"""The dashboard's "never tested" count reads a partial index, not the fleet."""


from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("fleet", "0019_audit_log"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name='mailbox',
            index=models.Index(condition=models.Q(('last_checked_at__isnull', True)), fields=['workspace'], name='mailbox_never_tested'),
        ),
    ]
