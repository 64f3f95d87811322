"""Fixtures for tests against the platform started as the README says (one server per module)."""

import openai
import pytest

from .browser import chromium, new_page
from .live_server import start_live_server


@pytest.fixture(scope="module")
def live(tmp_path_factory, request):
    server = start_live_server(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    assert server.api_key, server.log()
    yield server
    server.stop()
    assert server.process.returncode is not None


@pytest.fixture(scope="module")
def sdk(live):
    return openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=live.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def browser():
    """Headless chromium for a module's browser tests (tests/compat/browser.py)."""
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser):
    """A fresh browser page for one test."""
    with new_page(browser) as page:
        yield page
