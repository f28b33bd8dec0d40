"""python manage.py check_stuck, on the real clock, against a local receiver."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from batches.models import Alert, AlertDelivery, SyncRun

from .test_alerts import HOOK_PATH
from .test_stuck import make_batch, synced

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("alert_settings")]


@pytest.fixture
def webhook(httpserver, settings):
    settings.ALERT_WEBHOOK_URL = httpserver.url_for(HOOK_PATH)
    return httpserver


def check_stuck(*args: str) -> str:
    out = StringIO()
    call_command("check_stuck", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def stuck_batch():
    """A batch without progress for two hours, and a sync a minute ago."""
    now = timezone.now()
    make_batch("rb_stuck", name="Invoices March", seen_at=now - timedelta(hours=2))
    return synced(now - timedelta(minutes=1))


def test_it_reports_nothing_to_judge_before_any_sync():
    output = check_stuck()
    assert "No finished sync yet" in output
    assert "Became stuck: none" in output
    assert "No alert channel is configured" in output
    assert not Alert.objects.exists()


def test_it_declares_alerts_and_reports_what_it_sent(stuck_batch, webhook):
    webhook.expect_request(HOOK_PATH).respond_with_data("ok")

    output = check_stuck()

    assert f"Judged the data of sync #{stuck_batch.pk}" in output
    assert "Became stuck: 1 (rb_stuck)" in output
    alert = Alert.objects.get()
    assert f"Alert #{alert.pk}: Stuck: Invoices March (rb_stuck), no progress for 2 h" in output
    assert f"alert #{alert.pk} webhook: sent (attempt 1) HTTP 200" in output
    assert HOOK_PATH not in output

    again = check_stuck()
    assert "Became stuck: none" in again and "Still stuck, already alerted: 1" in again
    assert len(webhook.log) == 1


def test_it_exits_non_zero_when_a_delivery_fails(stuck_batch, webhook):
    webhook.expect_request(HOOK_PATH).respond_with_data("down", status=503)

    with pytest.raises(CommandError, match="1 alert delivery failed") as failure:
        check_stuck()

    assert failure.value.returncode == 1
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.error) == (AlertDelivery.Status.PENDING, "HTTP 503: down")
    # The transition is recorded all the same, and not re-alerted next time.
    assert Alert.objects.count() == 1


def test_without_delivering_it_records_and_leaves_sending_to_the_task(stuck_batch, webhook):
    output = check_stuck("--no-deliver")
    assert "Became stuck: 1 (rb_stuck)" in output
    assert AlertDelivery.objects.get().status == AlertDelivery.Status.PENDING
    assert len(webhook.log) == 0


def test_it_refuses_to_judge_after_a_failed_sync(stuck_batch):
    synced(timezone.now(), SyncRun.Outcome.FAILED)
    output = check_stuck()
    assert "no batch declared stuck until a sync succeeds" in output
    assert "Became stuck: none" in output


def test_it_says_when_syncing_is_stale():
    make_batch("rb_old", seen_at=timezone.now() - timedelta(hours=5))
    synced(timezone.now() - timedelta(hours=3))
    output = check_stuck()
    assert "Syncing is stale: no successful sync since" in output
    assert "Syncing: stale" in output
    assert "Alert #" in output and "Syncing stale: no successful sync for 2 h 59 min" in output
