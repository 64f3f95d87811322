import datetime as dt

import pytest
from django.utils import timezone

from models_registry.models import ApiKey
from models_registry.selectors import served_model_for_key, served_models_for_key
from models_registry.services.api_keys import (
    LAST_USED_RESOLUTION,
    api_key_issue,
    api_key_revoke,
    api_key_verify,
    hash_secret,
    split_key,
)
from models_registry.services.served_models import served_model_register

pytestmark = pytest.mark.django_db


def register_echo(name: str, **extra):
    return served_model_register(name=name, source="", engine="echo", **extra)


def test_only_a_hash_is_stored():
    issued = api_key_issue(name="ci")
    row = ApiKey.objects.filter(pk=issued.key.pk).values().get()
    assert issued.plaintext not in {str(v) for v in row.values()}
    secret = issued.plaintext.split("-", 2)[2]
    assert not any(secret in str(v) for v in row.values())
    assert row["hashed_secret"] == hash_secret(issued.plaintext)
    assert row["prefix"] == split_key(issued.plaintext)


def test_verify_accepts_the_right_key_only():
    issued = api_key_issue(name="ci")
    other = api_key_issue(name="other")
    assert api_key_verify(plaintext=issued.plaintext) == issued.key
    prefix = issued.key.prefix
    secret = issued.plaintext.split("-", 2)[2]
    rejected = [
        f"ipk-{prefix}-{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}",  # wrong secret
        f"ipk-{other.key.prefix}-{secret}",  # another key's prefix
        f"ipk-00000000-{secret}",  # unknown prefix
        f"sk-{prefix}-{secret}",  # wrong scheme
        f"ipk-{prefix}-",  # no secret
        f"ipk-{prefix}",  # malformed
        "",
        issued.plaintext + "x",
    ]
    for candidate in rejected:
        assert api_key_verify(plaintext=candidate) is None, candidate


@pytest.mark.parametrize(
    "plaintext,expected",
    [
        ("ipk-abcdef12-secret", "abcdef12"),
        ("ipk-abcdef12-sec-ret-", "abcdef12"),
        ("ipk-abcdef1-secret", None),
        ("xyz-abcdef12-secret", None),
        ("ipk-abcdef12", None),
    ],
)
def test_split_key(plaintext, expected):
    assert split_key(plaintext) == expected


def test_revoked_key_is_rejected():
    issued = api_key_issue(name="ci")
    api_key_revoke(key=issued.key)
    assert ApiKey.objects.get(pk=issued.key.pk).revoked
    assert api_key_verify(plaintext=issued.plaintext) is None


def test_expired_key_is_rejected():
    expires = timezone.now() + dt.timedelta(days=1)
    issued = api_key_issue(name="ci", expires_at=expires)
    assert api_key_verify(plaintext=issued.plaintext) is not None
    assert api_key_verify(plaintext=issued.plaintext, now=expires) is None
    assert api_key_verify(plaintext=issued.plaintext, now=expires + dt.timedelta(seconds=1)) is None


def test_last_used_at_is_recorded_at_minute_resolution():
    issued = api_key_issue(name="ci")
    assert issued.key.last_used_at is None
    t0 = timezone.now()
    api_key_verify(plaintext=issued.plaintext, now=t0)
    assert ApiKey.objects.get(pk=issued.key.pk).last_used_at == t0
    api_key_verify(plaintext=issued.plaintext, now=t0 + dt.timedelta(seconds=5))
    assert ApiKey.objects.get(pk=issued.key.pk).last_used_at == t0
    later = t0 + LAST_USED_RESOLUTION
    api_key_verify(plaintext=issued.plaintext, now=later)
    assert ApiKey.objects.get(pk=issued.key.pk).last_used_at == later


def test_secret_containing_dashes_still_verifies():
    """Regression: token_urlsafe secrets often contain '-', which must not confuse splitting."""
    for _ in range(60):  # about half of all secrets contain a dash; 60 misses in a row is ~1e-17
        issued = api_key_issue(name="dash")
        if "-" in issued.plaintext.split("-", 2)[2]:
            break
    else:
        pytest.fail("no secret with a dash was issued")
    assert api_key_verify(plaintext=issued.plaintext) == issued.key


def test_issue_rejects_unknown_models():
    with pytest.raises(ValueError, match="nope"):
        api_key_issue(name="ci", model_names=["nope"])
    assert not ApiKey.objects.exists()


def test_allowlist_selectors():
    alpha = register_echo("alpha", aliases=["a"])
    beta = register_echo("beta")
    register_echo("off", enabled=False)
    open_key = api_key_issue(name="open").key
    limited = api_key_issue(name="limited", model_names=["alpha"]).key

    assert {m.name for m in served_models_for_key(key=open_key)} == {"alpha", "beta"}
    assert served_models_for_key(key=limited) == [alpha]
    assert served_model_for_key(key=limited, name="a") == alpha
    assert served_model_for_key(key=limited, name="beta") is None
    assert served_model_for_key(key=open_key, name="beta") == beta
    assert served_model_for_key(key=open_key, name="off") is None


def test_allowlist_of_only_disabled_models_allows_nothing():
    register_echo("on")
    register_echo("off", enabled=False)
    key = api_key_issue(name="k", model_names=["off"]).key
    assert served_models_for_key(key=key) == []
