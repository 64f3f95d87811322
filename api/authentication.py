"""API-key authentication for the /v1 API (Bearer, or `x-api-key` as Anthropic's SDK sends it), with verified keys remembered for a second."""

from __future__ import annotations

import hashlib
import time

from django.utils import timezone
from rest_framework import authentication, exceptions

from models_registry.models import ApiKey
from models_registry.services.api_keys import api_key_verify

# A verified key is trusted this long without asking the database again: a busy key costs one
# query a second instead of one per request, and a revocation or a change of its limits or
# models takes effect within this time. Expiry is checked on every request regardless.
VERIFIED_KEY_TTL_S = 1.0
# Only keys that verified are remembered, so this bounds memory against nothing but many real keys.
MAX_REMEMBERED_KEYS = 4096

# sha256 of the bearer token -> (the key, monotonic time until which it is trusted)
_verified: dict[str, tuple[ApiKey, float]] = {}


def verified_key(token: str) -> ApiKey | None:
    """The active key for `token`: remembered for VERIFIED_KEY_TTL_S once the database verified it."""
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    remembered = _verified.get(digest)
    now = time.monotonic()
    if remembered is not None and remembered[1] > now:
        cached = remembered[0]
        return cached if cached.is_active(timezone.now()) else None
    key = api_key_verify(plaintext=token)
    if key is None:
        _verified.pop(digest, None)
        return None
    if len(_verified) >= MAX_REMEMBERED_KEYS:
        _verified.clear()  # rare; the next request per key verifies it again
    _verified[digest] = (key, now + VERIFIED_KEY_TTL_S)
    return key


def forget_verified_keys() -> None:
    """Drop every remembered key (tests; a process that must see a change at once)."""
    _verified.clear()


def bearer_token(header: str) -> str | None:
    """The token of an Authorization header: None if the header is empty, "" if it is not a usable bearer token."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>`, or `x-api-key: <key>` without one; request.auth becomes the ApiKey."""

    def authenticate(self, request):
        token = bearer_token(authentication.get_authorization_header(request).decode("latin-1"))
        if token is None:
            token = request.META.get("HTTP_X_API_KEY", "").strip() or None
        if token is None:
            return None
        if not token:
            raise exceptions.AuthenticationFailed("Send the API key as 'Authorization: Bearer <key>'.")
        key = verified_key(token)
        if key is None:
            # Never echo the key back: it may be a real secret pasted in the wrong place.
            raise exceptions.AuthenticationFailed(
                "Incorrect, expired or revoked API key provided. Issue a key in the admin."
            )
        return (key.owner or _KeyPrincipal(key), key)

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class _KeyPrincipal:
    """Stands in for a user when a key has no owner, so IsAuthenticated passes."""

    is_authenticated = True

    def __init__(self, key):
        self.key = key
