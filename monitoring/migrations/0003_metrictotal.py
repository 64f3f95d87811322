from django.db import migrations, models

from monitoring.metric_totals import record_increments

BACKFILL_CHUNK = 2000
RECORD_FIELDS = (
    "model_name",
    "engine",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "duration_ms",
    "ttft_ms",
    "queue_wait_ms",
)


def backfill_from_records(apps, schema_editor):
    """Start the running totals from the records already stored, so /metrics keeps its counts."""
    RequestRecord = apps.get_model("monitoring", "RequestRecord")
    MetricTotal = apps.get_model("monitoring", "MetricTotal")
    totals: dict[tuple[str, str], float] = {}
    for record in RequestRecord.objects.values(*RECORD_FIELDS).iterator(chunk_size=BACKFILL_CHUNK):
        for series, amount in record_increments(record).items():
            key = (record["model_name"], series)
            totals[key] = totals.get(key, 0) + amount
    MetricTotal.objects.bulk_create(
        [
            MetricTotal(model_name=model_name, series=series, value=value)
            for (model_name, series), value in totals.items()
        ],
        batch_size=BACKFILL_CHUNK,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0002_requestrecord_queue_wait_ms"),
    ]

    operations = [
        migrations.CreateModel(
            name="MetricTotal",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("model_name", models.CharField(help_text="The model as the client named it.", max_length=256)),
                ("series", models.CharField(max_length=64)),
                ("value", models.FloatField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("model_name", "series"), name="one_total_per_model_series")
                ],
            },
        ),
        migrations.RunPython(backfill_from_records, migrations.RunPython.noop),
    ]
