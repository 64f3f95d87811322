from django.urls import path, re_path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from . import views
from .anthropic.errors import anthropic_not_found_view
from .errors import not_found_view

urlpatterns = [
    path("health", views.HealthView.as_view(), name="health"),
    path("v1/models", views.ModelListView.as_view(), name="model-list"),
    path("v1/models/<path:model_id>", views.ModelDetailView.as_view(), name="model-detail"),
    path("v1/chat/completions", views.ChatCompletionsView.as_view(), name="chat-completions"),
    path("v1/completions", views.CompletionsView.as_view(), name="completions"),
    path("v1/messages", views.MessagesView.as_view(), name="messages"),
    path("v1/messages/count_tokens", views.CountTokensView.as_view(), name="messages-count-tokens"),
    re_path(r"^v1/messages/", anthropic_not_found_view),  # Anthropic's error shape under its routes
    path("v1/embeddings", views.EmbeddingsView.as_view(), name="embeddings"),
    # vLLM's and llama-server's paths: at the root, not under /v1.
    path("tokenize", views.TokenizeView.as_view(), name="tokenize"),
    path("detokenize", views.DetokenizeView.as_view(), name="detokenize"),
    path("v1/responses", views.ResponsesView.as_view(), name="responses"),
    path("v1/responses/<str:response_id>", views.ResponseDetailView.as_view(), name="response-detail"),
    path(
        "v1/responses/<str:response_id>/input_items",
        views.ResponseInputItemsView.as_view(),
        name="response-input-items",
    ),
    path("v1/system/status", views.SystemStatusView.as_view(), name="system-status"),
    path("v1/openapi.json", SpectacularJSONAPIView.as_view(), name="openapi-schema"),
    path("v1/docs", SpectacularSwaggerView.as_view(url_name="openapi-schema"), name="api-docs"),
    # Unknown API paths answer in OpenAI's error shape even with DEBUG on. Bare "v1" too:
    # otherwise APPEND_SLASH, seeing "v1/" match, raises on a POST under DEBUG.
    re_path(r"^v1(/|$)", not_found_view),
]
