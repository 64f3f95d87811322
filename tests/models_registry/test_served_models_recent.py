"""A key's models are remembered for a second on the request path: edits in this process show at once,
edits made elsewhere (no signal reaches this process) once the second is over."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from models_registry import selectors
from models_registry.models import ServedModel
from models_registry.selectors import served_model_for_key_recent
from models_registry.services.api_keys import api_key_issue
from models_registry.services.served_models import served_model_register

pytestmark = pytest.mark.django_db(transaction=True)


def _setup():
    alpha = served_model_register(name="alpha", source="", engine="echo", aliases=["a"])
    served_model_register(name="beta", source="", engine="echo")
    return alpha, api_key_issue(name="limited", model_names=["alpha"]).key


def _expire_all():
    """What a second passing does to what is remembered (no sleeping in tests)."""
    selectors.served_models_recent.expire_all()


async def test_the_allowlist_and_aliases_hold():
    alpha, key = await sync_to_async(_setup)()
    assert (await served_model_for_key_recent(key=key, name="a")).pk == alpha.pk
    assert await served_model_for_key_recent(key=key, name="beta") is None


async def test_an_edit_in_this_process_shows_at_once():
    alpha, key = await sync_to_async(_setup)()
    assert await served_model_for_key_recent(key=key, name="alpha") is not None
    await sync_to_async(key.allowed_models.set)([])  # no allowlist: every enabled model
    assert await served_model_for_key_recent(key=key, name="beta") is not None
    alpha.enabled = False
    await alpha.asave()
    assert await served_model_for_key_recent(key=key, name="alpha") is None


async def test_an_edit_made_elsewhere_shows_once_the_second_is_over():
    _, key = await sync_to_async(_setup)()
    assert await served_model_for_key_recent(key=key, name="alpha") is not None
    await ServedModel.objects.filter(name="alpha").aupdate(enabled=False)  # sends no signal, like another process
    assert await served_model_for_key_recent(key=key, name="alpha") is not None  # remembered: no query
    _expire_all()
    assert await served_model_for_key_recent(key=key, name="alpha") is None
