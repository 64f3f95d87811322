"""The single DRF exception handler and the JSON 404/500 pages, all in OpenAI's error shape."""

import logging
from functools import wraps

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.response import Response

from .errors import INTERNAL_ERROR, RateLimited, error_info

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
    if isinstance(exc, RateLimited):
        response["Retry-After"] = str(exc.retry_after)
    return response


@csrf_exempt  # also the /v1 catch-all: an unknown path is a 404 for POST too, not a CSRF 403
def not_found_view(request, exception=None):
    return JsonResponse(
        {"error": {"message": f"Unknown request URL: {request.method} {request.path}.",
                   "type": "invalid_request_error", "param": None, "code": "unknown_url"}},
        status=404,
    )


def bad_request_view(request, exception=None):
    """Django's own 400s (e.g. a missing or disallowed Host header), in OpenAI's shape."""
    return JsonResponse(
        {"error": {"message": "Bad request: the request's headers or framing are invalid.",
                   "type": "invalid_request_error", "param": None, "code": "bad_request"}},
        status=400,
    )


def permission_denied_view(request, exception=None):
    return JsonResponse(
        {"error": {"message": "You do not have permission to perform this request.",
                   "type": "invalid_request_error", "param": None, "code": "permission_denied"}},
        status=403,
    )


def allow_methods(*methods: str):
    """Guard a plain (async) Django view: other methods get a 405 in OpenAI's shape.

    The view is CSRF-exempt so that a wrong method is answered as such, not as a CSRF 403;
    only the safe methods given here ever reach it.
    """

    def decorate(view):
        @wraps(view)
        async def guarded(request, *args, **kwargs):
            if request.method not in methods:
                response = JsonResponse(
                    {"error": {"message": f"Method \"{request.method}\" not allowed.",
                               "type": "invalid_request_error", "param": None, "code": "method_not_allowed"}},
                    status=405,
                )
                response["Allow"] = ", ".join(methods)
                return response
            return await view(request, *args, **kwargs)

        return csrf_exempt(guarded)

    return decorate


def server_error_view(request):
    return JsonResponse(INTERNAL_ERROR.body(), status=500)
