"""Browser tests: the system's headless Chromium (Debian's `chromium`), driven by Playwright's sync API.

No browser is ever downloaded (`playwright install` is never run): Playwright drives
/usr/bin/chromium, which `make test` installs (the Makefile's `chromium` target). Where it is
missing, the tests skip and say why. Screenshots of each step go to artifacts/browser/.
"""

import os
import re
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
LAPTOP = {"width": 1366, "height": 768}
PASSWORD = "correct horse battery staple"  # tests.factories.UserFactory's


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_failed = report.failed  # read by open_browser, to keep what the pages showed
    return report


@pytest.fixture(scope="session")
def chromium():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: run `make test` as root (it installs Debian's chromium) "
                    "or `apt-get install chromium`.")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    # Playwright's sync API keeps an asyncio event loop running in this thread, so Django's
    # async-safety check would refuse the test's own database calls. Nothing here is async: the
    # live server answers from its own thread. Allowed only while the browser runs.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def browser_settings(settings):
    # The live server speaks plain HTTP: cookies marked Secure would not come back to it.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    return settings


@pytest.fixture
def open_browser(request, chromium, live_server, browser_settings):
    """open_browser() -> a new page (own cookies) at laptop size on the live server.

    When the test fails, each page's last state is saved as artifacts/browser/<test>-FAILED-<n>.png.
    """
    contexts = []

    def make():
        context = chromium.new_context(viewport=LAPTOP, base_url=live_server.url)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for index, context in enumerate(contexts):
        if getattr(request.node, "call_failed", False):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for page in context.pages:
                page.screenshot(path=str(ARTIFACTS / f"{_file_name(request.node.name)}-FAILED-{index}.png"),
                                full_page=True)
        context.close()


@pytest.fixture
def shot(request):
    """shot(page, "step name") saves a full-page screenshot as artifacts/browser/<test>-<nn>-<step>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1, 100))
    test_name = _file_name(request.node.name)
    for old in ARTIFACTS.glob(f"{test_name}-*.png"):
        old.unlink()  # a run's screenshots are its own: none left over from an earlier run

    def save(page, step: str) -> Path:
        path = ARTIFACTS / f"{test_name}-{next(counter):02d}-{re.sub(r'[^a-z0-9]+', '-', step.lower())}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


def _file_name(test_name: str) -> str:
    return re.sub(r"\W+", "_", test_name)


def log_in(page, username: str) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#today")
