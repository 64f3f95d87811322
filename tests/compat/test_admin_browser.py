"""A real browser drives the admin of the platform started as the README says.

An operator logs in, registers a served model and issues an API key through the admin forms;
the official openai SDK then uses that key, and the request shows up on the dashboard and in the
request records. Screenshots of each step land in test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import re
from pathlib import Path

import openai
import pytest

from .browser import PNG_MAGIC, admin_login, screenshot

pytestmark = [pytest.mark.live, pytest.mark.model]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
MODEL = "browser-smol"


def shot(page, name: str) -> Path:
    return screenshot(page, ARTIFACTS / f"admin-{name}.png")


def assert_ok(response) -> None:
    assert response is not None and response.status == 200, response and response.status


def test_operator_registers_model_issues_key_and_sees_request_on_dashboard(live, page, gguf_path):
    base = live.base_url
    screenshots = []

    # (1) Log in to the admin.
    admin_login(page, base, "admin", "live-test-password")
    assert page.locator("#user-tools").inner_text().upper().startswith("WELCOME")
    assert page.locator("#monitoring-dashboard-link").is_visible()
    screenshots.append(shot(page, "01-login"))

    # (2) Register a served model through the add form.
    assert_ok(page.goto(f"{base}/admin/models_registry/servedmodel/add/"))
    page.fill("#id_name", MODEL)
    page.select_option("#id_engine", "llama_cpp")
    page.fill("#id_source", gguf_path)
    page.fill("#id_context_length", "2048")
    for field, empty in (("#id_default_params", "{}"), ("#id_engine_options", "{}"), ("#id_aliases", "[]")):
        if page.locator(field).count() and not page.locator(field).input_value().strip():
            page.fill(field, empty)
    page.click("input[name=_save]")
    page.wait_for_load_state()
    errors = page.locator(".errorlist, .errornote")
    assert errors.count() == 0, errors.all_inner_texts()
    success = page.locator("ul.messagelist li.success")
    assert success.count() == 1, page.content()[:2000]
    assert MODEL in success.inner_text() and "added successfully" in success.inner_text()
    assert page.url.endswith("/admin/models_registry/servedmodel/"), page.url
    assert page.locator("#result_list").get_by_text(MODEL, exact=True).count() == 1
    screenshots.append(shot(page, "02-model-added"))

    # (3) Issue an API key; its plaintext is shown once.
    assert_ok(page.goto(f"{base}/admin/models_registry/apikey/add/"))
    page.fill("#id_name", "browser-key")
    page.click("input[name=_save]")
    page.wait_for_load_state()
    plaintext = page.locator("#issued-api-key").inner_text().strip()
    assert re.fullmatch(r"ipk-\S+", plaintext), plaintext
    assert plaintext != live.api_key
    screenshots.append(shot(page, "03-key-issued"))

    # (4) The official SDK, with the key issued in the browser, talks to the model registered there.
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=plaintext, max_retries=0, timeout=120)
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
    )
    assert completion.model == MODEL
    assert completion.choices[0].message.content.strip()
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert 0 < completion.usage.completion_tokens <= 8
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key=plaintext + "x", max_retries=0).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1
        )
    assert_ok(page.goto(f"{base}/admin/models_registry/apikey/"))
    assert page.locator("#result_list").get_by_text("browser-key", exact=True).count() == 1
    screenshots.append(shot(page, "04-keys-after-request"))

    # (5) The dashboard, reached from the admin index, counts the request under the model.
    assert_ok(page.goto(f"{base}/admin/"))
    page.locator("#monitoring-dashboard-link").get_by_role("link", name="Request dashboard").click()
    page.wait_for_load_state()
    assert page.url.startswith(f"{base}/admin/monitoring/dashboard/"), page.url
    assert_ok(page.goto(f"{base}/admin/monitoring/dashboard/?window=hour&group=model"))
    totals = page.locator("#content-main p", has_text="Requests in the window by model:")
    assert totals.count() == 1, page.content()[:2000]
    text = " ".join(totals.inner_text().split())
    assert re.search(rf"\b{re.escape(MODEL)} 1\b", text), text
    assert page.locator(".dashboard-charts svg").count() > 0
    assert page.locator("#hosts tbody tr").count() >= 1
    screenshots.append(shot(page, "05-dashboard"))

    # The request records changelist has the row, with the engine that served it.
    assert_ok(page.goto(f"{base}/admin/monitoring/requestrecord/?model_name={MODEL}"))
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1, page.content()[:2000]
    assert rows.first.locator("td.field-model_name").inner_text().strip() == MODEL
    assert rows.first.locator("td.field-status_code").inner_text().strip() == "200"
    assert rows.first.locator("td.field-engine").inner_text().strip() == "llama_cpp"
    screenshots.append(shot(page, "06-request-records"))

    for path in screenshots:
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), path
