"""Bearer-key authentication for the /v1 API."""

from rest_framework import authentication, exceptions

from models_registry.services.api_keys import api_key_verify


def bearer_token(header: str) -> str | None:
    """The token of an Authorization header: None if the header is empty, "" if it is not a usable bearer token."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>`; request.auth becomes the ApiKey."""

    def authenticate(self, request):
        token = bearer_token(authentication.get_authorization_header(request).decode("latin-1"))
        if token is None:
            return None
        if not token:
            raise exceptions.AuthenticationFailed("Send the API key as 'Authorization: Bearer <key>'.")
        key = api_key_verify(plaintext=token)
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
