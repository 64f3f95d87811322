"""What the API keeps between requests: Responses API answers stored for their key."""

from django.db import models
from django.utils import timezone


class StoredResponse(models.Model):
    """A `/v1/responses` answer kept for its key (`store`, the default): read back with GET,
    removed with DELETE, and continued with `previous_response_id`."""

    id = models.CharField(primary_key=True, max_length=64, help_text="`resp_...`, as the client got it.")
    api_key = models.ForeignKey(
        "models_registry.ApiKey",
        on_delete=models.CASCADE,
        related_name="stored_responses",
        help_text="Only this key may read, continue or delete it.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    body = models.JSONField(help_text="The response object as the client got it.")
    input_items = models.JSONField(
        help_text="The conversation before this response's output: earlier turns of the chain, then this "
        "request's input items (each with its id). Instructions are not carried over, as OpenAI's are not."
    )

    class Meta:
        indexes = [models.Index(fields=["api_key", "created_at"])]

    def __str__(self) -> str:
        return self.id
