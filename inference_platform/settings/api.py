"""Django REST framework, the OpenAPI document of the API, and how long stored responses are kept."""

from django.core.exceptions import ImproperlyConfigured

from .environment import env

# `/v1/responses` answers stored for `previous_response_id` and GET are gone after this many days,
# as OpenAI keeps them 30 (0 keeps them forever); Celery beat deletes them daily (api/tasks.py).
RESPONSE_RETENTION_DAYS = env("RESPONSE_RETENTION_DAYS")
if RESPONSE_RETENTION_DAYS < 0:
    raise ImproperlyConfigured("RESPONSE_RETENTION_DAYS must be >= 0")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON with bounded nesting and no lone surrogates (api/json_body.py), as WebSockets parse it.
    "DEFAULT_PARSER_CLASSES": ["api.json_body.JsonBodyParser"],
    "EXCEPTION_HANDLER": "api.errors.openai_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI document at /v1/openapi.json and the Swagger UI at /v1/docs (see api/openai/schema.py).
SPECTACULAR_SETTINGS = {
    "TITLE": "Inference platform API",
    "VERSION": "1.0.0",
    "DESCRIPTION": (
        "An OpenAI-compatible API for the models this platform serves. Every `/v1` endpoint takes "
        "`Authorization: Bearer <key>` (keys are issued in the admin); `GET /health` needs none. "
        'Errors come in OpenAI\'s shape, `{"error": {"message", "type", "param", "code"}}`; '
        "a method a path does not allow answers 405 in that shape.\n\n"
        'With `"stream": true` the completion endpoints answer `text/event-stream`: one '
        "`data: <chunk JSON>` event per chunk, ending with `data: [DONE]`; an error after the stream "
        'has started arrives as a `data: {"error": ...}` event. `/v1/responses` streams OpenAI\'s '
        "Responses events instead (`event: <type>` and `data: <event JSON>`), ending with "
        "`response.completed`, `response.incomplete` or `response.failed`.\n\n"
        "**Anthropic Messages** (`/v1/messages`, `/v1/messages/count_tokens`) speak Anthropic's protocol: "
        "the key may come in `x-api-key`, errors are "
        '`{"type": "error", "error": {"type", "message"}}`, and streams are `event:`/`data:` pairs.\n\n'
        "**WebSocket streaming** (which OpenAPI cannot describe): `ws://HOST:PORT/ws/v1/chat/completions`, "
        '`ws://HOST:PORT/ws/v1/completions` and `ws://HOST:PORT/ws/v1/responses` take `{"type": "request", '
        '"body": {...}}` (the body you would POST here), send the stream\'s chunks or events as JSON text '
        "frames, always stream, and end every request with a `[DONE]` text "
        "frame; authenticate with the `Authorization` header on the handshake or a first "
        '`{"type": "auth", "api_key": "<key>"}` message. See the README for the full protocol.'
    ),
    # 3.1: event-stream responses describe each event's JSON payload (contentSchema).
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and docs are public: a stale key in the browser must not lock them.
    "SERVE_AUTHENTICATION": [],
    # Bearer scheme: api/openai/schema.py describes ApiKeyAuthentication as HTTP bearer ("ApiKeyAuth").
    # The same key in `x-api-key`, as Anthropic's SDK sends it; the Messages routes list it beside ApiKeyAuth.
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "XApiKeyAuth": {
                "type": "apiKey",
                "in": "header",
                "name": "x-api-key",
                "description": "The API key (`ipk-...`) in the header Anthropic's SDK sends; works on every route.",
            }
        }
    },
    "ENUM_NAME_OVERRIDES": {
        "AssistantMessageRoleEnum": "api.openai.shapes.ASSISTANT_ROLE_CHOICES",
        "TextCompletionObjectEnum": "api.openai.shapes.TEXT_COMPLETION_OBJECT_CHOICES",
        "ListObjectEnum": "api.openai.embeddings.LIST_OBJECT_CHOICES",
        "FunctionTypeEnum": "api.openai.shapes.FUNCTION_TYPE_CHOICES",
    },
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # /metrics is a plain Django view: monitoring/schema.py describes it.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "monitoring.schema.add_metrics_operation",
    ],
}
