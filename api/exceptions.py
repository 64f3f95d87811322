"""The single DRF exception handler and the JSON 404/500 pages, all in OpenAI's error shape."""

import logging
from functools import wraps

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.response import Response

from .errors import INTERNAL_ERROR, ErrorInfo, RateLimited, error_info

logger = logging.getLogger(__name__)


def openai_exception_handler(exc, context):
    """Render every exception raised in a DRF view as {"error": {...}}."""
    info = error_info(exc)
    if info is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        info = INTERNAL_ERROR
    response = Response(info.body(), status=info.status)
    if info.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    retry_after = getattr(exc, "retry_after", None)  # per-key limits, and a model's full queue
    if isinstance(exc, RateLimited) or retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _client_error(status: int, code: str, message: str) -> JsonResponse:
    """A plain Django view's answer in OpenAI's error shape."""
    return JsonResponse(ErrorInfo(status, "invalid_request_error", code, message, None).body(), status=status)


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
                response = _client_error(405, "method_not_allowed", f"Method \"{request.method}\" not allowed.")
                response["Allow"] = ", ".join(methods)
                return response
            return await view(request, *args, **kwargs)

        return csrf_exempt(guarded)

    return decorate


def server_error_view(request):
    return JsonResponse(INTERNAL_ERROR.body(), status=500)
