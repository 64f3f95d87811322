"""Issuing, verifying and revoking API keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from ..models import ApiKey, ServedModel

KEY_PREFIX = "ipk"
# last_used_at is informational; writing it at most once a minute keeps hot keys from
# turning every request into a write.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    plaintext: str


def hash_secret(plaintext: str) -> str:
    """SHA-256 of the whole key; the secret has 256 bits of entropy so no salt or KDF is needed."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def split_key(plaintext: str) -> str | None:
    """The lookup prefix of a well-formed key, or None."""
    parts = plaintext.split("-", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 8 or not parts[2]:
        return None
    return parts[1]


def _new_secret() -> tuple[str, str]:
    while True:
        prefix = secrets.token_hex(4)
        if not ApiKey.objects.filter(prefix=prefix).exists():
            break
    return prefix, f"{KEY_PREFIX}-{prefix}-{secrets.token_urlsafe(32)}"


def api_key_assign_secret(*, key: ApiKey) -> str:
    """Give an unsaved key its secret, save it, and return the plaintext (never stored)."""
    prefix, plaintext = _new_secret()
    key.prefix = prefix
    key.hashed_secret = hash_secret(plaintext)
    key.save()
    return plaintext


@transaction.atomic
def api_key_issue(
    *,
    name: str,
    owner=None,
    expires_at: dt.datetime | None = None,
    model_names: list[str] | None = None,
) -> IssuedKey:
    """Create a key and return it with its plaintext, which is shown once and never stored."""
    models = []
    if model_names:
        models = list(ServedModel.objects.filter(name__in=model_names))
        missing = sorted(set(model_names) - {m.name for m in models})
        if missing:
            raise ValueError(f"unknown model(s): {', '.join(missing)}")
    key = ApiKey(name=name, owner=owner, expires_at=expires_at)
    plaintext = api_key_assign_secret(key=key)
    if models:
        key.allowed_models.set(models)
    return IssuedKey(key=key, plaintext=plaintext)


def api_key_verify(*, plaintext: str, now: dt.datetime | None = None) -> ApiKey | None:
    """Return the active key matching `plaintext`, or None; records when it was last used."""
    prefix = split_key(plaintext)
    if prefix is None:
        return None
    key = ApiKey.objects.filter(prefix=prefix).first()
    if key is None or not hmac.compare_digest(key.hashed_secret, hash_secret(plaintext)):
        return None
    now = now or timezone.now()
    if not key.is_active(now):
        return None
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def api_key_revoke(*, key: ApiKey) -> None:
    """Revoke a key; requests with it get 401 from now on."""
    ApiKey.objects.filter(pk=key.pk).update(revoked=True)
    key.revoked = True
