from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("models_registry", "0004_apikey_limits"),
    ]

    operations = [
        migrations.AddField(
            model_name="servedmodel",
            name="task",
            field=models.CharField(
                choices=[("generate", "generate: chat and completions"), ("embed", "embed: /v1/embeddings")],
                default="generate",
                help_text="What the model is loaded for. An embed model serves /v1/embeddings (and /tokenize) only; "
                "a generate model chat, completions (and /tokenize), never embeddings.",
                max_length=16,
            ),
        ),
    ]
