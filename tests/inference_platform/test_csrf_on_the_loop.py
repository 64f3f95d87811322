"""The ASGI handler answers CSRF for exempt (API) views on the event loop and still checks every other view."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_form_post_without_its_token_is_still_refused(asgi_app):
    transport = httpx.ASGITransport(app=asgi_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post("/admin/login/", data={"username": "a", "password": "b"})
    assert response.status_code == 403


async def test_an_api_post_needs_no_token(client):
    response = await client.post("/v1/chat/completions", json={"model": "none", "messages": []})
    assert response.status_code == 400  # validation's answer, not CSRF's 403
