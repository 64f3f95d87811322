"""One row per API request, whatever its outcome."""

from django.db import models


class RequestRecord(models.Model):
    """Metrics of one completion request; never holds prompt or completion text."""

    request_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(db_index=True)
    api_key = models.ForeignKey(
        "models_registry.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="request_records"
    )
    model_name = models.CharField(
        max_length=256,
        blank=True,
        db_index=True,
        help_text="The served model the request resolved to (an alias is recorded "
        "as its model); empty when it named no model its key may use.",
    )
    engine = models.CharField(max_length=16, blank=True)
    worker = models.CharField(max_length=128, blank=True)
    endpoint = models.CharField(max_length=32)
    stream = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    cached_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Prompt tokens served from the engine's prefix cache; empty where the engine does not report it.",
    )
    queue_wait_ms = models.FloatField(null=True, blank=True, help_text="Time the job waited for a worker, ms.")
    ttft_ms = models.FloatField(null=True, blank=True, help_text="Time to first token, ms.")
    duration_ms = models.FloatField(help_text="Total time, ms.")
    tokens_per_second = models.FloatField(null=True, blank=True, help_text="Completion tokens over the total duration.")
    finish_reason = models.CharField(max_length=16, blank=True)
    status_code = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["model_name", "created_at"])]

    def __str__(self):
        return f"{self.request_id} {self.model_name} {self.status_code}"


class MetricTotal(models.Model):
    """One running total behind /metrics (see monitoring.metric_totals): only ever added to, so
    pruning request records never lowers a Prometheus counter."""

    model_name = models.CharField(max_length=256, help_text="The served model's registered name.")
    series = models.CharField(max_length=64)
    value = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model_name", "series"], name="one_total_per_model_series")]

    def __str__(self):
        return f"{self.model_name} {self.series} = {self.value}"
