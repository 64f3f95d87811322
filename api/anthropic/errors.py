"""Errors in Anthropic's shape on the Messages routes: {"type": "error", "error": {"type", "message"}}.

The errors are the platform's (serving/errors.py, plus what api/errors.py makes of Django's and
DRF's); this module only says how Anthropic's protocol shows them: its error type for each
status, and 529 `overloaded_error` where a model's queue is full.
"""

from __future__ import annotations

import logging

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.response import Response

from serving.errors import INTERNAL_ERROR, ErrorInfo, ModelBusy

from ..errors import error_info
from .shapes import AnthropicError, ErrorType

logger = logging.getLogger(__name__)

# The routes that answer in this shape, whatever fails (the body limit in front of Django too).
PATH_PREFIX = "/v1/messages"
# Anthropic's status for "the API is overloaded": a model's full waiting queue is that, not the key's limit.
OVERLOADED = 529

_TYPE_BY_STATUS: dict[int, ErrorType] = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    OVERLOADED: "overloaded_error",
}


def is_anthropic_path(path: str) -> bool:
    """Whether `path` is one of the Messages routes (or under them), which answer errors in this shape."""
    return path == PATH_PREFIX or path.startswith(PATH_PREFIX + "/")


def anthropic_status(info: ErrorInfo) -> int:
    """The HTTP status Anthropic gives this error: a model's full queue is 529, the rest keep theirs."""
    return OVERLOADED if info.code == ModelBusy.code else info.status


def anthropic_error_body(info: ErrorInfo) -> AnthropicError:
    """Anthropic's error object, its type picked by status (other 4xx are `invalid_request_error`)."""
    status = anthropic_status(info)
    default: ErrorType = "api_error" if status >= 500 else "invalid_request_error"
    return {"type": "error", "error": {"type": _TYPE_BY_STATUS.get(status, default), "message": info.message}}


def anthropic_exception_handler(exc, context):
    """DRF's exception handler for the Messages views: every error in Anthropic's shape."""
    info = error_info(exc)
    if info is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        info = INTERNAL_ERROR
    response = Response(anthropic_error_body(info), status=anthropic_status(info))
    if info.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    retry_after = getattr(exc, "retry_after", None)  # per-key limits, and a model's full queue
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


@csrf_exempt  # an unknown path under the Messages routes is a 404 for POST too, not a CSRF 403
def anthropic_not_found_view(request, exception=None):
    info = ErrorInfo(
        404, "invalid_request_error", "unknown_url", f"Unknown request URL: {request.method} {request.path}.", None
    )
    return JsonResponse(anthropic_error_body(info), status=404)
