"""The single DRF exception handler and the JSON 404/500 pages, all in OpenAI's error shape."""

import logging

from django.http import JsonResponse
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


def server_error_view(request):
    return JsonResponse(INTERNAL_ERROR.body(), status=500)
