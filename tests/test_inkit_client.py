"""The Inkit client against a real local HTTP server (pytest-httpserver)."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from batches.inkit import (
    InkitAuthError,
    InkitClient,
    InkitDataError,
    InkitRateLimited,
    InkitRequestError,
    InkitUnavailable,
    parse_retry_after,
)

from .conftest import VENDOR_EXAMPLE


class SleepRecorder:
    """Records the waits the client asks for instead of sleeping."""

    def __init__(self):
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def item(batch_id: str, created: str = "2024-01-01T00:00:00.000001Z", **overrides) -> dict:
    base = {
        "created_at": created,
        "destinations": {
            "inkit_storage": {"completed": 1, "count": 2, "failed": 0, "in_progress": 1, "status": "in_progress"}
        },
        "id": batch_id,
        "name": None,
        "status": "In Progress",
        "total": 2,
    }
    base.update(overrides)
    return base


def page_body(items: list[dict], *, page: int = 1, page_count: int = 1, page_size: int = 25, total: int | None = None) -> dict:
    return {
        "items": items,
        "metadata": {
            "pagination": {
                "current_page": page,
                "next_page": page + 1 if page < page_count else None,
                "page_count": page_count,
                "page_size": page_size,
                "prev_page": page - 1 if page > 1 else None,
                "total_count": len(items) if total is None else total,
            },
            "sort": {"key": "created_at", "order": 1},
        },
    }


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def client(httpserver, sleeps):
    c = InkitClient(
        httpserver.url_for("/v1"), "secret-token", version="9.9", sleep=sleeps, max_retries=3, read_timeout=2
    )
    yield c
    c.close()


# Requests -----------------------------------------------------------------------


def test_it_sends_the_token_header_and_identifies_itself(httpserver, client):
    httpserver.expect_request(
        "/v1/batch", headers={"X-Inkit-API-Token": "secret-token", "Accept": "application/json"}
    ).respond_with_json(page_body([]))
    client.list_batches()
    request, _ = httpserver.log[0]
    assert request.headers["User-Agent"].startswith("Batchwatch/9.9")
    assert "Authorization" not in request.headers


def test_it_passes_every_list_parameter(httpserver, client):
    httpserver.expect_request(
        "/v1/batch",
        query_string={
            "page": "3",
            "page_size": "50",
            "sort": "-created_at",
            "search": "invoices & co",
            "destination_name": "salesforce",
            "destination_status": "failed",
        },
    ).respond_with_json(page_body([], page=3, page_count=3))
    page = client.list_batches(
        page=3,
        page_size=50,
        sort="-created_at",
        search="invoices & co",
        destination_name="salesforce",
        destination_status="failed",
    )
    assert page.number == 3
    assert len(httpserver.log) == 1


def test_it_leaves_out_parameters_not_given(httpserver, client):
    httpserver.expect_request("/v1/batch").respond_with_json(page_body([]))
    client.list_batches()
    request, _ = httpserver.log[0]
    assert dict(request.args) == {"page": "1"}


def test_it_reads_the_vendors_reference_example(httpserver, client):
    example = VENDOR_EXAMPLE
    httpserver.expect_request("/v1/batch").respond_with_json(example)
    page = client.list_batches()
    assert [b.id for b in page.items] == [i["id"] for i in example["items"]]
    first = page.items[0]
    assert first.created_at == datetime(2023, 9, 6, 14, 7, 55, 732858, tzinfo=UTC)
    assert first.status == "Completed" and first.total == 2 and first.name is None
    assert first.destinations[0].name == "inkit_storage"
    assert first.destinations[0].status == "completed"
    assert first.sums() == (2, 2, 0, 0)
    assert page.items[3].name == "test"
    assert page.items[4].destinations == () and page.items[4].status == "In Progress"
    assert (page.page_count, page.page_size, page.total_count, page.next_page) == (1, 25, 7, None)
    assert page.is_last
    assert page.items[0].raw == example["items"][0]


# Pagination ----------------------------------------------------------------------


def test_it_iterates_every_page_including_the_last(httpserver, client):
    for number in (1, 2, 3):
        httpserver.expect_request("/v1/batch", query_string={"page": str(number)}).respond_with_json(
            page_body([item(f"rb_{number}")], page=number, page_count=3, total=3)
        )
    ids = [b.id for page in client.iter_pages() for b in page.items]
    assert ids == ["rb_1", "rb_2", "rb_3"]


def test_it_follows_a_server_that_caps_page_size(httpserver, client):
    # Asked for 100 a page, the server answers 2 a page: trust what it says.
    batches = [item(f"rb_{n}") for n in range(5)]
    for number in (1, 2, 3):
        chunk = batches[(number - 1) * 2 : number * 2]
        httpserver.expect_request("/v1/batch", query_string={"page": str(number), "page_size": "100"}).respond_with_json(
            page_body(chunk, page=number, page_count=3, page_size=2, total=5)
        )
    pages = list(client.iter_pages(page_size=100))
    assert [p.page_size for p in pages] == [2, 2, 2]
    assert sum(len(p.items) for p in pages) == 5


def test_it_handles_an_empty_account(httpserver, client):
    httpserver.expect_request("/v1/batch").respond_with_json(page_body([], page_count=0, total=0))
    pages = list(client.iter_pages())
    assert len(pages) == 1 and pages[0].items == [] and pages[0].is_last


def test_it_follows_a_page_count_that_grows_between_pages(httpserver, client):
    httpserver.expect_request("/v1/batch", query_string={"page": "1"}).respond_with_json(
        page_body([item("rb_1")], page=1, page_count=2, page_size=1, total=2)
    )
    httpserver.expect_request("/v1/batch", query_string={"page": "2"}).respond_with_json(
        page_body([item("rb_2")], page=2, page_count=3, page_size=1, total=3)
    )
    httpserver.expect_request("/v1/batch", query_string={"page": "3"}).respond_with_json(
        page_body([item("rb_3")], page=3, page_count=3, page_size=1, total=3)
    )
    ids = [b.id for page in client.iter_pages() for b in page.items]
    assert ids == ["rb_1", "rb_2", "rb_3"]


# Transient faults -----------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_it_retries_transient_statuses(httpserver, client, sleeps, status):
    httpserver.expect_ordered_request("/v1/batch").respond_with_data("busy", status=status)
    httpserver.expect_ordered_request("/v1/batch").respond_with_data("busy", status=status)
    httpserver.expect_ordered_request("/v1/batch").respond_with_json(page_body([item("rb_1")]))
    page = client.list_batches()
    assert [b.id for b in page.items] == ["rb_1"]
    assert len(sleeps.waits) == 2
    assert client.stats.requests == 3 and client.stats.retries == 2
    assert client.stats.responses[str(status)] == 2


def test_it_backs_off_exponentially_with_jitter(httpserver, sleeps):
    httpserver.expect_request("/v1/batch").respond_with_data("down", status=503)
    client = InkitClient(
        httpserver.url_for("/v1"), "t", sleep=sleeps, max_retries=5, backoff_base=1.0, backoff_cap=60, max_retry_seconds=1000
    )
    with pytest.raises(InkitUnavailable):
        client.list_batches()
    assert len(sleeps.waits) == 5
    for attempt, wait in enumerate(sleeps.waits, start=1):
        ceiling = 2 ** (attempt - 1)
        assert ceiling / 2 <= wait <= ceiling
    assert len(set(sleeps.waits)) > 1


def test_it_honours_retry_after_in_seconds(httpserver, client, sleeps):
    httpserver.expect_ordered_request("/v1/batch").respond_with_data("", status=429, headers={"Retry-After": "7"})
    httpserver.expect_ordered_request("/v1/batch").respond_with_json(page_body([]))
    client.max_retry_seconds = 60
    client.list_batches()
    assert sleeps.waits == [pytest.approx(7, abs=0.1)]


def test_it_honours_retry_after_as_an_http_date():
    when = datetime.now(UTC) + timedelta(seconds=30)
    wait = parse_retry_after(format_datetime(when, usegmt=True))
    assert 28 <= wait <= 30
    assert parse_retry_after("nonsense") is None
    assert parse_retry_after(None) is None


def test_it_gives_up_at_once_when_retry_after_exceeds_its_time_budget(httpserver, client, sleeps):
    httpserver.expect_request("/v1/batch").respond_with_data("", status=429, headers={"Retry-After": "3600"})
    client.max_retry_seconds = 120
    with pytest.raises(InkitRateLimited) as raised:
        client.list_batches(page=4)
    assert "page 4" in str(raised.value) and "429" in str(raised.value)
    assert client.stats.requests == 1


def test_it_stops_after_max_retries(httpserver, client):
    httpserver.expect_request("/v1/batch").respond_with_data("oops", status=500)
    with pytest.raises(InkitUnavailable) as raised:
        client.list_batches(page=2)
    assert raised.value.transient
    assert client.stats.requests == 4  # 1 + max_retries
    assert "page 2" in str(raised.value)


def test_a_rate_limit_holds_back_every_thread(threaded_httpserver):
    """A 429 seen by one thread pauses another thread's next request until
    Retry-After has passed."""
    arrivals: dict[str, list[float]] = {"1": [], "2": []}
    limited = threading.Event()

    def handler(request: Request) -> Response:
        arrivals[request.args["page"]].append(time.monotonic())
        if request.args["page"] == "1" and not limited.is_set():
            limited.set()
            return Response("", status=429, headers={"Retry-After": "1"})
        return Response(json.dumps(page_body([])), content_type="application/json")

    threaded_httpserver.expect_request("/v1/batch").respond_with_handler(handler)
    client = InkitClient(threaded_httpserver.url_for("/v1"), "t", max_retries=3)
    first = threading.Thread(target=client.list_batches, kwargs={"page": 1})
    first.start()
    assert limited.wait(10)
    deadline = time.monotonic() + 10
    while client.stats.responses["429"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # Until the first thread has read its 429...
    time.sleep(0.1)  # ...and set the hold that follows at once.
    client.list_batches(page=2)  # Another thread's request, while the first waits.
    first.join(10)

    limited_at = arrivals["1"][0]
    assert arrivals["2"][0] - limited_at >= 0.95
    assert arrivals["1"][1] - limited_at >= 0.95


@pytest.fixture
def threaded_httpserver():
    """A server that answers requests in parallel, so a retry is never queued
    behind the slow answer it is retrying."""
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def test_it_retries_a_timeout(threaded_httpserver, sleeps):
    calls = []
    release = threading.Event()

    def slow_then_fast(request: Request) -> Response:
        calls.append(1)
        if len(calls) == 1:
            release.wait(10)  # Far past the read timeout; let go once the test is done.
        return Response(json.dumps(page_body([item("rb_1")])), content_type="application/json")

    threaded_httpserver.expect_request("/v1/batch").respond_with_handler(slow_then_fast)
    client = InkitClient(threaded_httpserver.url_for("/v1"), "t", sleep=sleeps, read_timeout=1)
    try:
        page = client.list_batches()
    finally:
        release.set()
    assert page.items[0].id == "rb_1"
    assert client.stats.responses["timeout"] == 1
    assert len(calls) == 2


def test_it_retries_connection_errors_then_says_it_could_not_connect(sleeps):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = InkitClient(f"http://127.0.0.1:{port}/v1", "t", sleep=sleeps, max_retries=2)
    with pytest.raises(InkitUnavailable) as raised:
        client.list_batches()
    assert "could not connect" in str(raised.value)
    assert client.stats.responses["connection"] == 3


def test_it_retries_a_body_that_is_not_json(httpserver, client):
    httpserver.expect_ordered_request("/v1/batch").respond_with_data('{"items": [', content_type="application/json")
    httpserver.expect_ordered_request("/v1/batch").respond_with_json(page_body([item("rb_1")]))
    page = client.list_batches()
    assert page.items[0].id == "rb_1"
    assert client.stats.responses["bad-json"] == 1


def test_a_body_that_stays_bad_names_the_page(httpserver, client):
    httpserver.expect_request("/v1/batch").respond_with_data("<html>gateway</html>", status=200)
    with pytest.raises(InkitUnavailable) as raised:
        client.list_batches(page=6)
    assert "page 6" in str(raised.value) and "not valid JSON" in str(raised.value)


# Permanent errors -------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_it_says_plainly_that_inkit_rejected_the_token(httpserver, client, status):
    httpserver.expect_request("/v1/batch").respond_with_json({"error": "Unauthorized"}, status=status)
    with pytest.raises(InkitAuthError) as raised:
        client.list_batches()
    assert "rejected the API token" in str(raised.value)
    assert "secret-token" not in str(raised.value)
    assert not raised.value.transient
    assert client.stats.requests == 1  # Never retried.


@pytest.mark.parametrize(
    "body",
    [
        {"errors": {"sort": ["unknown sort key"]}},
        {"detail": [{"loc": ["query", "sort"], "msg": "unknown sort key"}]},
    ],
)
def test_a_422_names_the_refused_parameter(httpserver, client, body):
    httpserver.expect_request("/v1/batch").respond_with_json(body, status=422)
    with pytest.raises(InkitRequestError) as raised:
        client.list_batches(sort="colour")
    assert raised.value.parameter == "sort"
    assert "parameter 'sort'" in str(raised.value)
    assert client.stats.requests == 1


def test_a_404_is_a_permanent_request_error(httpserver, client):
    httpserver.expect_request("/v1/batch").respond_with_data("not here", status=404)
    with pytest.raises(InkitRequestError) as raised:
        client.list_batches()
    assert raised.value.status == 404 and not raised.value.transient


# Parsing ---------------------------------------------------------------------------


def test_it_is_tolerant_where_the_api_is_loose(httpserver, client):
    items = [
        item("rb_null_name", name=None),
        item("rb_empty", destinations={}),
        item("rb_null_dest", destinations=None),
        item("rb_unknown", destinations={"carrier_pigeon": {"count": 1, "completed": 0, "failed": 1, "in_progress": 0}}),
        item("rb_status", status="Partially Failed"),
        item("rb_extra", surprise={"nested": True}, destinations={"salesforce": {"count": 3, "completed": 3, "failed": 0, "in_progress": 0, "status": "completed", "eta": None}}),
    ]
    httpserver.expect_request("/v1/batch").respond_with_json(page_body(items))
    page = client.list_batches()
    assert page.rejected == []
    by_id = {b.id: b for b in page.items}
    assert by_id["rb_null_name"].name is None
    assert by_id["rb_empty"].destinations == () and by_id["rb_null_dest"].destinations == ()
    pigeon = by_id["rb_unknown"].destinations[0]
    assert (pigeon.name, pigeon.status, pigeon.failed) == ("carrier_pigeon", None, 1)
    assert by_id["rb_status"].status == "Partially Failed"
    assert by_id["rb_extra"].raw["surprise"] == {"nested": True}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"total": "2"}, "total is '2', not a whole number"),
        ({"total": True}, "total is True, not a whole number"),
        ({"created_at": "yesterday"}, "not an ISO 8601"),
        ({"created_at": "2024-01-01T00:00:00"}, "has no time zone"),
        ({"created_at": None}, "created_at is None"),
        ({"status": None}, "status is None"),
        ({"destinations": {"inkit_storage": {"count": 2, "completed": 1.5, "failed": 0, "in_progress": 0}}}, "completed is 1.5"),
        ({"destinations": {"inkit_storage": {"count": 2, "failed": 0, "in_progress": 0}}}, "has no completed"),
        ({"destinations": {"inkit_storage": {"count": -1, "completed": 0, "failed": 0, "in_progress": 0}}}, "negative"),
        ({"destinations": []}, "destinations is list"),
    ],
)
def test_it_is_strict_where_a_wrong_value_would_corrupt_data(httpserver, client, overrides, reason):
    httpserver.expect_request("/v1/batch").respond_with_json(page_body([item("rb_bad", **overrides), item("rb_good")]))
    page = client.list_batches(page=1)
    assert [b.id for b in page.items] == ["rb_good"]
    assert len(page.rejected) == 1
    assert page.rejected[0].startswith("batch rb_bad: ")
    assert reason in page.rejected[0]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"metadata": page_body([])["metadata"]}, "no items list"),
        ({"items": []}, "no metadata.pagination"),
        ({"items": [], "metadata": {"pagination": {"page_count": "two", "page_size": 25}}}, "bad pagination metadata"),
        ({"items": [], "metadata": {"pagination": {"current_page": 1}}}, "no page_count"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_a_page_without_items_or_metadata_is_refused(httpserver, client, body, reason):
    httpserver.expect_request("/v1/batch").respond_with_json(body)
    with pytest.raises(InkitDataError) as raised:
        client.list_batches(page=3)
    assert str(raised.value).startswith("page 3: ")
    assert reason in str(raised.value)


# One batch ---------------------------------------------------------------------------


@pytest.mark.parametrize("wrapped", [False, True])
def test_it_gets_one_batch_by_id(httpserver, client, wrapped):
    body = item("rb_One2")
    httpserver.expect_request("/v1/batch/rb_One2").respond_with_json({"batch": body} if wrapped else body)
    batch = client.get_batch("rb_One2")
    assert (batch.id, batch.status, batch.raw) == ("rb_One2", "In Progress", body)


def test_a_batch_inkit_does_not_know_is_none(httpserver, client):
    httpserver.expect_request("/v1/batch/rb_gone").respond_with_json({"error": "Batch not found"}, status=404)
    assert client.get_batch("rb_gone") is None


def test_a_malformed_batch_is_a_data_error_naming_it(httpserver, client):
    httpserver.expect_request("/v1/batch/rb_bad").respond_with_json(item("rb_bad", total="many"))
    with pytest.raises(InkitDataError, match="batch rb_bad: total is 'many'"):
        client.get_batch("rb_bad")


def test_it_retries_a_connection_that_breaks_off_mid_answer(sleeps):
    """The server promises a chunked body and hangs up halfway through it."""
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"10\r\n{\"items\": [], \"me",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(json.dumps(page_body([])))}\r\n\r\n".encode()
        + json.dumps(page_body([])).encode(),
    ]
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for answer in answers:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = InkitClient(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", "t", sleep=sleeps)
    try:
        page = client.list_batches()
    finally:
        listener.close()
    assert page.items == []
    assert client.stats.responses["connection"] == 1 and client.stats.retries == 1
