"""Limits on what a client may send."""

from django.core.exceptions import ImproperlyConfigured

from .environment import env

# Largest request body (HTTP, chunked or not) and WebSocket message accepted; larger ones get
# a 413 `request_too_large` (see api/request_body.py). Django's own check uses the same bound.
MAX_REQUEST_BODY_BYTES = env("MAX_REQUEST_BODY_BYTES")
if MAX_REQUEST_BODY_BYTES < 1:
    raise ImproperlyConfigured("MAX_REQUEST_BODY_BYTES must be >= 1")
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
