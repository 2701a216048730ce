"""The four machine-learning settings leave Project: workers 0006 has copied them into
workers.TrainingSettings. The gating check constraint goes first (it names gating_tolerance; SQLite rebuilds
the table on each RemoveField). Reversed, the columns come back with their defaults and workers 0006's
reverse copies the values back."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("annotations", "0011_agreement_metrics_help"),
        ("workers", "0006_training_settings"),  # the values are copied before the columns go
    ]

    operations = [
        migrations.RemoveConstraint(model_name="project", name="project_gating_0_1"),
        migrations.RemoveField(model_name="project", name="auto_retrain_every"),
        migrations.RemoveField(model_name="project", name="gating_tolerance"),
        migrations.RemoveField(model_name="project", name="query_strategy"),
        migrations.RemoveField(model_name="project", name="training_config"),
    ]
