"""Real-browser tests: Playwright (sync API) driving Debian's Chromium against pytest-django's live_server.

They skip with a message when Chromium or Playwright is missing, except under CI=true (then they fail)."""

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.helpers import SERVING

# Playwright's sync API runs an event loop in this thread; the test itself still touches the DB.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = os.environ.get("HITL_E2E_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "e2e"


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} not found (apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def browser():
    reason = _missing()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"e2e: {reason}")
        pytest.skip(f"e2e: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def _serial_live_server():
    """On SQLite (an in-memory shared-cache DB in tests), concurrent requests from the browser (layers load
    in parallel with the lease heartbeat) hit "database table is locked". Serve one request at a time
    there; on PostgreSQL the server stays threaded."""
    from django.conf import settings
    from django.core.servers.basehttp import WSGIServer
    from django.test.testcases import LiveServerThread

    class SerialServer(WSGIServer):
        def __init__(self, *args, connections_override=None, **kwargs):
            super().__init__(*args, **kwargs)  # the server thread already uses the test connections

        def finish_request(self, request, client_address):
            with SERVING:  # the test's teardown waits on this before the database is flushed
                super().finish_request(request, client_address)

    if "sqlite" in settings.DATABASES["default"]["ENGINE"]:
        LiveServerThread.server_class = SerialServer


@pytest.fixture
def page(_serial_live_server, browser, live_server):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    context.close()
    with SERVING:  # a request the closed page left in flight finishes before the flush (SQLite: "table
        pass  # is locked" otherwise, and a failed flush leaves every later test's database broken)
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def login():
    def do(page, username: str, password: str = "pw") -> None:
        page.goto("/")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.wait_for_selector("h1:has-text('Projects')")

    return do
