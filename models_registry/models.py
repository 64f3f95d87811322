"""Served models, API keys: what operators manage in the admin."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from engines.capabilities import CAPABILITIES
from engines.platform import ENGINE_CHOICES

from .validators import (
    validate_aliases,
    validate_default_params,
    validate_json_object,
    validate_model_name,
    validate_source_for_engine,
)

# Ollama's default keep_alive: five minutes.
DEFAULT_KEEP_ALIVE_SECONDS = 300


class ServedModel(models.Model):
    """A model clients can ask for by `name` (or an alias), served by one engine."""

    class Task(models.TextChoices):
        GENERATE = "generate", "generate: chat and completions"
        EMBED = "embed", "embed: /v1/embeddings"

    name = models.CharField(
        max_length=128, unique=True, validators=[validate_model_name], help_text="The `model` value clients send."
    )
    engine = models.CharField(
        max_length=16,
        choices=[(e, e) for e in ENGINE_CHOICES],
        default="auto",
        help_text="`auto` picks by the hardware of the process that loads it.",
    )
    source = models.CharField(
        max_length=1024,
        blank=True,
        help_text="A GGUF file or model directory; for vllm also a Hugging Face id; "
        "for upstream the upstream's model name (optional); blank for echo.",
    )
    task = models.CharField(
        max_length=16,
        choices=Task.choices,
        default=Task.GENERATE,
        help_text="What the model is loaded for. An embed model serves /v1/embeddings (and /tokenize) only; "
        "a generate model chat, completions (and /tokenize), never embeddings.",
    )
    context_length = models.PositiveIntegerField(default=2048, validators=[MinValueValidator(16)])
    default_params = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_default_params],
        help_text='Sampling defaults, e.g. {"temperature": 0.7, "max_tokens": 256}.',
    )
    engine_options = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_json_object],
        help_text='Engine-specific options, e.g. {"n_threads": 2}.',
    )
    aliases = models.JSONField(
        default=list, blank=True, validators=[validate_aliases], help_text='Other names clients may use, e.g. ["smol"].'
    )
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=255, blank=True)
    owned_by = models.CharField(max_length=64, default="inference-platform")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # The deployment: where and how many copies the engine hosts keep loaded (serving/deployments).
    replicas = models.PositiveSmallIntegerField(
        default=1,
        help_text="How many engine hosts keep it loaded. 0: on demand — the first request loads it on a "
        "worker with room, and it unloads after its keep-alive.",
    )
    placement_label = models.CharField(
        max_length=64,
        blank=True,
        help_text="Only workers started with this label (WORKER_LABELS, or --labels). Blank: any worker.",
    )
    placement_host = models.CharField(
        max_length=200, blank=True, help_text="Only workers on this host name. Blank: any host."
    )
    keep_alive_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=DEFAULT_KEEP_ALIVE_SECONDS,
        verbose_name="keep-alive (seconds)",
        help_text="On-demand models: how long a copy stays loaded with no requests. 0: unload as soon as "
        "its requests end. Blank: never unload (as Ollama's keep_alive 0 and -1).",
    )
    slots = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Requests one copy runs at once (llama.cpp's parallel sequences). Blank: the engine's default.",
    )
    revision = models.PositiveIntegerField(
        default=0, editable=False, help_text="Raised by the admin's reload action: older copies are replaced."
    )
    wanted_until = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="An on-demand model is loaded for requests (or the admin's load action) until then, "
        "and kept while it is used within its keep-alive.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        errors = {}
        try:
            validate_source_for_engine(self.engine, self.source, self.engine_options)
        except ValidationError as exc:
            errors.update(exc.message_dict if hasattr(exc, "error_dict") else {"source": exc.messages})
        if self.task == self.Task.EMBED and "embeddings" not in CAPABILITIES.get(self.engine, {"embeddings"}):
            # `auto` is checked when it resolves: a request then gets a 400 naming the model.
            errors["task"] = [f"The {self.engine} engine does not serve embeddings."]
        if isinstance(self.aliases, list):
            clash = self._alias_clashes()
            if clash:
                errors["aliases"] = clash
        if errors:
            raise ValidationError(errors)

    def _alias_clashes(self) -> list[str]:
        mine = set(self.aliases) | {self.name}
        if self.name in self.aliases:
            return [f"An alias cannot repeat the model's own name {self.name!r}."]
        problems = []
        for other in ServedModel.objects.exclude(pk=self.pk):
            taken = mine & ({other.name} | set(other.aliases or []))
            if taken:
                problems.append(f"{', '.join(sorted(taken))} already used by model {other.name!r}.")
        return problems

    @property
    def all_names(self) -> list[str]:
        return [self.name, *self.aliases]

    @property
    def on_demand(self) -> bool:
        return self.replicas == 0


class ApiKey(models.Model):
    """A bearer key. Only a SHA-256 of the secret is stored; the plaintext is shown once."""

    name = models.CharField(max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="api_keys"
    )
    prefix = models.CharField(
        max_length=16, unique=True, editable=False, help_text="Public part of the key, used to find it."
    )
    hashed_secret = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Leave blank for no expiry.")
    revoked = models.BooleanField(default=False)
    allowed_models = models.ManyToManyField(
        ServedModel, blank=True, related_name="api_keys", help_text="Leave empty to allow every model."
    )
    rpm_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        verbose_name="requests per minute",
        help_text="Leave blank for no limit.",
    )
    tpm_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        verbose_name="tokens per minute",
        help_text="Prompt plus completion tokens. Leave blank for no limit.",
    )
    concurrency_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        verbose_name="concurrent requests",
        help_text="Leave blank for no limit.",
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    def is_active(self, now=None) -> bool:
        now = now or timezone.now()
        return not self.revoked and (self.expires_at is None or self.expires_at > now)


class WorkerRegistration(models.Model):
    """A Celery worker process that hosts engines; it keeps this row fresh while alive."""

    class State(models.TextChoices):
        LOADING = "loading"
        READY = "ready"
        DRAINING = "draining"
        DEAD = "dead"

    worker_id = models.CharField(max_length=200, unique=True, help_text="host:pid:random, unique per start")
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    hosted_models = models.JSONField(default=list, help_text="Names of the models this worker hosts.")
    engines = models.JSONField(default=dict, blank=True, help_text="Engine serving each model.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.LOADING, db_index=True)
    concurrency = models.PositiveIntegerField(default=1)
    in_flight = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat = models.DateTimeField(db_index=True)
    error = models.CharField(max_length=500, blank=True)
    labels = models.JSONField(
        default=list, blank=True, help_text="Labels it was started with (WORKER_LABELS); placement matches them."
    )
    capacity = models.JSONField(
        default=dict,
        blank=True,
        help_text="What it reported at start: memory_total_bytes, memory_budget_bytes, max_loaded_models, gpus.",
    )
    drained = models.BooleanField(
        default=False,
        help_text="Set by the admin's drain action: it takes no new jobs, and its copies are placed elsewhere.",
    )

    class Meta:
        ordering = ["-last_heartbeat"]
        verbose_name = "worker"

    def __str__(self):
        return f"{self.worker_id} ({self.state})"


class Replica(models.Model):
    """One copy of a served model on one engine host (a worker, or the embedded process): its live state.

    The host that holds the copy writes the row; a rolling reload has two rows for a while, the
    old revision draining once the new one is ready.
    """

    class State(models.TextChoices):
        LOADING = "loading"
        READY = "ready"
        DRAINING = "draining"
        FAILED = "failed"

    model = models.ForeignKey(ServedModel, on_delete=models.CASCADE, related_name="copies")
    worker = models.ForeignKey(WorkerRegistration, on_delete=models.CASCADE, related_name="copies")
    engine = models.CharField(max_length=16)
    revision = models.CharField(max_length=64, help_text="Which version of the model it runs (source, options).")
    state = models.CharField(max_length=16, choices=State.choices, default=State.LOADING, db_index=True)
    error = models.TextField(blank=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    memory_bytes = models.BigIntegerField(
        null=True, blank=True, help_text="The host's resident memory growth over the load."
    )

    class Meta:
        ordering = ["model__name", "worker__worker_id"]
        constraints = [
            models.UniqueConstraint(fields=["worker", "model", "revision"], name="one_copy_per_revision_per_host")
        ]

    def __str__(self):
        return f"{self.model.name} on {self.worker.worker_id} ({self.state})"
