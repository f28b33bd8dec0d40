"""/export.csv: the whole filtered, sorted set, streamed, formulas neutralised."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches.models import BatchQuerySet
from dashboard import export

from .factories import make_batch

pytestmark = pytest.mark.django_db


def read_csv(response) -> list[dict[str, str]]:
    assert isinstance(response, StreamingHttpResponse)
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


@pytest.fixture
def batches():
    now = timezone.now()
    make_batch(id="rb_a", name="Alpha", status="Completed", total=4, created_at=now - timedelta(hours=3),
               destinations={"salesforce": (4, 0, 0)})
    make_batch(id="rb_b", name=None, status="In Progress", total=6, created_at=now - timedelta(hours=2),
               destinations={"salesforce": (1, 2, 3), "sepire": (6, 0, 0)})
    make_batch(id="rb_c", name="Gamma", status="In Progress", total=2, created_at=now - timedelta(hours=1),
               destinations={})


def test_it_streams_one_row_per_batch_with_per_destination_columns(ops_client, batches):
    response = ops_client.get("/export.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="batches-')
    rows = read_csv(response)
    assert [row["id"] for row in rows] == ["rb_c", "rb_b", "rb_a"]
    b = rows[1]
    assert (b["name"], b["status"], b["total"], b["completed"], b["failed"], b["in_progress"]) == ("", "In Progress", "6", "7", "2", "3")
    assert (b["salesforce_count"], b["salesforce_completed"], b["salesforce_failed"], b["salesforce_in_progress"], b["salesforce_status"]) == ("6", "1", "2", "3", "in_progress")
    assert (b["sepire_count"], b["sepire_status"]) == ("6", "completed")
    assert rows[0]["salesforce_count"] == "" and rows[0]["sepire_count"] == ""
    assert rows[2]["created_at"].endswith("Z")


def test_it_takes_the_lists_filters_and_sort_but_no_paging(ops_client, batches):
    rows = read_csv(ops_client.get("/export.csv?status=In+Progress&sort=total&page=2&page_size=25"))
    assert [row["id"] for row in rows] == ["rb_c", "rb_b"]
    rows = read_csv(ops_client.get("/export.csv?destination=sepire"))
    assert [row["id"] for row in rows] == ["rb_b"]


def test_the_list_links_to_the_export_with_its_filters(ops_client, batches):
    html = ops_client.get("/?status=In+Progress&sort=total&page_size=25").content.decode()
    assert 'id="export" class="button" href="/export.csv?status=In+Progress&amp;sort=total"' in html


@pytest.mark.parametrize("dangerous", ["=HYPERLINK(\"http://evil\",\"x\")", "+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1"])
def test_cells_a_spreadsheet_would_run_are_neutralised(ops_client, dangerous):
    make_batch(id="rb_formula", name=dangerous, destinations={dangerous: (1, 0, 0)})
    rows = read_csv(ops_client.get("/export.csv"))
    assert rows[0]["name"] == "'" + dangerous
    assert "'" + dangerous + "_count" in rows[0]


def test_harmless_text_and_numbers_are_left_as_they_are(ops_client):
    make_batch(id="rb_plain", name="Invoices - March = done", total=3)
    row = read_csv(ops_client.get("/export.csv"))[0]
    assert row["name"] == "Invoices - March = done"
    assert row["total"] == "3"


def test_a_bad_filter_is_a_400_in_plain_words(ops_client, batches):
    response = ops_client.get("/export.csv?created_before=31/12/2024")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert "created_before: Enter a valid date." in response.content.decode()


def test_it_is_lazy_and_reads_no_destination_rows(ops_client):
    for index in range(5):
        make_batch(id=f"rb_lazy{index}", destinations={"sepire": (1, 0, 0)})
    with CaptureQueriesContext(connection) as queries:
        response = ops_client.get("/export.csv")
        lines = iter(response.streaming_content)
        header = next(lines).decode()
        # Nothing but the header so far: the batches are read as it streams.
        assert not any('FROM "batches_batch"' in q["sql"] for q in queries)
        body = b"".join(lines).decode()
    assert header.startswith("id,name,status,")
    assert body.count("\n") == 5
    assert not any('"batches_batchdestination"."batch_id" IN' in q["sql"] for q in queries)


def test_it_fetches_in_chunks_through_the_iterator(ops_client, monkeypatch):
    seen = []
    original = BatchQuerySet.iterator

    def recording(self, chunk_size=None):
        seen.append(chunk_size)
        return original(self, chunk_size=chunk_size)

    monkeypatch.setattr(BatchQuerySet, "iterator", recording)
    make_batch(id="rb_iter")
    assert len(read_csv(ops_client.get("/export.csv"))) == 1
    assert seen == [export.CHUNK_SIZE]


def test_it_needs_a_login(client):
    response = client.get("/export.csv")
    assert response.status_code == 302
