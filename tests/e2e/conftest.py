"""Real-browser tests: Playwright (sync API) driving Debian's Chromium against pytest-django's live_server.

They skip with a message when Chromium or Playwright is missing, except under CI=true (then they fail)."""

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.helpers import ACCEPTING, SERVING, unexpected, watch

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


@pytest.fixture(scope="session", autouse=True)
def _serial_live_server():
    """On SQLite (an in-memory shared-cache DB in tests), concurrent requests from the browser (layers load
    in parallel with the lease heartbeat) hit "database table is locked". Serve one request at a time
    there; on PostgreSQL the server stays threaded. Autouse and session-wide so that it is in place before
    the (session-wide) live server starts, whichever test starts it."""
    from django.conf import settings
    from django.core.servers.basehttp import WSGIServer
    from django.test.testcases import LiveServerThread

    class SerialServer(WSGIServer):
        def __init__(self, *args, connections_override=None, **kwargs):
            super().__init__(*args, **kwargs)  # the server thread already uses the test connections

        def finish_request(self, request, client_address):
            with SERVING:  # the test's teardown waits on this before the database is flushed
                if ACCEPTING.is_set():
                    super().finish_request(request, client_address)

    if "sqlite" in settings.DATABASES["default"]["ENGINE"]:
        LiveServerThread.server_class = SerialServer
        return SerialServer
    return None


@pytest.fixture(autouse=True)
def _server_gate(request):
    """The serial live server answers requests only while a test runs. A closed page can leave
    connections in the server's accept queue; answered after the test, they would use the database while
    it is flushed (SQLite: "table is locked", and the flush fails, leaving the next tests a broken
    database). Set up after the database fixture and before the page, so torn down after the page closes
    and before the flush."""
    if "live_server" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("transactional_db")
    serial = request.getfixturevalue("_serial_live_server")
    thread = request.getfixturevalue("live_server").thread
    assert serial is None or type(thread.httpd) is serial, f"the live server is {type(thread.httpd).__name__}"
    _connections_are_clean(thread.connections_override.values())
    ACCEPTING.set()
    yield
    with SERVING:  # no request is being answered, and none will be until the next test
        ACCEPTING.clear()


def _connections_are_clean(wrappers) -> None:
    """On SQLite the live server keeps one connection object for the whole session. Left inside a
    transaction (by requests interleaving on it, which the serial server rules out), it would hold every
    on_commit callback, so no task would run again: fail at once instead of at each later test's timeout."""
    for conn in wrappers:
        if conn.in_atomic_block or conn.run_on_commit or not conn.get_autocommit():
            pytest.fail(f"the live server's {conn.alias!r} connection was left inside a transaction")


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    watch(page)
    yield page
    context.close()
    problems = unexpected(page)
    assert not problems, f"errors in the page: {problems}"


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
