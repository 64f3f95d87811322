"""Headless Debian chromium through Playwright's Python client (never `playwright install`): shared by the
admin browser tests and benchmarks/dashboard_load.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from playwright import sync_api as playwright_sync

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@contextlib.contextmanager
def chromium() -> Iterator[playwright_sync.Browser]:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: ./test.sh installs it as root, or run apt-get install -y chromium")
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def new_page(browser: playwright_sync.Browser) -> Iterator[playwright_sync.Page]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()


def admin_login(page: playwright_sync.Page, base_url: str, username: str, password: str) -> None:
    response = page.goto(f"{base_url}/admin/")
    assert response is not None and response.status == 200, response and response.status
    assert "/admin/login/" in page.url, page.url
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_load_state()
    if page.url.rstrip("/") != f"{base_url}/admin":
        raise AssertionError(f"login as {username} failed: still at {page.url}")


def screenshot(page: playwright_sync.Page, path: Path) -> Path:
    """A full-page PNG at `path`; a stale file from an earlier run is removed first so it cannot pass for this one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
