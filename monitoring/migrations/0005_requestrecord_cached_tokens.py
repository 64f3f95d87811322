from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0004_model_name_help_text"),
    ]

    operations = [
        migrations.AddField(
            model_name="requestrecord",
            name="cached_tokens",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Prompt tokens served from the engine's prefix cache; empty where the engine does not report it.",
                null=True,
            ),
        ),
    ]
