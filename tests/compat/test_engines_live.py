"""Issue 4's finish line: models registered in the admin with engine mlx and engine upstream
serve real completions through the platform, to the official openai SDK."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.engines.openai_server import openai_server
from tests.models_registry.admin_forms import served_model_form

pytestmark = [pytest.mark.live, pytest.mark.model]

CHAT = [{"role": "user", "content": "Name a colour."}]


def admin_session(live) -> httpx.Client:
    """Log in to the admin as the operator run.sh created (ADMIN_PASSWORD from live_server)."""
    session = httpx.Client(base_url=live.base_url, timeout=60, follow_redirects=False)
    page = session.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = session.post(
        "/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": token, "username": "admin", "password": "live-test-password"},
    )
    assert response.status_code == 302, response.text
    return session


def register_in_admin(live, **fields) -> None:
    session = admin_session(live)
    page = session.get("/admin/models_registry/servedmodel/add/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    form = served_model_form(csrfmiddlewaretoken=token, owned_by="inference-platform", **fields)
    response = session.post("/admin/models_registry/servedmodel/add/", data=form)
    assert response.status_code == 302, re.findall(r'class="errorlist[^"]*"[^>]*>(.*?)</ul>', response.text, re.S)


def test_mlx_model_registered_in_the_admin_serves_a_completion(live, sdk, gguf_path):
    register_in_admin(live, name="smol-mlx", engine="mlx", source=gguf_path)
    reply = sdk.chat.completions.create(model="smol-mlx", messages=CHAT, max_tokens=4, temperature=0)
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens <= 4 and reply.usage.prompt_tokens > 0


def test_upstream_model_streams_from_a_running_llama_cpp_server(live, sdk, gguf_path, tmp_path):
    with openai_server(gguf_path, tmp_path / "upstream.log") as upstream:
        register_in_admin(
            live, name="smol-upstream", engine="upstream", engine_options=json.dumps({"base_url": upstream.base_url})
        )
        pieces = []
        for chunk in sdk.chat.completions.create(
            model="smol-upstream", messages=CHAT, max_tokens=12, temperature=0, seed=1, stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        assert len(pieces) >= 2, "the upstream's tokens should arrive as separate events"
    # The same GGUF through the platform's own llama.cpp engine, with flash attention off as
    # llama-cpp-python has it, gives the same greedy text. (Only the upstream's first answer
    # compares: llama_cpp.server reuses its prompt cache afterwards, which shifts logits slightly.)
    register_in_admin(
        live,
        name="smol-like-upstream",
        engine="llama_cpp",
        source=gguf_path,
        engine_options=json.dumps({"flash_attn": False, "parallel": 4}),
    )
    local = sdk.chat.completions.create(model="smol-like-upstream", messages=CHAT, max_tokens=12, temperature=0, seed=1)
    assert "".join(pieces) == local.choices[0].message.content
