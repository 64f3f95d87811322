"""Verified keys are remembered for a second: revocation and expiry still take effect."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from api import authentication
from models_registry.models import ApiKey
from models_registry.services.api_keys import api_key_revoke

pytestmark = pytest.mark.django_db(transaction=True)


async def _status(client) -> int:
    return (await client.get("/v1/models")).status_code


async def test_a_revoked_key_is_refused_once_its_remembered_verification_lapses(client, api_key, monkeypatch):
    monkeypatch.setattr(authentication, "VERIFIED_KEY_TTL_S", 0.2)
    assert await _status(client) == 200  # verified, and now remembered
    key = await ApiKey.objects.aget(prefix=api_key.split("-")[1])
    await sync_to_async(api_key_revoke)(key=key)
    await asyncio.sleep(0.3)
    assert await _status(client) == 401


async def test_a_remembered_key_that_expires_is_refused_at_once(client, api_key):
    assert await _status(client) == 200
    digest = next(iter(authentication._verified))
    remembered, _trusted_until = authentication._verified[digest]
    remembered.expires_at = timezone.now() - dt.timedelta(seconds=1)  # as if its expiry just passed
    assert await _status(client) == 401


async def test_a_wrong_key_is_never_remembered(client):
    response = await client.get("/v1/models", headers={"Authorization": "Bearer ipk-abcdef12-wrong"})
    assert response.status_code == 401
    assert authentication._verified == {}


@pytest.fixture(autouse=True)
def _forget():
    authentication.forget_verified_keys()
    yield
    authentication.forget_verified_keys()
