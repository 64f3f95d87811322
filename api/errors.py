"""Errors in OpenAI's shape: the body, the DRF exception handler, and the JSON 400/403/404/405/500 pages.

The errors themselves are serving's (serving/errors.py); this module only says how the OpenAI
protocol shows them, and maps the exceptions of Django and DRF (parsing, authentication) too.
"""

from __future__ import annotations

import logging
from functools import wraps
from typing import Annotated, TypedDict

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf
from rest_framework.response import Response

from serving import errors
from serving.errors import INTERNAL_ERROR, ErrorInfo, RateLimited, RequestTooLarge

from .typed_shapes import Field

logger = logging.getLogger(__name__)


class ErrorDetail(TypedDict):
    message: str
    type: Annotated[str, Field(help_text="`invalid_request_error` for 4xx, `server_error` for 5xx.")]
    param: Annotated[str | None, Field(help_text="The request field at fault, if any.")]
    code: Annotated[
        str | None,
        Field(
            help_text="e.g. `invalid_api_key`, `model_not_found`, `context_length_exceeded`, `unsupported_parameter`."
        ),
    ]


class Error(TypedDict):
    """OpenAI's error body; every error status answers with it."""

    error: ErrorDetail


def error_body(info: ErrorInfo) -> Error:
    """OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": info.message, "type": info.type, "param": info.param, "code": info.code}}


def _flatten_validation(detail, path: str = "") -> tuple[str | None, str]:
    """First (param, message) of a nested DRF validation error."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                return _flatten_validation(value, path)
            if isinstance(key, int):  # DRF keys list-item errors by index
                sub = f"{path}[{key}]"
            else:
                sub = f"{path}.{key}" if path else str(key)
            return _flatten_validation(value, sub)
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)) and value:
                return _flatten_validation(value, f"{path}[{index}]")
            if value:
                return _flatten_validation(value, path)
    return (path or None), str(detail)


def error_info(exc: BaseException) -> ErrorInfo | None:
    """Map any exception the API expects to an ErrorInfo; None means an unexpected bug."""
    if isinstance(exc, RequestDataTooBig):  # Django's own check of DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = RequestTooLarge("The request body is larger than this server's limit.")
    info = errors.error_info(exc)
    if info is not None:
        return info
    if isinstance(exc, (drf.NotAuthenticated, drf.AuthenticationFailed)):
        message = (
            str(exc.detail)
            if isinstance(exc, drf.AuthenticationFailed)
            else ("You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.")
        )
        return ErrorInfo(401, "invalid_request_error", "invalid_api_key", message, None)
    if isinstance(exc, drf.ParseError):
        return ErrorInfo(
            400,
            "invalid_request_error",
            "invalid_json",
            f"We could not parse the JSON body of your request. ({exc.detail})",
            None,
        )
    if isinstance(exc, drf.UnsupportedMediaType):
        return ErrorInfo(
            415,
            "invalid_request_error",
            "unsupported_media_type",
            "Send the request body as JSON with 'Content-Type: application/json'.",
            None,
        )
    if isinstance(exc, drf.ValidationError):
        param, message = _flatten_validation(exc.detail)
        text = f"Invalid value for '{param}': {message}" if param else message
        return ErrorInfo(400, "invalid_request_error", "invalid_value", text, param)
    if isinstance(exc, drf.MethodNotAllowed):
        return ErrorInfo(405, "invalid_request_error", "method_not_allowed", str(exc.detail), None)
    if isinstance(exc, drf.NotFound):
        return ErrorInfo(404, "invalid_request_error", "not_found", str(exc.detail), None)
    if isinstance(exc, drf.PermissionDenied):
        return ErrorInfo(403, "invalid_request_error", "permission_denied", str(exc.detail), None)
    if isinstance(exc, drf.APIException):
        return ErrorInfo(exc.status_code, "invalid_request_error", exc.default_code, str(exc.detail), None)
    return None


def openai_exception_handler(exc, context):
    """Render every exception raised in a DRF view as {"error": {...}}."""
    info = error_info(exc)
    if info is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        info = INTERNAL_ERROR
    response = Response(error_body(info), status=info.status)
    if info.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    retry_after = getattr(exc, "retry_after", None)  # per-key limits, and a model's full queue
    if isinstance(exc, RateLimited) or retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _client_error(status: int, code: str, message: str) -> JsonResponse:
    """A plain Django view's answer in OpenAI's error shape."""
    return JsonResponse(error_body(ErrorInfo(status, "invalid_request_error", code, message, None)), status=status)


@csrf_exempt  # also the /v1 catch-all: an unknown path is a 404 for POST too, not a CSRF 403
def not_found_view(request, exception=None):
    return _client_error(404, "unknown_url", f"Unknown request URL: {request.method} {request.path}.")


def bad_request_view(request, exception=None):
    """Django's own 400s (e.g. a missing or disallowed Host header), in OpenAI's shape."""
    return _client_error(400, "bad_request", "Bad request: the request's headers or framing are invalid.")


def permission_denied_view(request, exception=None):
    return _client_error(403, "permission_denied", "You do not have permission to perform this request.")


def allow_methods(*methods: str):
    """Guard a plain (async) Django view: other methods get a 405 in OpenAI's shape.

    The view is CSRF-exempt so that a wrong method is answered as such, not as a CSRF 403;
    only the safe methods given here ever reach it.
    """

    def decorate(view):
        @wraps(view)
        async def guarded(request, *args, **kwargs):
            if request.method not in methods:
                response = _client_error(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
                response["Allow"] = ", ".join(methods)
                return response
            return await view(request, *args, **kwargs)

        return csrf_exempt(guarded)

    return decorate


def server_error_view(request):
    return JsonResponse(error_body(INTERNAL_ERROR), status=500)
