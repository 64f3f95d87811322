"""WebSocket routes of the API; inference_platform/asgi.py mounts them."""

from django.urls import path

from .consumers import ChatCompletionsConsumer, CompletionsConsumer, ResponsesConsumer

websocket_urlpatterns = [
    path("ws/v1/chat/completions", ChatCompletionsConsumer.as_asgi()),
    path("ws/v1/completions", CompletionsConsumer.as_asgi()),
    path("ws/v1/responses", ResponsesConsumer.as_asgi()),
]
