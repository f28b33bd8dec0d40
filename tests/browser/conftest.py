"""Fixtures for the browser tests: Debian's Chromium driven by Playwright's
sync API against pytest-django's live server.

Without /usr/bin/chromium the tests skip, saying why, except on CI
(CI=true), where a missing browser is a failure: CI installs it first."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_django.live_server_helper import LiveServer

CHROMIUM = "/usr/bin/chromium"
# axe-core from the npm registry, installed by .ci/run into node_modules/
# (git-ignored): `npm install --no-save axe-core@4.14.1` does it by hand.
AXE_VERSION = "4.14.1"
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core"
# Git-ignored; screenshots land here for a person to look at.
RESULTS = Path(__file__).resolve().parents[2] / "test-results"


@pytest.fixture(scope="session")
def live_server(request, collected_static) -> Iterator[LiveServer]:
    """pytest-django's live server, serving static files the way production
    does: WhiteNoise, from the collected and hashed files. (pytest-django's
    own serves them through the staticfiles finders, which know no hashed
    names, so with DEBUG off the page would have no stylesheet or htmx.)"""
    address = (
        request.config.getvalue("liveserver")
        or os.getenv("DJANGO_LIVE_TEST_SERVER_ADDRESS")
        or "localhost"
    )
    server = LiveServer(address, start=False)
    server.thread.static_handler = _app_itself
    server.start()
    yield server
    server.stop()


def _app_itself(handler):
    return handler


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser, live_server):
    """Opens pages in fresh browser contexts (own cookies, own colour
    scheme); closes them after the test."""
    contexts = []

    def open_page(*, color_scheme: str = "light", javascript: bool = True, **options):
        options.setdefault("viewport", {"width": 1440, "height": 900})
        context = browser.new_context(
            base_url=live_server.url,
            color_scheme=color_scheme,
            java_script_enabled=javascript,
            accept_downloads=True,
            **options,
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def results_dir() -> Path:
    RESULTS.mkdir(exist_ok=True)
    return RESULTS


def sign_in(page, username: str, password: str, then: str = "/") -> None:
    """Sign in through the form, as a person would, landing on `then`."""
    page.goto(then)
    page.wait_for_url("**/login/**")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)


def _missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's script, to evaluate in a page: injected by the test
    through the DevTools protocol, which the page's CSP does not govern (the
    app never serves it)."""
    package = AXE / "package.json"
    if not package.exists():
        _missing(f"axe-core is missing: npm install --no-save axe-core@{AXE_VERSION} (.ci/run does it)")
    version = json.loads(package.read_text())["version"]
    if version != AXE_VERSION:
        _missing(f"axe-core {version} is installed, the tests pin {AXE_VERSION}")
    return (AXE / "axe.min.js").read_text()


# Recorded in every page from before its first script runs: a CSP violation
# event cannot be missed however early it happens.
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline") + " at "
    + (event.sourceFile || "?") + ":" + event.lineNumber + " " + (event.sample || ""));
});
"""


@pytest.fixture
def watched(new_page):
    """Like new_page, but every page records console errors and CSP
    violations; page.problems() returns them (empty when all is well).
    Chromium reports every violation on the console too, so pages left
    behind are covered; the securitypolicyviolation events are the page's
    own, read in it."""

    def open_page(**options):
        page = new_page(**options)
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
        page.add_init_script(CSP_WATCH)

        def problems(allow: tuple[str, ...] = ()) -> list[str]:
            violations = page.evaluate("window.__cspViolations || []")
            found = [f"CSP: {v}" for v in violations]
            found += [e for e in errors if not any(a in e for a in allow)]
            return found

        page.problems = problems
        return page

    return open_page


def run_axe(page, axe_source: str) -> list[str]:
    """axe-core's serious and critical violations on the page as it is, as
    "rule: target" lines. Fails if axe did not really run."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source)
    results = page.evaluate(
        "async () => { const r = await axe.run(document, {resultTypes: ['violations']});"
        " return {version: r.testEngine.version, passes: r.passes.length,"
        " violations: r.violations.map(v => ({id: v.id, impact: v.impact,"
        " targets: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' ' + (n.failureSummary || '').split('\\n')[1])}))}; }"
    )
    assert results["version"] == AXE_VERSION and results["passes"] > 10, results
    return [
        f"{v['id']} ({v['impact']}): {'; '.join(v['targets'])}"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def horizontal_overflow(page, selector: str = "") -> int:
    """How many pixels the document (or an element) scrolls sideways."""
    if selector:
        return page.evaluate(
            "(s) => { const e = document.querySelector(s); return e ? e.scrollWidth - e.clientWidth : 0; }", selector
        )
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
