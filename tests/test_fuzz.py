"""A fuzzer over every view's path and query string: thousands of generated
values (any Unicode, NUL, the bytes of lone surrogates and of invalid
UTF-8, numbers of any size, dates that are not, and the usual injection
strings) signed in as ops and as an administrator. Nothing may answer 500
or raise: a bad value is a 400 or the nearest sensible view.

The test client raises what a view raises, and a streamed CSV is read to
its end, so an error anywhere fails the example, and hypothesis shrinks it
to the smallest request that breaks. About 30 s on SQLite."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from batches.models import SyncRun
from batches.paths import batch_path
from dashboard.forms import PARAMETERS

from .factories import finished_sync, make_batch

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Values a person, a script or an attacker might put anywhere.
SPECIAL = [
    "",
    " ",
    "-",
    "--",
    "+",
    "0",
    "-0",
    "-1",
    "1.5",
    "1e9",
    "0x10",
    "NaN",
    "inf",
    "１２",
    "%",
    "%%",
    "%00",
    "\\",
    "'",
    '"',
    "' OR '1'='1' --",
    "<script>alert(1)</script>",
    "{{7*7}}",
    "${7*7}",
    "../",
    "..",
    ".",
    "/",
    "~/",
    "~/~",
    "~/~2F",
    "null",
    "true",
    "0001-01-01",
    "9999-12-31",
    "10000-01-01",
    "2024-02-30",
    "2024-13-01",
    "2024-1-1",
    " 2024-01-01",
    "2024-01-01T00:00",
    "+2024-01-01",
    "２０２４-01-01",
    "0000-00-00",
    "253402300800",
    "253402300799",
    str(2**31),
    str(2**63),
    str(2**64),
    "-" + "9" * 30,
    "In Progress",
    "Completed",
    "inkit_storage",
    "completed",
    "-created_at",
    "last_progress_at",
    "rb_",
    "\u202e",
    "\ufeff",
    "\ufffd",
    "\u0000x",
    "a\nb",
    "\t",
]

# Any code point, lone surrogates included (encode() sends their bytes).
text = st.text(st.characters(), max_size=40)
numbers = st.integers(min_value=-(10**40), max_value=10**40).map(str) | st.just("9" * 5000)
dates = st.dates().map(lambda day: day.isoformat())
specials = st.sampled_from(SPECIAL)
value = st.one_of(text, numbers, dates, specials)


def encode(text_or_bytes: str | bytes) -> str:
    """Percent-encoded as a client may send it: text as UTF-8, a lone
    surrogate as its three bytes (what a careless encoder writes)."""
    raw = (
        text_or_bytes
        if isinstance(text_or_bytes, bytes)
        else text_or_bytes.encode("utf-8", "surrogatepass")
    )
    return quote(raw, safe="")


# A value as it goes on the wire: text (surrogates included) or any bytes.
wire_value = st.one_of(
    value.map(encode),
    st.text(st.characters(codec=None, categories=["Cs"]), min_size=1, max_size=3).map(encode),
    st.binary(max_size=24).map(encode),
    # Sent unencoded: + is a space, a lone % is not an escape.
    st.sampled_from(["+", "%", "%zz", "%0", "a%", "%%00", "&", "=", "=="]),
)


def query_strings(names: list[str]) -> st.SearchStrategy[str]:
    """Query strings of the view's own parameters (repeated, in any order)
    and a few it does not know."""
    name = st.one_of(st.sampled_from(names), text).map(encode)
    pair = st.tuples(name, wire_value).map("=".join)
    return st.lists(pair, max_size=6).map("&".join)


def visit(client: Client, path: str, query: str = "", **headers) -> int:
    response = client.get(f"{path}?{query}" if query else path, **headers)
    if response.streaming:
        b"".join(response.streaming_content)  # The CSV fails here if anywhere.
    assert response.status_code < 500, (path, query, response.status_code)
    event(f"HTTP {response.status_code}")  # Shown by --hypothesis-show-statistics.
    return response.status_code


STORED_IDS = ["rb_fuzz1", "a/b", "..", "~", "#?%&+ x", "日本"]


@pytest.fixture
def data(db):
    """Batches that give the views rows to draw (odd ids among them), sync
    runs for the header and /sync-runs/, and the summary strip."""
    now = timezone.now()
    for n, batch_id in enumerate(STORED_IDS):
        make_batch(
            id=batch_id,
            name=["Invoices", None, "<b>", "Letters", "a&b", "名前"][n],
            status=["Completed", "In Progress", "Failed"][n % 3],
            created_at=now - timedelta(days=n),
            destinations={"inkit_storage": (1, n, 2), "sepire": (0, 0, 3)},
        )
    finished_sync(
        outcome=SyncRun.Outcome.FAILED, ago=timedelta(minutes=3), error="Inkit answered 503"
    )
    finished_sync(ago=timedelta(minutes=1), page_count=3, pages_fetched=3, complete=True)


LIST_PARAMETERS = list(PARAMETERS)


@FUZZ
@given(query=query_strings(LIST_PARAMETERS), htmx=st.booleans())
def test_the_list_never_fails(ops_client, data, query, htmx):
    headers = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TRIGGER": "live-refresh"} if htmx else {}
    visit(ops_client, "/", query, **headers)


@FUZZ
@given(query=query_strings(LIST_PARAMETERS))
def test_the_csv_export_never_fails(ops_client, data, query):
    visit(ops_client, "/export.csv", query)


batch_ids = st.one_of(
    # Every stored id's own path, and paths of ids not stored.
    st.sampled_from(STORED_IDS).map(lambda batch_id: batch_path(batch_id)[len("/batches/") : -1]),
    # (An id with a lone surrogate cannot be stored, so it has no path.)
    value.filter(lambda t: t and not any("\ud800" <= c <= "\udfff" for c in t)).map(
        lambda batch_id: batch_path(batch_id)[len("/batches/") : -1]
    ),
    wire_value.filter(bool),
    st.sampled_from(["~/", "~/a~", "~/~zz", "~/~2f", "~/~2e~2e", "a%2Fb", "%2e%2e", "~%2Fx"]),
)


@FUZZ
@given(segment=batch_ids, query=query_strings(LIST_PARAMETERS))
def test_the_detail_page_never_fails_for_any_id_or_back_link(ops_client, data, segment, query):
    status = visit(ops_client, f"/batches/{segment}/", query)
    assert status in (200, 400, 404)


@FUZZ
@given(query=query_strings(["after", "queued"]), htmx=st.booleans())
def test_the_sync_status_never_fails(ops_client, data, query, htmx):
    visit(ops_client, "/sync/status/", query, **({"HTTP_HX_REQUEST": "true"} if htmx else {}))


@FUZZ
@given(query=query_strings(["before"]))
def test_the_sync_runs_never_fail(ops_client, data, query):
    visit(ops_client, "/sync-runs/", query)


@settings(FUZZ, max_examples=150)
@given(
    path=st.sampled_from(["/healthz", "/metrics"]),
    query=query_strings(["scope"]),
    token=st.one_of(
        st.just("fuzz-metrics-token"),
        text.map(lambda t: t.encode("latin-1", "replace").decode("latin-1")),
    ),
)
def test_health_and_metrics_never_fail(client, data, settings_, path, query, token):
    # Unsigned, as monitors and Prometheus call them.
    visit(client, path, query, HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def settings_(settings):
    settings.METRICS_TOKEN = "fuzz-metrics-token"
    return settings


@settings(FUZZ, max_examples=150)
@given(
    query=query_strings(["next"]),
    username=st.one_of(text, specials, st.just("ops")),
    password=st.one_of(text, specials),
    current=st.one_of(
        text.map(lambda t: t.encode("utf-8", "surrogatepass").decode("latin-1")),
        st.sampled_from(["http://testserver/?a=1", "//evil.example/", "http://[::1", ":", ""]),
    ),
)
def test_signing_in_never_fails(client, data, ops_user, query, username, password, current):
    assert client.get(f"/login/?{query}").status_code < 500
    # A live refresh that lost its session says where the tab was.
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_CURRENT_URL": current}
    assert client.get(f"/login/?{query}", **htmx).status_code < 500
    body = f"username={encode(username)}&password={encode(password)}"
    response = client.post(
        f"/login/?{query}", body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code < 500


ADMIN_LISTS = {
    "/admin/batches/batch/": ["status__exact", "q", "o", "p", "e", "all", "_to_field", "_popup"],
    "/admin/batches/syncrun/": ["outcome__exact", "trigger__exact", "q", "o", "p", "id__exact"],
    "/admin/auth/user/": [
        "is_staff__exact",
        "is_superuser__exact",
        "is_active__exact",
        "groups__id__exact",
        "q",
        "o",
    ],
    "/admin/axes/accessattempt/": [
        "attempt_time__gte",
        "attempt_time__lt",
        "attempt_time__year",
        "attempt_time__month",
        "attempt_time__day",
        "path_info",
        "locked_out",
        "q",
        "o",
        "p",
    ],
}


# The admin reads a date filter's value as a naive time and Django warns
# (the suite makes RuntimeWarnings errors); in production it is a warning.
@pytest.mark.filterwarnings("ignore:DateTimeField .* received a naive datetime:RuntimeWarning")
@FUZZ
@given(
    page=st.sampled_from(sorted(ADMIN_LISTS)),
    data_=st.data(),
)
def test_the_admin_lists_never_fail(admin_client, data, page, data_):
    visit(admin_client, page, data_.draw(query_strings(ADMIN_LISTS[page])))


@settings(FUZZ, max_examples=150)
@given(
    model=st.sampled_from(["batches/batch", "batches/syncrun", "auth/user", "axes/accessattempt"]),
    object_id=st.one_of(
        st.sampled_from(["1", "2", "rb_fuzz1", "a_2Fb", "~", "_2E_2E"]),
        wire_value.filter(bool),
        numbers,
    ),
    view=st.sampled_from(["change/", "history/", "delete/", ""]),
)
def test_the_admin_pages_never_fail_for_any_object_id(admin_client, data, model, object_id, view):
    visit(admin_client, f"/admin/{model}/{object_id}/{view}")


@settings(FUZZ, max_examples=100)
@given(
    back=st.one_of(
        text, specials, st.sampled_from(["//evil.example", "https://evil.example/", "/\\evil"])
    ),
    htmx=st.booleans(),
)
def test_sync_now_never_fails_and_never_sends_elsewhere(staff_client, data, back, htmx):
    body = f"next={encode(back)}"
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    response = staff_client.post(
        "/sync/", body, content_type="application/x-www-form-urlencoded", **headers
    )
    assert response.status_code < 500
    if response.status_code == 302:
        assert response["Location"].startswith("/") and not response["Location"].startswith(
            ("//", "/\\")
        )
