"""/batches/<id>/: every field, destinations, the timeline, the raw JSON."""

from __future__ import annotations

import html as html_module
import re
from datetime import UTC, timedelta

import pytest
from django.utils import timezone

from batches.models import Batch, BatchEvent, SyncRun
from batches.stuck import evaluate_stuck
from batches.sync import mark_gone

from .factories import make_batch, make_event
from .html import text

pytestmark = pytest.mark.django_db


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
    for label, value in [("Documents", "40"), ("Deliveries", "80"), ("Completed", "70"), ("Failed", "4"), ("In progress", "6")]:
        assert f"{label} {value}" in page
    html = response.content.decode()
    destinations = re.search(r'<section class="panel" aria-labelledby="destinations-title">.*?</section>', html, re.DOTALL).group(0)
    rows = re.findall(r'<th scope="row">([^<]+)</th>', destinations)
    assert rows == ["salesforce", "sepire"]
    assert 'aria-label="salesforce: 30 completed, 4 failed, 6 in progress of 40"' in destinations
    # sepire came without Inkit's undocumented status: shown as a dash.
    assert "Inkit sent no status for this destination" in destinations
    assert batch.raw["id"] in html


def timeline(response) -> list[str]:
    """Each timeline entry's text as read, newest first."""
    html = response.content.decode()
    entries = re.findall(r'<li class="event event-[^"]*">(.*?)</li>\s*(?=<li class="event|</ol>)', html, re.DOTALL)
    return [html_module.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", entry))).strip() for entry in entries]


def test_the_timeline_lists_changes_newest_first(ops_client):
    # The shapes batches.sync writes for CHANGED: [old, new] pairs, per destination too.
    batch = make_batch(id="rb_timeline", status="Completed")
    make_event(batch, ago=timedelta(hours=2), changes={"completed": [0, 4], "destinations": {"inkit_storage": {"completed": [0, 4]}, "sepire": "removed"}})
    make_event(batch, ago=timedelta(minutes=5), changes={"status": ["In Progress", "Completed"]})
    entries = timeline(ops_client.get("/batches/rb_timeline/"))
    assert "Changed" in entries[0] and "status: In Progress → Completed" in entries[0]
    assert "Changed" in entries[1] and "completed: 0 → 4" in entries[1]
    assert "inkit_storage: completed 0 → 4" in entries[1] and "sepire: removed" in entries[1]
    assert entries[2].endswith("First seen")


@pytest.fixture
def stuck_clock(settings):
    """STUCK_AFTER_MINUTES of 60, no alert channel, and a start on the minute
    three hours ago (so times read exactly)."""
    settings.STUCK_AFTER_MINUTES = 60
    settings.SYNC_STALE_AFTER_MINUTES = 15
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = ""
    return (timezone.now() - timedelta(hours=3)).replace(second=0, microsecond=0)


def evaluate_at(now):
    """A successful sync that ended at `now`, then the stuck evaluation the
    sync runs after it: the real code that writes the transitions."""
    run = SyncRun.objects.create(
        started_at=now - timedelta(seconds=5), finished_at=now, outcome=SyncRun.Outcome.SUCCEEDED, complete=True
    )
    return evaluate_stuck(now=now, sync_run=run, deliver=False)


def test_stuck_transitions_read_as_sentences(ops_client, stuck_clock):
    t0 = stuck_clock
    hostile = '<script>alert("x")</script> Payroll'
    make_batch(id="rb_stuckline", name=hostile, status="In Progress", destinations={"inkit_storage": (2, 0, 8)}, first_seen_at=t0)

    # Declared stuck 1 h 10 min after its last progress...
    assert evaluate_at(t0 + timedelta(minutes=70, seconds=5)).stuck == ["rb_stuckline"]
    # ...progress 2 h 5 min after it: recovered.
    Batch.objects.filter(pk="rb_stuckline").update(completed=3, in_progress=7, last_progress_at=t0 + timedelta(minutes=125))
    assert evaluate_at(t0 + timedelta(minutes=126)).recovered == ["rb_stuckline"]

    response = ops_client.get("/batches/rb_stuckline/")
    entries = timeline(response)
    since = t0.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    assert entries[0].startswith((t0 + timedelta(minutes=126)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    assert "Recovered after 2 h 5 min without progress" in entries[0]
    assert f"Became stuck: no progress since {since} UTC, for 1 h 10 min" in entries[1]
    assert entries[2].endswith("First seen")
    # Nothing of the transitions' own data is shown as an old → new pair.
    assert "→" not in " ".join(entries) and "stuck_since" not in " ".join(entries)
    # The markup in the name stays text.
    html = response.content.decode()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Payroll" in html


def test_a_stuck_batch_that_finishes_says_how(ops_client, stuck_clock):
    t0 = stuck_clock
    make_batch(id="rb_done_late", status="In Progress", destinations={"inkit_storage": (2, 0, 8)}, first_seen_at=t0)
    make_batch(id="rb_vanished", status="In Progress", destinations={"inkit_storage": (2, 0, 8)}, first_seen_at=t0)
    evaluate_at(t0 + timedelta(minutes=61))

    # One leaves In Progress (a status Inkit may invent, markup and all), the
    # other stops being listed: both finish their stuck period.
    Batch.objects.filter(pk="rb_done_late").update(status="<i>Archived</i>", last_progress_at=t0 + timedelta(minutes=95))
    mark_gone(["rb_vanished"], t0 + timedelta(minutes=100))
    assert sorted(evaluate_at(t0 + timedelta(minutes=101)).finished) == ["rb_done_late", "rb_vanished"]

    response = ops_client.get("/batches/rb_done_late/")
    entries = timeline(response)
    assert "Finished: status <i>Archived</i>, after 1 h 35 min without progress" in entries[0]
    assert "Became stuck: no progress since" in entries[1] and "for 1 h 1 min" in entries[1]
    html = response.content.decode()
    assert "<i>Archived</i>" not in html and "status &lt;i&gt;Archived&lt;/i&gt;" in html

    entries = timeline(ops_client.get("/batches/rb_vanished/"))
    assert "Finished: no longer listed by Inkit, after 1 h 40 min without progress" in entries[0]
    assert entries[1].startswith((t0 + timedelta(minutes=100)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    assert "No longer listed" in entries[1]
    assert "Became stuck" in entries[2]


def test_a_batch_listed_again_says_so_with_what_changed(ops_client):
    # The shape batches.sync writes for RETURNED: like CHANGED, possibly empty.
    batch = make_batch(id="rb_back_again", status="Completed")
    make_event(batch, kind=BatchEvent.Kind.GONE, ago=timedelta(hours=2))
    make_event(batch, kind=BatchEvent.Kind.RETURNED, ago=timedelta(hours=1))
    make_event(batch, kind=BatchEvent.Kind.GONE, ago=timedelta(minutes=30))
    make_event(batch, kind=BatchEvent.Kind.RETURNED, ago=timedelta(minutes=5), changes={"status": ["In Progress", "Completed"]})
    entries = timeline(ops_client.get("/batches/rb_back_again/"))
    assert "Listed again" in entries[0] and "status: In Progress → Completed" in entries[0]
    assert "No longer listed" in entries[1] and "→" not in entries[1]
    assert "Listed again" in entries[2] and "→" not in entries[2]
    assert "No longer listed" in entries[3]


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
