"""Every id has a page (batches/paths.py): the list's link, the detail page,
its back link, the CSV and the alert's link reach it, whatever the id holds,
and no id's address opens another page."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import timedelta
from urllib.parse import unquote

import pytest
from django.urls import resolve, reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batches.models import Batch
from batches.paths import batch_path, id_from_url, id_to_url

from .factories import make_batch, stuck_alert_payload
from .html import text

# Each character the issue names, alone, doubled and inside other text, and
# the dot segments a browser would resolve.
ODD_IDS = [
    "a/b",
    "/",
    "//",
    "/lead",
    "trail/",
    "a/../b",
    "../..",
    "./x",
    ".",
    "..",
    "...",
    ".%2e",
    "%2e",
    "%2E%2E",
    "#frag",
    "q?x=1",
    "100%",
    "a&b=c",
    "a+b",
    "a b",
    " spaced ",
    "~",
    "~/x",
    "~7E",
    "back\\slash",
    "日本/語 ✓",
    "x" * 100,
    "/" * 100,
]
PLAIN = "rb_CDh2Dg57evYHnBp7TbxJt"


def normalised_by_a_browser(path: str) -> str:
    """The path as a WHATWG URL parser leaves it: dot segments (".", "..",
    and their %2e spellings in any case) dropped or resolved."""
    segments: list[str] = []
    parts = path.split("/")[1:]
    for index, segment in enumerate(parts):
        last = index == len(parts) - 1
        lowered = segment.lower().replace("%2e", ".")
        if lowered == "..":
            if segments:
                segments.pop()
            if last:
                segments.append("")
        elif lowered == ".":
            if last:
                segments.append("")
        else:
            segments.append(segment)
    return "/" + "/".join(segments)


def reaches(path: str) -> str:
    """The id the server's URLconf finds at this path, as it arrives (a
    browser normalises it, the server percent-decodes it)."""
    arrived = unquote(normalised_by_a_browser(path.split("?")[0]))
    match = resolve(arrived)
    assert match.url_name == "batch-detail", path
    return match.kwargs["batch_id"]


ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=100) | st.sampled_from(
    ODD_IDS
)
# What a database stores: PostgreSQL takes no NUL in text (the sync sets
# such a batch aside).
stored_ids = ids.filter(lambda batch_id: "\0" not in batch_id)


@given(batch_id=ids)
@settings(max_examples=400, deadline=None)
def test_any_id_has_one_path_that_reaches_it_and_survives_a_browser(batch_id):
    path = batch_path(batch_id)
    assert path == reverse("batch-detail", args=[batch_id])
    assert normalised_by_a_browser(path) == path
    assert "\\" not in path and "#" not in path and "?" not in path
    assert id_from_url(id_to_url(batch_id)) == batch_id
    assert reaches(path) == batch_id


@pytest.mark.parametrize("batch_id", [PLAIN, "fb_1", "a b", "#x", "a&b", "100%", "日本", "~"])
def test_an_id_without_a_slash_keeps_its_address(batch_id):
    assert id_to_url(batch_id) == batch_id
    assert unquote(batch_path(batch_id)) == f"/batches/{batch_id}/"


@pytest.mark.parametrize(
    ("batch_id", "path"),
    [
        ("a/b", "/batches/~/a~2Fb/"),
        (".", "/batches/~/~2E/"),
        ("..", "/batches/~/~2E~2E/"),
        ("~/x", "/batches/~/~7E~2Fx/"),
        ("a/../b", "/batches/~/a~2F..~2Fb/"),
    ],
)
def test_ids_a_path_cannot_carry_are_escaped_readably(batch_id, path):
    assert batch_path(batch_id) == path


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/batches/~/a~2/", "/batches/~/a~41/", "/batches/~/~/", "/batches/a/b/"]
)
def test_a_path_no_id_has_is_not_found(ops_client, path):
    make_batch(id="a/b")
    make_batch(id="a")
    assert ops_client.get(path).status_code == 404


@pytest.mark.django_db
def test_old_links_to_ordinary_ids_still_open_them(ops_client):
    make_batch(id="a&b+c d", name="Ampersand")
    for path in ("/batches/a%26b%2Bc%20d/", "/batches/a&b+c%20d/"):
        assert "Ampersand" in text(ops_client.get(path))


# Through the pages -------------------------------------------------------------------


@pytest.fixture
def odd_batches(db) -> list[Batch]:
    now = timezone.now()
    return [
        make_batch(id=batch_id, name=f"Batch {index}", created_at=now - timedelta(minutes=index))
        for index, batch_id in enumerate([PLAIN, *ODD_IDS])
    ]


def list_links(response) -> dict[str, str]:
    """The list's row links: batch id → href (each row's link, id="open-<id>")."""
    found = re.findall(r'<a id="open-([^"]*)" class="batch-link[^"]*" href="([^"]+)">', response.content.decode())
    return {html.unescape(shown): html.unescape(href) for shown, href in found}


def test_every_id_gets_a_list_link_a_page_and_a_back_link_that_reach_it(ops_client, odd_batches):
    response = ops_client.get("/", {"page_size": 100, "status": "Completed"})
    links = list_links(response)
    assert set(links) == {batch.id for batch in odd_batches}
    for batch in odd_batches:
        link = links[batch.id]
        assert link == f"{batch.get_absolute_url()}?status=Completed&page_size=100"
        assert reaches(link) == batch.id
        page = ops_client.get(
            normalised_by_a_browser(link.split("?")[0]) + "?" + link.split("?")[1]
        )
        assert page.status_code == 200, batch.id
        shown = page.content.decode()
        assert f"<title>{html.escape(batch.name)} · Batchwatch</title>" in shown
        assert f'<code class="batch-id">{html.escape(batch.id)}</code>' in shown
        back = html.unescape(re.search(r'id="back" href="([^"]+)"', shown).group(1))
        assert back == "/?status=Completed&page_size=100"


def test_the_csv_carries_every_id_as_it_is(ops_client, odd_batches):
    response = ops_client.get("/export.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert sorted(row["id"] for row in rows) == sorted(batch.id for batch in odd_batches)


@pytest.mark.usefixtures("alert_settings")
def test_every_ids_alert_link_reaches_its_page(ops_client, odd_batches, settings):
    settings.PUBLIC_URL = "https://batchwatch.example.com"
    now = timezone.now()
    payload = stuck_alert_payload(odd_batches, now)
    assert len(payload["batches"]) == len(odd_batches)
    for item in payload["batches"]:
        path = item["url"].removeprefix(settings.PUBLIC_URL)
        assert reaches(path) == item["id"]
        shown = ops_client.get(normalised_by_a_browser(path)).content.decode()
        assert f'<code class="batch-id">{html.escape(item["id"])}</code>' in shown


@given(batch_id=stored_ids)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@pytest.mark.django_db
def test_any_stored_id_opens_its_own_page(ops_client, batch_id):
    Batch.objects.filter(pk=batch_id).delete()
    make_batch(id=batch_id, name="The one")
    response = ops_client.get(normalised_by_a_browser(batch_path(batch_id)))
    assert response.status_code == 200
    assert f'<code class="batch-id">{html.escape(batch_id)}</code>' in response.content.decode()
