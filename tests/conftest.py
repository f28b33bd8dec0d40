"""Shared fixtures: a running Inkit simulator, an Inkit client that does not
sleep between retries, and ready-made users."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batches.inkit import InkitClient
from batches.simulator import InkitSimulator

TOKEN = "simulator-token"


def no_sleep(seconds: float) -> None:
    """Stand-in for time.sleep so retry tests run at once."""


@pytest.fixture
def simulator(settings) -> Iterator[InkitSimulator]:
    """A frozen simulator (it changes only when a test says so), served over
    real HTTP, with the app's settings pointed at it."""
    sim = InkitSimulator(batches=120, seed=7, token=TOKEN, max_page_size=25)
    with sim.serve() as server:
        settings.INKIT_API_BASE_URL = server.url
        settings.INKIT_API_TOKEN = TOKEN
        settings.INKIT_PAGE_SIZE = 25
        yield sim


@pytest.fixture
def inkit(simulator, settings) -> Iterator[InkitClient]:
    """A client for the simulator that skips backoff sleeps."""
    client = InkitClient(
        settings.INKIT_API_BASE_URL, TOKEN, sleep=no_sleep, read_timeout=5, pool_size=8
    )
    yield client
    client.close()
