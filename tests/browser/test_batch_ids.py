"""Odd batch ids in a real browser, which normalises URLs as the WHATWG
standard says ('.' and '..' segments, %2e included): each id's list link,
detail page, back link, CSV row and alert link reach that batch and no
other (batches/paths.py)."""

from __future__ import annotations

import csv
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from batches.models import Batch
from tests.factories import finished_sync, make_batch, stuck_alert_payload
from tests.test_batch_paths import ODD_IDS

from .conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The list's link text is what a locator finds, and a browser trims it.
IDS = [batch_id for batch_id in ODD_IDS if batch_id == batch_id.strip()]


@pytest.fixture
def odd_batches() -> list[Batch]:
    now = timezone.now()
    made = [
        make_batch(id=batch_id, name=f"Odd {n}", created_at=now - timedelta(minutes=n))
        for n, batch_id in enumerate(IDS)
    ]
    finished_sync(ago=timedelta(seconds=20))
    return made


def shown_id(page) -> str:
    return page.locator("code.batch-id").inner_text()


def test_every_odd_id_is_a_link_a_page_and_a_way_back(new_page, ops_user, odd_batches):
    page = new_page()
    sign_in(page, "ops", "ops-password-1", then="/?status=Completed&sort=name")
    for batch in odd_batches:
        # Each row shows its id under the name, which is the link.
        row = page.locator("table.batches tbody tr").filter(
            has=page.locator("span.batch-id", has_text=re.compile(f"^{re.escape(batch.id)}$"))
        )
        assert row.count() == 1, batch.id
        row.locator("a.batch-link").click()
        page.wait_for_selector("code.batch-id")
        # The browser kept the path as given: nothing resolved or dropped.
        assert urlsplit(page.url).path == batch.get_absolute_url(), batch.id
        assert shown_id(page) == batch.id
        assert page.title() == f"{batch.name} · Batchwatch"
        page.click("#back")
        page.wait_for_selector("table.batches")
        assert urlsplit(page.url).query == "status=Completed&sort=name"


def test_the_csv_download_carries_every_odd_id(new_page, ops_user, odd_batches, tmp_path):
    page = new_page()
    sign_in(page, "ops", "ops-password-1")
    with page.expect_download() as download:
        page.click("#export")
    path = tmp_path / "batches.csv"
    download.value.save_as(path)
    with path.open(newline="", encoding="utf-8") as file:
        assert sorted(row["id"] for row in csv.DictReader(file)) == sorted(IDS)


@pytest.mark.usefixtures("alert_settings")
def test_every_odd_ids_alert_link_opens_its_page(
    new_page, ops_user, odd_batches, live_server, settings
):
    settings.PUBLIC_URL = live_server.url
    now = timezone.now()
    payload = stuck_alert_payload(odd_batches, now)
    page = new_page()
    sign_in(page, "ops", "ops-password-1")
    for item in payload["batches"]:
        page.goto(item["url"])
        assert shown_id(page) == item["id"]
