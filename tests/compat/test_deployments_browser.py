"""A real browser deploys a model from the admin of the platform started as the README says (embedded mode).

An operator registers an echo model in the form (the page shows only that engine's options), and
the openai SDK gets answers from it with no restart; editing its context length reloads it, rolling,
while a steady stream of requests sees no failure; the model page's buttons unload and load it, and
its copies panel follows each change live. Screenshots land in test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import threading
from pathlib import Path

import openai
import pytest

from .browser import PNG_MAGIC, admin_login, screenshot

pytestmark = [pytest.mark.live, pytest.mark.model]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
MODEL = "browser-echo"
# How long the page may take to show a change of the copies (a reconcile pass, a load, the 2 s poll).
SETTLE_MS = 60_000


def ask(sdk: openai.OpenAI, text: str) -> str:
    completion = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])
    return completion.choices[0].message.content or ""


class SteadyStream:
    """Requests one after another on a thread until stopped; counts answers and keeps every failure."""

    def __init__(self, sdk: openai.OpenAI):
        self.sdk = sdk
        self.answered = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                answer = ask(self.sdk, f"steady request {n}")
            except Exception as exc:  # every kind of failure counts
                self.failures.append(f"request {n}: {exc!r}")
                continue
            if answer != f"steady request {n}":
                self.failures.append(f"request {n}: answered {answer!r}")
            else:
                self.answered += 1

    def __enter__(self) -> SteadyStream:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


def copies(page) -> list[tuple[str, str]]:
    """(state, revision) of each row of the model page's copies panel, as it shows now."""
    rows = page.locator("#replica-panel tr.replica")
    return [
        (row.locator("td").nth(2).inner_text().strip(), row.locator("td").nth(5).inner_text().strip())
        for row in rows.all()
    ]


def wait_for_copies(page, script: str) -> None:
    """Wait (without reloading: the panel refreshes itself) until `script`, run on the panel's rows, is true."""
    page.wait_for_function(
        "() => { const rows = [...document.querySelectorAll('#replica-panel tr.replica')]"
        ".map(r => ({state: r.cells[2].innerText.trim(), revision: r.cells[5].innerText.trim()}));"
        f" return ({script}); }}",
        timeout=SETTLE_MS,
    )


def success_message(page) -> str:
    success = page.locator("ul.messagelist li.success")
    assert success.count() == 1, page.content()[:3000]
    return success.inner_text()


def test_operator_deploys_edits_unloads_and_loads_a_model_from_the_admin(live, page):
    operator_deploys_edits_unloads_and_loads(page, live.base_url, live.api_key, "live-test-password", "deploy")


def operator_deploys_edits_unloads_and_loads(page, base: str, api_key: str, password: str, shot_prefix: str) -> None:
    """The operator's whole round, in any mode: deploy, answer, edit under load, unload, load."""
    shots = []
    sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0, timeout=120)
    admin_login(page, base, "admin", password)

    # (1) Register an echo model; the form shows the echo engine's option fields only.
    page.goto(f"{base}/admin/models_registry/servedmodel/add/")
    page.fill("#id_name", MODEL)
    assert page.locator("fieldset.engine-echo").is_hidden()
    page.select_option("#id_engine", "echo")
    assert page.locator("fieldset.engine-echo").is_visible()
    assert page.locator("fieldset.engine-llama_cpp").is_hidden() and page.locator("fieldset.engine-vllm").is_hidden()
    page.fill("#id_option_echo_token_delay_ms", "5")
    page.fill("#id_context_length", "512")
    page.fill("#id_aliases", "echo-alias")
    assert page.locator("#id_replicas").input_value() == "1"
    assert page.locator("#id_keep_alive_seconds").input_value() == "5m"
    shots.append(screenshot(page, ARTIFACTS / f"{shot_prefix}-01-form.png"))
    page.click("input[name=_continue]")
    page.wait_for_load_state()
    assert page.locator(".errorlist, .errornote").count() == 0, page.locator(".errorlist, .errornote").all_inner_texts()
    assert "added successfully" in success_message(page)

    # (2) Its page shows the copy loading then ready, by itself; the SDK gets an answer, no restart.
    wait_for_copies(page, "rows.length === 1 && rows[0].state === 'ready'")
    first_revision = copies(page)[0][1]
    assert ask(sdk, "hello from the admin") == "hello from the admin"
    alias = sdk.chat.completions.create(model="echo-alias", messages=[{"role": "user", "content": "by alias"}])
    assert alias.choices[0].message.content == "by alias"
    shots.append(screenshot(page, ARTIFACTS / f"{shot_prefix}-02-ready.png"))

    # (3) Edit its context length while requests keep coming: a rolling reload, and no request fails.
    with SteadyStream(sdk) as stream:
        page.fill("#id_context_length", "1024")
        page.click("input[name=_continue]")
        page.wait_for_load_state()
        assert "changed successfully" in success_message(page)
        wait_for_copies(
            page, f"rows.length === 1 && rows[0].state === 'ready' && rows[0].revision !== {first_revision!r}"
        )
        answered_at_reload = stream.answered
        # A few more after the swap, so the stream spans the old copy, the swap and the new one.
        while stream.answered < answered_at_reload + 5 and not stream.failures:
            page.wait_for_timeout(100)
    assert not stream.failures, stream.failures
    assert stream.answered >= 5
    assert page.locator("#id_context_length").input_value() == "1024"
    shots.append(screenshot(page, ARTIFACTS / f"{shot_prefix}-03-reloaded.png"))

    # (4) Unload from its page: every copy goes, and the model becomes on demand.
    page.click("#deployment-unload")
    page.wait_for_load_state()
    assert "Unloading browser-echo" in success_message(page) and "on demand now" in success_message(page)
    page.wait_for_selector("#replica-panel .replica-none", timeout=SETTLE_MS)
    assert page.locator("#id_replicas").input_value() == "0"
    shots.append(screenshot(page, ARTIFACTS / f"{shot_prefix}-04-unloaded.png"))

    # (5) Load from its page: a copy loads with no request asking, and answers.
    page.click("#deployment-load")
    page.wait_for_load_state()
    assert "Loading browser-echo" in success_message(page)
    wait_for_copies(page, "rows.length === 1 && rows[0].state === 'ready'")
    assert ask(sdk, "loaded again") == "loaded again"
    shots.append(screenshot(page, ARTIFACTS / f"{shot_prefix}-05-loaded.png"))

    # Each action is in the admin log: the model's history lists them.
    assert page.url.endswith("/change/"), page.url
    page.goto(page.url.removesuffix("change/") + "history/")
    actions = [cell.strip() for cell in page.locator("#change-history tbody tr td:nth-child(3)").all_inner_texts()]
    assert actions[-2:] == ["Unload (replicas set to 0: on demand)", "Load"], actions
    assert any("Context length" in action for action in actions), actions

    # The model's recent traffic counts the requests.
    page.goto(f"{base}/admin/models_registry/servedmodel/?q={MODEL}")
    page.get_by_role("link", name=MODEL, exact=True).click()
    page.wait_for_load_state()
    summary = page.locator("#model-traffic-summary").inner_text()
    assert int(summary.split(" requests")[0]) >= stream.answered + 3, summary
    shots.append(screenshot(page, ARTIFACTS / f"{shot_prefix}-06-traffic.png"))

    for path in shots:
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), path
