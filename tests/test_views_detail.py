"""/batches/<id>/: every field, destinations, the timeline, the raw JSON."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from batches.models import BatchEvent

from .factories import make_batch, make_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops_client(client, ops_user):
    client.force_login(ops_user)
    return client


def text(response) -> str:
    plain = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", plain)


def test_it_shows_every_field_and_the_destinations(ops_client):
    batch = make_batch(
        id="rb_detail1", name="Payroll stubs #12", status="In Progress", total=40,
        destinations={"salesforce": (30, 4, 6), "sepire": (40, 0, 0)},
        destination_status={"sepire": None},
    )
    response = ops_client.get("/batches/rb_detail1/")
    assert response.status_code == 200
    page = text(response)
    assert "Payroll stubs #12" in page and "rb_detail1" in page and "In Progress" in page
    for label, value in [("Total documents", "40"), ("Completed", "70"), ("Failed", "4"), ("In progress", "6")]:
        assert f"{label} {value}" in page
    html = response.content.decode()
    destinations = re.search(r'<section class="panel" aria-labelledby="destinations-title">.*?</section>', html, re.DOTALL).group(0)
    rows = re.findall(r'<th scope="row">([^<]+)</th>', destinations)
    assert rows == ["salesforce", "sepire"]
    assert 'aria-label="salesforce: 30 completed, 4 failed, 6 in progress of 40"' in destinations
    # sepire came without Inkit's undocumented status: shown as a dash.
    assert "Inkit sent no status for this destination" in destinations
    assert batch.raw["id"] in html


def test_the_timeline_lists_changes_newest_first(ops_client):
    batch = make_batch(id="rb_timeline", status="Completed")
    make_event(batch, ago=timedelta(hours=2), changes={"completed": [0, 4], "destinations": {"inkit_storage": {"completed": [0, 4]}}})
    make_event(batch, kind=BatchEvent.Kind.STUCK, ago=timedelta(hours=1))
    make_event(batch, ago=timedelta(minutes=5), changes={"status": ["In Progress", "Completed"]})
    page = text(ops_client.get("/batches/rb_timeline/"))
    changed, stuck, older = page.index("status: In Progress → Completed"), page.index("Became stuck"), page.index("completed: 0 → 4")
    assert changed < stuck < older
    assert "inkit_storage : completed 0 → 4" in page
    assert "First seen" in page


def test_the_raw_json_is_shown_escaped(ops_client):
    make_batch(id="rb_rawjson", name='<img src=x onerror="alert(1)"> {{ 7*7 }}')
    html = ops_client.get("/batches/rb_rawjson/").content.decode()
    assert '<img src=x onerror="alert(1)">' not in html
    raw = re.search(r'<pre class="raw-json"[^>]*>(.*?)</pre>', html, re.DOTALL).group(1)
    assert "&quot;name&quot;: &quot;&lt;img src=x onerror=\\&quot;alert(1)\\&quot;&gt; {{ 7*7 }}&quot;" in raw
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; {{ 7*7 }}" in html


def test_the_back_link_keeps_the_lists_filters(ops_client):
    make_batch(id="rb_back")
    html = ops_client.get("/batches/rb_back/?status=In+Progress&sort=-failed&page=3&bogus=1").content.decode()
    assert '<a id="back" href="/?status=In+Progress&amp;sort=-failed&amp;page=3">' in html
    html = ops_client.get("/batches/rb_back/?created_after=garbage").content.decode()
    assert '<a id="back" href="/">' in html


def test_the_list_links_rows_to_their_detail_with_the_filters(ops_client):
    make_batch(id="rb_linked", status="Completed")
    html = ops_client.get("/?status=Completed").content.decode()
    assert 'href="/batches/rb_linked/?status=Completed"' in html


def test_a_stuck_batch_says_so(ops_client, settings):
    settings.STUCK_AFTER_MINUTES = 30
    make_batch(id="rb_stuck_detail", status="In Progress", destinations={}, last_progress_at=timezone.now() - timedelta(minutes=95))
    page = text(ops_client.get("/batches/rb_stuck_detail/"))
    assert "stuck for 1 h 35 min" in page
    assert "longer than the 30 min that counts as stuck" in page


def test_a_gone_batch_says_inkit_no_longer_lists_it(ops_client):
    make_batch(id="rb_gone_detail", gone_at=timezone.now() - timedelta(hours=1))
    assert "Inkit no longer lists this batch" in text(ops_client.get("/batches/rb_gone_detail/"))


def test_an_unknown_id_is_a_404_page(ops_client):
    response = ops_client.get("/batches/rb_nope/")
    assert response.status_code == 404
    page = text(response)
    assert "Not found" in page and "Go to the batch list" in page


def test_it_needs_a_login(client):
    make_batch(id="rb_private")
    response = client.get("/batches/rb_private/")
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")
