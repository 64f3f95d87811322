"""DRF views for the OpenAI-compatible API and Anthropic's Messages. Each parses and authorizes, then calls one service."""

from adrf.views import APIView
from django.http import HttpResponse, StreamingHttpResponse
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from .answers import EventStream
from .anthropic import schema as anthropic_schema
from .anthropic.errors import anthropic_exception_handler
from .anthropic.messages import count_tokens_serve, messages_serve
from .openai import schema
from .openai.completions import completion_serve
from .openai.embeddings import embeddings_serve
from .openai.format import CHAT, TEXT
from .openai.responses import schema as responses_schema
from .openai.responses import stored
from .openai.responses.serializers import input_items_query
from .openai.responses.serve import response_create
from .openai.tokenize import detokenize_serve, tokenize_serve
from .services import status as status_service
from .services.models import model_detail, model_list


@schema.HEALTH
class HealthView(APIView):
    """Liveness and readiness; needs no key. A served process answers it in api.health first."""

    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]

    async def get(self, request):
        status, body = await status_service.health_answer()
        return Response(body, status=status)


@schema.MODEL_LIST
class ModelListView(APIView):
    async def get(self, request):
        return Response(await model_list(key=request.auth))


@schema.MODEL_DETAIL
class ModelDetailView(APIView):
    async def get(self, request, model_id: str):
        return Response(await model_detail(key=request.auth, name=model_id))


@schema.SYSTEM_STATUS
class SystemStatusView(APIView):
    async def get(self, request):
        return Response(await status_service.system_status())


class _JsonAnswerView(APIView):
    def finalize_response(self, request, response, *args, **kwargs):
        """The JSON answer rendered here, on the event loop, into a plain response with the same bytes and headers.

        Django renders a template response (DRF's Response is one) on a thread: a thread hop per
        request, 6% of a gateway request's CPU. Rendering JSON never blocks, so it happens here.
        """
        response = super().finalize_response(request, response, *args, **kwargs)
        if not isinstance(response, Response):
            return response  # a stream
        response.render()
        rendered = HttpResponse(response.content, status=response.status_code)
        for name, value in response.items():
            rendered[name] = value
        return rendered


def _event_stream(events) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # let proxies pass events through as they come
    return response


class _CompletionView(_JsonAnswerView):
    kind: str

    async def post(self, request):
        result = await completion_serve(kind=self.kind, key=request.auth, read_body=lambda: request.data)
        if isinstance(result, EventStream):
            return _event_stream(result.sse())
        return Response(result.body)


@schema.CHAT_COMPLETIONS
class ChatCompletionsView(_CompletionView):
    kind = CHAT


@schema.COMPLETIONS
class CompletionsView(_CompletionView):
    kind = TEXT


@schema.EMBEDDINGS
class EmbeddingsView(_JsonAnswerView):
    async def post(self, request):
        return Response(await embeddings_serve(key=request.auth, read_body=lambda: request.data))


@schema.TOKENIZE
class TokenizeView(_JsonAnswerView):
    async def post(self, request):
        return Response(await tokenize_serve(key=request.auth, read_body=lambda: request.data))


@schema.DETOKENIZE
class DetokenizeView(_JsonAnswerView):
    async def post(self, request):
        return Response(await detokenize_serve(key=request.auth, read_body=lambda: request.data))


@responses_schema.CREATE_RESPONSE
class ResponsesView(_JsonAnswerView):
    async def post(self, request):
        result = await response_create(key=request.auth, read_body=lambda: request.data)
        if isinstance(result, EventStream):
            return _event_stream(result.sse())
        return Response(result.body)


@responses_schema.RETRIEVE_RESPONSE
@responses_schema.DELETE_RESPONSE
class ResponseDetailView(_JsonAnswerView):
    async def get(self, request, response_id: str):
        return Response(await stored.response_retrieve(key=request.auth, response_id=response_id))

    async def delete(self, request, response_id: str):
        return Response(await stored.response_delete(key=request.auth, response_id=response_id))


@responses_schema.LIST_INPUT_ITEMS
class ResponseInputItemsView(_JsonAnswerView):
    async def get(self, request, response_id: str):
        query = input_items_query(request.query_params)
        return Response(await stored.response_input_items(key=request.auth, response_id=response_id, **query))


class _AnthropicView(_JsonAnswerView):
    """Anthropic's routes: every error, authentication's and the method check's too, in Anthropic's shape."""

    def get_exception_handler(self):
        return anthropic_exception_handler


@anthropic_schema.MESSAGES
class MessagesView(_AnthropicView):
    async def post(self, request):
        result = await messages_serve(key=request.auth, read_body=lambda: request.data)
        if isinstance(result, EventStream):
            return _event_stream(result.sse())
        return Response(result.body)


@anthropic_schema.COUNT_TOKENS
class CountTokensView(_AnthropicView):
    async def post(self, request):
        return Response(await count_tokens_serve(key=request.auth, read_body=lambda: request.data))
