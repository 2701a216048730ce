"""API tokens moved to django-rest-knox (hashed at rest, expiring). The old rest_framework.authtoken table
held every key in plain text; it authenticates nobody any more, and must not linger in a database dump."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("annotations", "0008_neutral_display_names")]

    operations = [migrations.RunSQL("DROP TABLE IF EXISTS authtoken_token", migrations.RunSQL.noop)]
