"""Fixtures for the browser tests: Debian's Chromium driven by Playwright's
sync API against pytest-django's live server.

Without /usr/bin/chromium the tests skip, saying why, except on CI
(CI=true), where a missing browser is a failure: CI installs it first."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_django.live_server_helper import LiveServer

CHROMIUM = "/usr/bin/chromium"
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
