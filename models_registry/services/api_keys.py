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
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    concurrency_limit: int | None = None,
) -> IssuedKey:
    """Create a key and return it with its plaintext, which is shown once and never stored.

    Limits are per minute (requests, prompt + completion tokens) and in flight; None is unlimited.
    """
    for label, value in (("rpm_limit", rpm_limit), ("tpm_limit", tpm_limit), ("concurrency_limit", concurrency_limit)):
        if value is not None and value < 1:
            raise ValueError(f"{label} must be a positive integer or None (unlimited)")
    models = []
    if model_names:
        models = list(ServedModel.objects.filter(name__in=model_names))
        missing = sorted(set(model_names) - {m.name for m in models})
        if missing:
            raise ValueError(f"unknown model(s): {', '.join(missing)}")
    key = ApiKey(
        name=name,
        owner=owner,
        expires_at=expires_at,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        concurrency_limit=concurrency_limit,
    )
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


ROTATED_SUFFIX = " (rotated)"


@transaction.atomic
def api_key_rotate(*, key: ApiKey, grace_seconds: int, now: dt.datetime | None = None) -> IssuedKey:
    """Issue a successor of `key` and let the old key live on for `grace_seconds` only.

    The new key copies the owner, model allowlist, limits and expiry, and is named
    "<name> (rotated)". The old key's expiry becomes now + grace, never later than an expiry
    it already had. Rotating a revoked or expired key is refused.
    """
    if grace_seconds < 0:
        raise ValueError("grace_seconds must be 0 or more")
    now = now or timezone.now()
    old = ApiKey.objects.select_for_update().get(pk=key.pk)
    if not old.is_active(now):
        raise ValueError("a revoked or expired key cannot be rotated; issue a new one")
    name = old.name if old.name.endswith(ROTATED_SUFFIX) else old.name + ROTATED_SUFFIX
    new = ApiKey(
        name=name[:100],
        owner=old.owner,
        expires_at=old.expires_at,
        rpm_limit=old.rpm_limit,
        tpm_limit=old.tpm_limit,
        concurrency_limit=old.concurrency_limit,
    )
    plaintext = api_key_assign_secret(key=new)
    new.allowed_models.set(old.allowed_models.all())
    grace_end = now + dt.timedelta(seconds=grace_seconds)
    if old.expires_at is None or grace_end < old.expires_at:
        ApiKey.objects.filter(pk=old.pk).update(expires_at=grace_end)
        key.expires_at = grace_end
    return IssuedKey(key=new, plaintext=plaintext)
