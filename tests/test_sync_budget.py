"""The request budget (batches/sync/budget.py) on its own; across real
worker processes it is tested in test_sync_processes.py."""

from __future__ import annotations

import secrets

import pytest

from batches.sync import budget as budgets


class Waited(Exception):
    pass


def refuse_to_wait(seconds: float) -> None:
    raise Waited(seconds)


@pytest.fixture
def fresh(settings):
    """A budget of its own (the account key names the window)."""
    settings.INKIT_API_TOKEN = f"budget-test-{secrets.token_hex(8)}"
    settings.INKIT_API_BASE_URL = "http://budget.invalid/v1"
    return lambda per_minute: budgets.Budget(per_minute)


def test_requests_past_the_budget_wait(fresh):
    budget = fresh(12)
    for _ in range(12):
        budget.wait(sweep=False, keep_going=refuse_to_wait)
    with pytest.raises(Waited) as waited:
        budget.wait(sweep=False, keep_going=refuse_to_wait)
    assert 0 < waited.value.args[0] <= budgets.LONGEST_WAIT
    assert budget.used() == 12


def test_a_full_sweep_leaves_a_share_for_quick_syncs(fresh):
    budget = fresh(20)
    for _ in range(15):  # 75 % of 20
        budget.wait(sweep=True, keep_going=refuse_to_wait)
    with pytest.raises(Waited):
        budget.wait(sweep=True, keep_going=refuse_to_wait)
    for _ in range(5):  # The quick syncs' room is still there.
        budget.wait(sweep=False, keep_going=refuse_to_wait)
    with pytest.raises(Waited):
        budget.wait(sweep=False, keep_going=refuse_to_wait)


def test_a_429_slows_the_pace_until_inkit_stops_refusing(fresh, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(budgets.time, "monotonic", lambda: clock[0])
    budget = fresh(60)
    budget.refused()
    budget.refused()
    assert budget.pace == 0.25
    budget.wait(sweep=False, keep_going=refuse_to_wait)
    with pytest.raises(Waited) as waited:  # A quarter of 60 a minute: 4 s apart.
        budget.wait(sweep=False, keep_going=refuse_to_wait)
    assert waited.value.args[0] == pytest.approx(4.0)
    clock[0] += budgets.RECOVER_EVERY_SECONDS
    assert budget.pace == 0.5
    clock[0] += budgets.RECOVER_EVERY_SECONDS
    assert budget.pace == 1.0
