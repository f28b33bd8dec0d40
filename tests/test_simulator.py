"""The built-in Inkit simulator, over real HTTP, with requests and the app's client.

None of these tests needs the database.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.management import CommandError, call_command

from batches.inkit import InkitClient
from batches.simulator import REFERENCE_BATCHES, InkitSimulator, SimulatorServer

from .conftest import TOKEN, VENDOR_EXAMPLE, no_sleep

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MANAGE_PY = Path(__file__).resolve().parents[1] / "manage.py"


CREATED_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
BATCH_ID = re.compile(r"rb_[0-9A-Za-z]{19,22}")


@pytest.fixture
def sim() -> InkitSimulator:
    return InkitSimulator(batches=200, seed=11, now=NOW)


@pytest.fixture
def server(sim: InkitSimulator) -> Iterator[SimulatorServer]:
    with sim.serve() as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.headers["X-Inkit-API-Token"] = TOKEN
        yield http


@pytest.fixture
def client(server: SimulatorServer) -> Iterator[InkitClient]:
    with InkitClient(server.url, TOKEN, sleep=no_sleep, read_timeout=5) as inkit:
        yield inkit


def get(session: requests.Session, server: SimulatorServer, **params: Any) -> requests.Response:
    return session.get(f"{server.url}/batch", params=params, timeout=10)


def list_all(session: requests.Session, server: SimulatorServer, **params: Any) -> list[dict]:
    """Every item of a listing, page by page, following next_page."""
    items: list[dict] = []
    page: int | None = 1
    while page is not None:
        body = get(session, server, page=page, **params).json()
        items.extend(body["items"])
        page = body["metadata"]["pagination"]["next_page"]
    return items


def ids(items: list[dict]) -> list[str]:
    return [item["id"] for item in items]


def newest_first(sim: InkitSimulator) -> list[str]:
    items = sim.snapshot().values()
    return ids(sorted(items, key=lambda i: (i["created_at"], i["id"]), reverse=True))


# Shape ----------------------------------------------------------------------


def test_it_serves_the_vendor_example_exactly():
    sim = InkitSimulator(batches=0, now=NOW)
    with sim.serve() as server:
        response = requests.get(
            f"{server.url}/batch", headers={"X-Inkit-API-Token": TOKEN}, timeout=10
        )

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == VENDOR_EXAMPLE
    assert VENDOR_EXAMPLE["items"] == REFERENCE_BATCHES


def test_it_serves_items_in_the_documented_shape(sim, server, session):
    items = list_all(session, server, page_size=100)

    assert len(items) == 207
    for item in items:
        assert list(item) == ["created_at", "destinations", "id", "name", "status", "total"]
        assert CREATED_AT.fullmatch(item["created_at"]), item
        assert BATCH_ID.fullmatch(item["id"]), item
        assert item["name"] is None or isinstance(item["name"], str)
        assert item["status"] in {"Completed", "In Progress", "Failed"}
        assert isinstance(item["total"], int) and item["total"] >= 1
        for name, destination in item["destinations"].items():
            assert isinstance(name, str) and name
            counts = {k: destination[k] for k in ("completed", "count", "failed", "in_progress")}
            assert all(isinstance(v, int) and v >= 0 for v in counts.values()), item
            assert counts["count"] == counts["completed"] + counts["failed"] + counts["in_progress"]
            assert counts["count"] == item["total"]
            if "status" in destination:
                expected = "completed" if counts["in_progress"] == 0 else "in_progress"
                assert destination["status"] == expected
        if item["status"] != "In Progress":
            assert all(d["in_progress"] == 0 for d in item["destinations"].values())


def test_it_keeps_the_reference_batches_among_generated_ones(sim, server, session):
    served = {item["id"]: item for item in list_all(session, server, page_size=100)}

    for reference in VENDOR_EXAMPLE["items"]:
        assert served[reference["id"]] == reference
        assert sim.snapshot()[reference["id"]] == reference
    # Generated batches are from the last 90 days, so the 2023 ones come last.
    assert ids(list(served.values())[-7:]) == ids(VENDOR_EXAMPLE["items"])


def test_it_can_leave_the_reference_batches_out():
    sim = InkitSimulator(batches=30, include_reference=False, now=NOW)

    assert len(sim) == 30
    assert not set(sim.snapshot()) & set(ids(REFERENCE_BATCHES))


def test_it_generates_a_realistic_mix():
    sim = InkitSimulator(batches=3000, seed=5, now=NOW, include_reference=False)
    items = sim.items()
    statuses = [item["status"] for item in items]
    names = [item["name"] for item in items]
    destinations = [d for item in items for d in item["destinations"].items()]

    assert statuses.count("Completed") > 0.8 * len(items)
    assert 0.10 <= statuses.count("In Progress") / len(items) <= 0.15
    assert "Failed" in statuses
    assert any(i["status"] == "In Progress" and i["destinations"] == {} for i in items)
    assert any(i["status"] == "In Progress" and i["destinations"] for i in items)
    assert 0.2 < names.count(None) / len(names) < 0.5
    assert "<script>alert(1)</script> invoices" in names
    assert any(name and not name.isascii() for name in names)
    assert {"inkit_storage", "salesforce", "sepire", "docusign", "magic_link"} <= {
        name for name, _ in destinations
    }
    assert any(name in {"amazon_s3", "google_drive", "dropbox", "box"} for name, _ in destinations)
    assert any("status" not in value for _, value in destinations)
    assert any(len(i["destinations"]) == 3 for i in items)
    assert len({item["id"] for item in items}) == len(items)
    created = sorted(datetime.fromisoformat(item["created_at"]) for item in items)
    assert NOW - timedelta(days=91) < created[0]
    assert NOW - timedelta(minutes=5) <= created[-1] <= NOW


def test_it_gives_stuck_batches_some_age(sim):
    stuck = [i for i in sim.items() if sim.behaviour_of(i["id"]) == "stuck"]

    assert stuck
    assert all(
        datetime.fromisoformat(item["created_at"]) <= NOW - timedelta(days=1) for item in stuck
    )
    assert all(item["status"] == "In Progress" for item in stuck)


# Auth and routing -----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Inkit-API-Token": "wrong-token"},
        {"X-Inkit-API-Token": ""},
        {"Authorization": f"Bearer {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_it_refuses_a_missing_or_wrong_token(server, headers):
    response = requests.get(f"{server.url}/batch", headers=headers, timeout=10)

    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}


def test_it_accepts_a_trailing_slash(server, session):
    response = session.get(f"{server.url}/batch/", params={"page_size": 3}, timeout=10)

    assert response.status_code == 200
    assert len(response.json()["items"]) == 3


def test_it_serves_one_batch_by_id(sim, server, session):
    wanted = sim.items()[3]

    response = session.get(f"{server.url}/batch/{wanted['id']}", timeout=10)

    assert response.status_code == 200
    assert response.json() == wanted


def test_it_answers_404_for_an_unknown_batch(server, session):
    response = session.get(f"{server.url}/batch/rb_doesNotExist", timeout=10)

    assert response.status_code == 404
    assert response.json() == {"error": "Batch not found"}


@pytest.mark.parametrize("path", ["/v1/batches", "/v1/invoke/batch", "/", "/v2/batch"])
def test_it_answers_404_json_for_other_paths(server, session, path):
    response = session.get(f"http://127.0.0.1:{server.port}{path}", timeout=10)

    assert response.status_code == 404
    assert response.json() == {"error": "Not found"}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_it_answers_405_to_other_methods(server, session, method):
    response = session.request(method, f"{server.url}/batch", json={"x": 1}, timeout=10)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
    # The connection stays usable after a request with a body.
    assert get(session, server).status_code == 200


def test_it_keeps_connections_alive(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(3):
            connection.request("GET", "/v1/batch?page_size=5", headers={"X-Inkit-API-Token": TOKEN})
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200
            assert response.version == 11
            assert not response.will_close
            assert int(response.headers["Content-Length"]) == len(body)
    finally:
        connection.close()


def test_it_stops_serving_when_stopped(sim):
    server = sim.serve()
    url = f"{server.url}/batch"
    assert requests.get(url, headers={"X-Inkit-API-Token": TOKEN}, timeout=5).status_code == 200

    server.stop()

    with pytest.raises(requests.ConnectionError):
        requests.get(url, headers={"X-Inkit-API-Token": TOKEN}, timeout=5)


# Pagination -----------------------------------------------------------------


def test_it_pages_through_every_batch_once(sim, server, session):
    page_size = 7
    expected_pages = math.ceil(207 / page_size)
    seen: list[str] = []

    for number in range(1, expected_pages + 1):
        body = get(session, server, page=number, page_size=page_size).json()
        pagination = body["metadata"]["pagination"]
        assert pagination == {
            "current_page": number,
            "next_page": number + 1 if number < expected_pages else None,
            "page_count": expected_pages,
            "page_size": page_size,
            "prev_page": number - 1 if number > 1 else None,
            "total_count": 207,
        }
        assert len(body["items"]) == (page_size if number < expected_pages else 207 % page_size)
        seen.extend(ids(body["items"]))

    assert seen == newest_first(sim)


def test_it_answers_a_page_past_the_end_with_no_items(server, session):
    response = get(session, server, page=50, page_size=10)

    assert response.status_code == 200
    body = response.json()
    assert body["items"] == []
    assert body["metadata"]["pagination"] == {
        "current_page": 50,
        "next_page": None,
        "page_count": 21,
        "page_size": 10,
        "prev_page": 49,
        "total_count": 207,
    }


def test_it_uses_25_per_page_by_default(server, session):
    body = get(session, server).json()

    assert len(body["items"]) == 25
    assert body["metadata"]["pagination"]["page_size"] == 25
    assert body["metadata"]["pagination"]["page_count"] == 9


def test_it_caps_page_size_silently_and_reports_the_size_used():
    sim = InkitSimulator(batches=50, max_page_size=20, now=NOW)
    with sim.serve() as server, requests.Session() as session:
        session.headers["X-Inkit-API-Token"] = TOKEN
        body = get(session, server, page_size=500).json()

    assert len(body["items"]) == 20
    assert body["metadata"]["pagination"]["page_size"] == 20
    assert body["metadata"]["pagination"]["page_count"] == 3
    assert body["metadata"]["pagination"]["total_count"] == 57


def test_it_reports_one_page_for_an_empty_result(server, session):
    body = get(session, server, search="nothing-matches-this").json()

    assert body["items"] == []
    assert body["metadata"]["pagination"] == {
        "current_page": 1,
        "next_page": None,
        "page_count": 1,
        "page_size": 25,
        "prev_page": None,
        "total_count": 0,
    }


# Sorting --------------------------------------------------------------------


def test_it_lists_newest_first_by_default_but_reports_order_1(sim, server, session):
    body = get(session, server, page_size=100).json()

    assert ids(body["items"]) == newest_first(sim)[:100]
    assert body["metadata"]["sort"] == {"key": "created_at", "order": 1}


SORT_RULES = {
    "created_at": lambda i: (i["created_at"], i["id"]),
    "name": lambda i: ((i["name"] or "").casefold(), i["id"]),
    "status": lambda i: (i["status"], i["id"]),
    "total": lambda i: (i["total"], i["id"]),
}


@pytest.mark.parametrize("key", list(SORT_RULES))
def test_it_sorts_by_each_key_in_both_directions(sim, server, session, key):
    sim.faults.created_at_order = "oldest"  # The plain reading; the vendor's is below.
    ascending = ids(sorted(sim.snapshot().values(), key=SORT_RULES[key]))

    up = get(session, server, sort=key, page_size=100).json()
    down = get(session, server, sort=f"-{key}", page_size=100).json()

    assert up["metadata"]["sort"] == {"key": key, "order": 1}
    assert down["metadata"]["sort"] == {"key": key, "order": -1}
    assert list_all(session, server, sort=key, page_size=30) == sorted(
        sim.items(), key=SORT_RULES[key]
    )
    assert ids(up["items"]) == ascending[:100]
    assert ids(down["items"]) == ascending[::-1][:100]


@pytest.mark.parametrize(("order", "honoured", "plain", "minus"), [
    ("newest", True, "newest", "oldest"),  # the default: the vendor's example
    ("newest", False, "newest", "newest"),
    ("oldest", True, "oldest", "newest"),
    ("oldest", False, "oldest", "oldest"),
])
def test_sort_created_at_lists_as_switched(sim, server, session, order, honoured, plain, minus):
    sim.faults.created_at_order, sim.faults.descending_honoured = order, honoured
    newest_first = [i["id"] for i in sim.items()][:100]
    for sort, expected in (("created_at", plain), ("-created_at", minus)):
        served = get(session, server, sort=sort, page_size=100).json()
        assert served["metadata"]["sort"] == {"key": "created_at", "order": -1 if sort[0] == "-" else 1}
        got = ids(served["items"])
        assert got == (newest_first if expected == "newest" else ids(sorted(sim.items(), key=lambda i: (i["created_at"], i["id"])))[:100])


def test_batches_come_and_go_while_a_client_pages(sim, server, session):
    sim.faults.create_every_listing, sim.faults.delete_every_listing = 2, 3
    before = set(sim.snapshot())
    for page in range(1, 7):
        get(session, server, page=page)
    after = set(sim.snapshot())
    assert len(after - before) == 3 and len(sim.deleted_while_listing) == 2
    assert not after & set(sim.deleted_while_listing)
    assert all(record.at > 0 for record in sim.requests)


def test_it_breaks_sort_ties_by_id(sim, server, session):
    sim.faults.created_at_order = "oldest"
    tied = sorted(sim.items()[:5], key=lambda i: i["id"])
    for item in tied:
        sim.set_batch(item["id"], created_at="2025-02-01T00:00:00.000000Z", total=4242)

    for sort in ("created_at", "total"):
        served = [i["id"] for i in list_all(session, server, sort=sort) if i["total"] == 4242]
        assert served == ids(tied), sort
    newest = [i["id"] for i in list_all(session, server, sort="-created_at") if i["total"] == 4242]
    assert newest == ids(tied)[::-1]


# Filters --------------------------------------------------------------------


def test_it_searches_ids_and_names_case_insensitively(sim, server, session):
    by_name, by_id = sim.items()[10], sim.items()[20]
    sim.set_batch(by_name["id"], name="Quarterly INVOICES for Zoë")
    fragment = by_id["id"][3:12].swapcase()

    assert ids(list_all(session, server, search="invoices for zo")) == [by_name["id"]]
    assert ids(list_all(session, server, search="ZOË")) == [by_name["id"]]
    found = ids(list_all(session, server, search=fragment))
    assert by_id["id"] in found
    assert all(fragment.casefold() in i.casefold() for i in found)


def test_it_searches_names_containing_markup(sim, server, session):
    target = sim.items()[0]
    sim.set_batch(target["id"], name="<script>alert(1)</script> invoices")

    found = list_all(session, server, search="<script>")

    assert target["id"] in ids(found)
    assert all("<script>" in (item["name"] or "") for item in found)


def test_it_filters_by_destination_name(sim, server, session):
    expected = [i["id"] for i in sim.items() if "salesforce" in i["destinations"]]

    served = ids(list_all(session, server, destination_name="salesforce"))

    assert expected and served == expected


def test_it_filters_by_destination_name_and_status(sim, server, session):
    expected = [
        i["id"]
        for i in sim.items()
        if i["destinations"].get("inkit_storage", {}).get("status") == "in_progress"
    ]

    served = ids(
        list_all(
            session, server, destination_name="inkit_storage", destination_status="in_progress"
        )
    )

    assert expected and served == expected


def test_it_filters_by_destination_status_alone(sim, server, session):
    expected = [
        i["id"]
        for i in sim.items()
        if any(d.get("status") == "in_progress" for d in i["destinations"].values())
    ]

    served = ids(list_all(session, server, destination_status="in_progress"))

    assert expected and served == expected
    assert len(served) < len(sim)


def test_it_combines_filters_with_sorting_and_paging(sim, server, session):
    expected = sorted(
        (i for i in sim.items() if "inkit_storage" in i["destinations"]),
        key=SORT_RULES["total"],
        reverse=True,
    )

    served = list_all(session, server, destination_name="inkit_storage", sort="-total", page_size=9)

    assert served == expected


# Bad parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"page": "0"}, "page"),
        ({"page": "-1"}, "page"),
        ({"page": "abc"}, "page"),
        ({"page": "1.5"}, "page"),
        ({"page": ""}, "page"),
        ({"page_size": "0"}, "page_size"),
        ({"page_size": "ten"}, "page_size"),
        ({"sort": "colour"}, "sort"),
        ({"sort": "-id"}, "sort"),
        ({"sort": "-"}, "sort"),
    ],
)
def test_it_refuses_bad_parameters_with_422(server, session, params, parameter):
    response = get(session, server, **params)

    assert response.status_code == 422
    errors = response.json()["errors"]
    assert list(errors) == [parameter]
    assert isinstance(errors[parameter], list) and errors[parameter][0]


def test_it_reports_every_bad_parameter_at_once(server, session):
    response = get(session, server, page="x", page_size="-5", sort="size")

    assert response.status_code == 422
    assert set(response.json()["errors"]) == {"page", "page_size", "sort"}


def test_the_client_names_the_refused_parameter(client):
    from batches.inkit import InkitRequestError

    with pytest.raises(InkitRequestError) as caught:
        client.list_batches(sort="colour")

    assert caught.value.status == 422
    assert caught.value.parameter == "sort"


# Faults -----------------------------------------------------------------------


def test_it_answers_a_queued_429_with_retry_after(sim, server, session):
    sim.faults.retry_after = "1"
    sim.faults.queue.append("429")

    limited = get(session, server)
    after = get(session, server)

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert after.status_code == 200


def test_it_can_leave_retry_after_out(sim, server, session):
    sim.faults.retry_after = None
    sim.faults.queue.append("429")

    response = get(session, server)

    assert response.status_code == 429
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    ("status", "content_type"),
    [
        ("500", "application/json"),
        ("502", "text/html"),
        ("503", "application/json"),
        ("504", "text/html"),
    ],
)
def test_it_answers_a_queued_server_error(sim, server, session, status, content_type):
    sim.faults.queue.append(status)

    failed = get(session, server)
    after = get(session, server)

    assert failed.status_code == int(status)
    assert failed.headers["Content-Type"].startswith(content_type)
    assert failed.content
    assert after.status_code == 200


def test_it_answers_queued_bad_json_with_200(sim, server, session):
    sim.faults.queue.append("bad-json")

    response = get(session, server)

    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert get(session, server).json()["items"]


def test_it_answers_slowly_enough_for_a_read_timeout(sim, server, session):
    sim.faults.slow_seconds = 0.6
    sim.faults.queue.append("slow")

    with pytest.raises(requests.ReadTimeout):
        session.get(f"{server.url}/batch", timeout=(2, 0.2))

    assert get(session, server).status_code == 200


def test_it_drops_the_connection_on_reset(sim, server, session):
    sim.faults.queue.append("reset")

    with pytest.raises(requests.ConnectionError):
        get(session, server)

    assert sim.requests[-1].status == 0
    assert sim.requests[-1].fault == "reset"
    assert get(session, server).status_code == 200


def test_it_consumes_queued_faults_one_per_request_in_order(sim, server, session):
    sim.faults.queue.extend(["503", "429", "500"])

    statuses = [get(session, server).status_code for _ in range(4)]

    assert statuses == [503, 429, 500, 200]
    assert sim.faults.queue == []


def test_it_lets_a_queued_200_through_to_aim_at_a_later_request(sim, server, session):
    sim.faults.queue.extend(["200", None, "503"])

    statuses = [get(session, server).status_code for _ in range(4)]

    assert statuses == [200, 200, 503, 200]
    assert [r.fault for r in sim.requests] == [None, None, "503", None]


def test_it_answers_500_naming_an_unknown_fault(sim, server, session):
    sim.faults.queue.append("teapot")

    response = get(session, server)

    assert response.status_code == 500
    assert "teapot" in response.json()["error"]


def test_the_client_recovers_from_every_kind_of_fault(sim, server):
    sim.faults.slow_seconds = 0.6
    sim.faults.queue.extend(["429", "500", "502", "503", "504", "bad-json", "slow", "reset"])

    with InkitClient(server.url, TOKEN, sleep=no_sleep, read_timeout=0.3, max_retries=10) as inkit:
        pages = list(inkit.iter_pages(page_size=100))

    assert [item.id for page in pages for item in page.items] == newest_first(sim)
    assert inkit.stats.retries == 8
    for outcome in ("429", "500", "502", "503", "504", "bad-json", "timeout", "connection"):
        assert inkit.stats.responses[outcome] == 1, outcome


def test_it_rate_limits_every_nth_request(sim, server, session):
    sim.faults.rate_limit_every = 3

    responses = [get(session, server) for _ in range(6)]

    assert [r.status_code for r in responses] == [200, 200, 429, 200, 200, 429]
    assert responses[2].headers["Retry-After"] == "0"


def test_it_sends_bad_json_every_nth_request(sim, server, session):
    sim.faults.bad_json_every = 2
    bodies = []

    for _ in range(4):
        try:
            bodies.append(get(session, server).json())
        except ValueError:
            bodies.append(None)

    assert [body is None for body in bodies] == [False, True, False, True]


def test_it_fails_a_seeded_share_of_requests_at_random():
    def statuses(seed: int) -> list[int]:
        sim = InkitSimulator(batches=10, seed=seed, now=NOW)
        sim.faults.error_rate = 0.3
        with sim.serve() as server, requests.Session() as session:
            session.headers["X-Inkit-API-Token"] = TOKEN
            return [get(session, server).status_code for _ in range(40)]

    first = statuses(3)

    assert set(first) <= {200, 500, 502, 503}
    assert 4 <= sum(status != 200 for status in first) <= 24
    assert statuses(3) == first


def test_it_adds_latency_to_every_request(sim, server, session):
    sim.faults.latency_seconds = 0.15

    started = time.monotonic()
    get(session, server)
    get(session, server)

    assert time.monotonic() - started >= 0.3


def test_it_adds_batches_just_before_serving_a_page(sim, server, session):
    sim.faults.add_when_serving = {2: 3}
    first = get(session, server, page=1, page_size=10).json()

    second = get(session, server, page=2, page_size=10).json()
    again = get(session, server, page=2, page_size=10).json()

    # The three new batches pushed the last three of page 1 onto page 2.
    assert ids(second["items"])[:3] == ids(first["items"])[-3:]
    assert first["metadata"]["pagination"]["total_count"] == 207
    assert second["metadata"]["pagination"]["total_count"] == 210
    assert again["metadata"]["pagination"]["total_count"] == 210
    assert len(sim) == 210
    newest = newest_first(sim)[:3]
    assert set(newest).isdisjoint(ids(first["items"]))
    assert all(sim.snapshot()[i]["status"] == "In Progress" for i in newest)


def test_it_adds_batches_every_time_page_two_is_served(sim, server, session):
    sim.faults.add_every_listing = 4
    totals = [
        get(session, server, page=number, page_size=10).json()["metadata"]["pagination"]["total_count"]
        for number in (1, 2, 3, 1, 2)
    ]
    assert totals == [207, 211, 211, 211, 215]


def test_it_deletes_batches_just_before_serving_a_page(sim, server, session):
    first = get(session, server, page=1, page_size=10).json()
    doomed = first["items"][0]["id"]
    sim.faults.remove_when_serving = {2: [doomed]}

    second = get(session, server, page=2, page_size=10).json()

    # Page 2 shifted back by one: its old first batch is now page 1's last.
    assert second["metadata"]["pagination"]["total_count"] == 206
    assert doomed not in sim.snapshot()
    assert ids(second["items"])[0] not in ids(first["items"])
    assert get(session, server, page=1, page_size=10).json()["items"][-1]["id"] not in ids(first["items"])
    assert sim.faults.remove_when_serving == {}


def test_every_nth_request_can_be_slow(sim, server, session):
    sim.faults.slow_every = 2
    sim.faults.slow_seconds = 0.3
    get(session, server)
    started = time.monotonic()
    get(session, server)
    assert time.monotonic() - started >= 0.3
    assert [record.fault for record in sim.requests] == [None, "slow"]


def test_it_advances_every_nth_request(sim, server, session):
    before = sim.snapshot()
    sim.faults.auto_advance_every = 2

    get(session, server)
    assert sim.snapshot() == before
    get(session, server)

    assert sim.snapshot() != before


def test_it_logs_every_request(sim, server, session):
    get(session, server, page=2, search="x")
    session.get(f"{server.url}/nowhere", timeout=10)

    assert [(r.path, r.params, r.status) for r in sim.requests] == [
        ("/v1/batch", {"page": "2", "search": "x"}, 200),
        ("/v1/nowhere", {}, 404),
    ]
    sim.reset_log()
    assert sim.requests == []


# Evolution --------------------------------------------------------------------


def test_advance_changes_some_in_progress_batches(sim):
    before = sim.snapshot()

    sim.advance()

    after = sim.snapshot()
    changed = [i for i in before if before[i] != after.get(i)]
    assert changed
    assert all(before[i]["status"] == "In Progress" for i in changed)


def test_advance_never_changes_stuck_or_reference_batches(sim):
    before = sim.snapshot()
    frozen = [i for i in before if sim.behaviour_of(i) in {"stuck", "fixed"}]

    sim.advance(50)

    after = sim.snapshot()
    assert len(frozen) > 7
    assert all(after[i] == before[i] for i in frozen)
    for reference in REFERENCE_BATCHES:
        assert after[reference["id"]] == reference


def test_advance_keeps_counts_consistent_and_never_undoes_progress(sim):
    before = sim.snapshot()

    sim.advance(10)

    after = sim.snapshot()
    assert len(after) > len(before)  # new batches arrived
    for batch_id, old in before.items():
        new = after[batch_id]
        for name, destination in new["destinations"].items():
            assert destination["count"] == (
                destination["completed"] + destination["failed"] + destination["in_progress"]
            )
            previous = old["destinations"].get(name)
            if previous:
                assert destination["completed"] >= previous["completed"]
                assert destination["failed"] >= previous["failed"]
                assert destination["in_progress"] <= previous["in_progress"]


def test_progressing_batches_finish_and_failing_ones_gain_failures(sim):
    progressing = [i for i in sim.snapshot() if sim.behaviour_of(i) == "progressing"]
    failing = [i for i in sim.snapshot() if sim.behaviour_of(i) == "failing"]
    failed_before = {
        i: sum(d["failed"] for d in sim.snapshot()[i]["destinations"].values()) for i in failing
    }

    sim.advance(100)

    after = sim.snapshot()
    assert progressing and failing
    for batch_id in progressing:
        assert after[batch_id]["status"] in {"Completed", "Failed"}
        assert all(
            d["status"] == "completed"
            for d in after[batch_id]["destinations"].values()
            if "status" in d
        )
    for batch_id in failing:
        failed_after = sum(d["failed"] for d in after[batch_id]["destinations"].values())
        assert failed_after > failed_before[batch_id]


def test_new_batches_arrive_in_progress_often_without_destinations(sim):
    known = set(sim.snapshot())
    arrivals: list[dict] = []

    for _ in range(20):
        newest_known = max(item["created_at"] for item in sim.items())
        sim.advance()
        arrived = [item for item in sim.items() if item["id"] not in known]
        assert all(item["created_at"] > newest_known for item in arrived)
        arrivals.extend(arrived)
        known.update(ids(arrived))

    assert len(arrivals) >= 5
    assert all(item["status"] == "In Progress" for item in arrivals)
    assert any(item["destinations"] == {} for item in arrivals)
    assert any(item["destinations"] for item in arrivals)


def test_it_serves_changes_after_advance(sim, server, session):
    before = {i["id"]: i for i in list_all(session, server, page_size=100)}

    sim.advance(3)

    after = {i["id"]: i for i in list_all(session, server, page_size=100)}
    assert after == sim.snapshot()
    assert after != before


def test_it_is_deterministic_for_a_seed():
    one = InkitSimulator(batches=300, seed=42, now=NOW)
    two = InkitSimulator(batches=300, seed=42, now=NOW)
    other = InkitSimulator(batches=300, seed=43, now=NOW)

    assert one.snapshot() == two.snapshot()
    assert set(one.snapshot()) != set(other.snapshot())
    one.advance(5)
    two.advance(5)
    assert one.snapshot() == two.snapshot()


# Changing data by hand --------------------------------------------------------


def test_add_batches_creates_the_newest_batches(sim, server, session):
    destinations = {"docusign": {"completed": 0, "count": 4, "failed": 0, "in_progress": 4}}

    added = sim.add_batches(2, destinations=destinations)

    first_page = get(session, server, page_size=5).json()["items"]
    assert set(ids(first_page[:2])) == set(ids(added))
    assert all(item["destinations"] == destinations for item in added)
    assert all(item["status"] == "In Progress" and item["total"] == 4 for item in added)
    assert first_page[0]["created_at"] > first_page[2]["created_at"]


def test_add_batches_can_create_completed_ones(sim):
    added = sim.add_batches(3, status="Completed")

    for item in added:
        assert item["status"] == "Completed"
        assert item["destinations"]
        assert all(d["in_progress"] == 0 for d in item["destinations"].values())


def test_set_batch_changes_what_is_served(sim, server, session):
    target = get(session, server, page_size=1).json()["items"][0]

    sim.set_batch(target["id"], name="Renamed", status="Failed")

    served = get(session, server, page_size=1).json()["items"][0]
    assert served["id"] == target["id"]
    assert (served["name"], served["status"]) == ("Renamed", "Failed")
    assert sim.behaviour_of(target["id"]) == "fixed"


def test_it_serves_malformed_data_a_test_sets_on_purpose(sim, server, session):
    target = sim.items()[0]
    sim.set_batch(target["id"], total="lots", name=42, destinations={"inkit_storage": "broken"})

    served = get(session, server, page_size=1).json()["items"][0]
    filtered = ids(list_all(session, server, destination_name="inkit_storage"))
    sorted_by_total = get(session, server, sort="total")

    assert (served["total"], served["name"], served["destinations"]) == (
        "lots",
        42,
        {"inkit_storage": "broken"},
    )
    assert target["id"] not in filtered and filtered
    assert sorted_by_total.status_code == 500
    assert "TypeError" in sorted_by_total.json()["error"]


def test_set_batch_refuses_unknown_fields(sim):
    with pytest.raises(TypeError):
        sim.set_batch(sim.items()[0]["id"], colour="red")


def test_remove_batch_makes_it_gone(sim, server, session):
    target = sim.items()[5]

    sim.remove_batch(target["id"])

    assert target["id"] not in ids(list_all(session, server, page_size=100))
    assert session.get(f"{server.url}/batch/{target['id']}", timeout=10).status_code == 404
    assert len(sim) == 206


def test_items_and_snapshot_are_copies(sim):
    item = sim.items()[0]
    item["name"] = "changed"
    snapshot = sim.snapshot()
    next(iter(snapshot.values()))["destinations"]["x"] = {}

    assert sim.items()[0]["name"] != "changed"
    assert all("x" not in i["destinations"] for i in sim.items())


# The app's client ---------------------------------------------------------------


def test_the_client_reads_every_batch_as_served(sim, client):
    pages = list(client.iter_pages(page_size=40))

    batches = [batch for page in pages for batch in page.items]
    assert [batch.id for batch in batches] == newest_first(sim)
    assert all(page.rejected == [] for page in pages)
    assert {batch.id: batch.raw for batch in batches} == sim.snapshot()
    assert pages[-1].is_last and len(pages) == math.ceil(207 / 40)
    assert (pages[0].sort_key, pages[0].sort_order) == ("created_at", 1)


def test_the_client_sees_the_capped_page_size():
    sim = InkitSimulator(batches=60, max_page_size=25, now=NOW)
    with sim.serve() as server, InkitClient(server.url, TOKEN, sleep=no_sleep) as inkit:
        pages = list(inkit.iter_pages(page_size=100))

    assert [page.page_size for page in pages] == [25, 25, 25]
    assert sum(len(page.items) for page in pages) == 67


# The management command ---------------------------------------------------------


def test_the_command_refuses_bad_options():
    with pytest.raises(CommandError, match="--error-rate"):
        call_command("inkit_simulator", "--error-rate", "2")
    with pytest.raises(CommandError, match="--slow-every"):
        call_command("inkit_simulator", "--slow-every", "0")


def start_command(*options: str) -> tuple[subprocess.Popen, str]:
    """Run `manage.py inkit_simulator` on a free port; return the process and
    the first line it prints (where it listens)."""
    process = subprocess.Popen(
        [sys.executable, str(MANAGE_PY), "inkit_simulator", "--port", "0", "--batches", "20", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    ready, _, _ = select.select([process.stdout], [], [], 30)
    if not ready:
        process.kill()
        pytest.fail("the command printed nothing in 30 seconds")
    return process, process.stdout.readline()


def test_the_commands_switches_inject_faults():
    process, line = start_command(
        "--advance-every", "0", "--rate-limit-every", "2", "--retry-after", "3", "--add-mid-listing", "5"
    )
    try:
        url = re.search(r"http://\S+/v1", line)[0]
        with requests.Session() as http:
            http.headers["X-Inkit-API-Token"] = TOKEN
            first = http.get(f"{url}/batch", params={"page": 1, "page_size": 10}, timeout=10)
            limited = http.get(f"{url}/batch", params={"page": 2, "page_size": 10}, timeout=10)
            second = http.get(f"{url}/batch", params={"page": 2, "page_size": 10}, timeout=10)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)

    assert first.json()["metadata"]["pagination"]["total_count"] == 27
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert second.json()["metadata"]["pagination"]["total_count"] == 32


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_the_command_serves_until_signalled(stop_signal):
    process, line = start_command()
    try:
        url = re.search(r"http://\S+/v1", line)
        assert url, line
        assert TOKEN in line
        response = requests.get(f"{url[0]}/batch", headers={"X-Inkit-API-Token": TOKEN}, timeout=10)
        assert response.json()["metadata"]["pagination"]["total_count"] == 27
    finally:
        process.send_signal(stop_signal)
        out, err = process.communicate(timeout=30)

    assert process.returncode == 0, err
    assert "stopped" in out
