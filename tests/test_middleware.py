"""The guards every request passes (dashboard/middleware.py), tried on every
URL pattern of the URLconf, the admin's included: a NUL anywhere is a 400
with a readable message, never a 500; every response a view makes is
private and not stored."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.contenttypes.models import ContentType

from batches.models import Batch, SyncRun

from .factories import finished_sync, make_batch
from .html import text
from .urlconf import Route, resolves_to, routes

pytestmark = pytest.mark.django_db

ROUTES = routes()


@pytest.fixture
def samples(admin_user) -> dict[str, str]:
    """Values that make each route's sample path reach a real object."""
    batch = make_batch(id="rb_sample")
    run = finished_sync()
    return {
        "batch": batch.pk,
        "syncrun": str(run.pk),
        "user": str(admin_user.pk),
        "group": "1",
        "content_type_id": str(ContentType.objects.get_for_model(Batch).pk),
        "app_label": "batches",
        "url": "no/such/page/",
    }


def filler(samples: dict[str, str], suffix: str = ""):
    def fill(route: Route, name: str) -> str:
        if name in ("object_id", "id"):
            model = next(
                (m for m in ("batch", "syncrun", "user", "group") if f"/{m}/" in route.pattern),
                "batch",
            )
            value = samples[model]
        elif name == "batch_id":
            value = samples["batch"]
        elif name == "content_type_id":
            value = samples[name]
        else:
            value = samples.get(name, "x")
        return value + suffix

    return fill


def test_the_walk_finds_every_view_and_each_sample_path_reaches_its_own(samples):
    names = {route.name for route in ROUTES}
    assert {"batch-list", "batch-detail", "sync-status", "healthz", "metrics"} <= names
    assert {"batches_batch_change", "batches_syncrun_changelist", "app_list"} <= names
    for route in ROUTES:
        assert resolves_to(route.path(filler(samples)), route), route.pattern


@pytest.mark.parametrize("route", ROUTES, ids=[route.pattern for route in ROUTES])
def test_a_nul_in_any_part_of_any_path_is_a_400_that_says_so(admin_client, samples, route):
    paths = [route.path(filler(samples, "\0"))] if route.parameters else []
    base = route.path(filler(samples))
    paths += [base + "%00", f"{base}?q=%00", f"{base}?%00=1", f"{base}?page=1&status=a%00b"]
    for path in paths:
        response = admin_client.get(path)
        assert response.status_code == 400, path
        assert response["Content-Type"] == "text/plain; charset=utf-8"
        assert "holds a NUL character (%00)" in response.content.decode()
        assert "private" in response["Cache-Control"] and "no-store" in response["Cache-Control"]


@pytest.mark.parametrize(
    ("path", "where"),
    [
        # The server errors the issue found.
        ("/batches/%00/", "the address"),
        ("/admin/batches/batch/%00/change/", "the address"),
        ("/admin/batches/batch/?status__exact=%00", "the query string parameter “status__exact”"),
        (
            "/admin/batches/syncrun/?outcome__exact=%00",
            "the query string parameter “outcome__exact”",
        ),
        ("/?q=%00", "the query string parameter “q”"),
    ],
)
def test_the_issues_server_errors_are_400s_naming_the_part(admin_client, path, where):
    response = admin_client.get(path)
    assert response.status_code == 400
    assert response.content.decode().startswith(f"Bad request: {where} holds a NUL character")


@pytest.mark.parametrize(
    "cookie", ['sessionid="abcdefgh\\000ijklmnop"', "sessionid=abcdefgh\0ijkl"]
)
def test_a_nul_in_a_cookie_is_refused_before_the_session_is_read(client, cookie):
    # On PostgreSQL a NUL session key would reach the sessions table; a
    # quoted cookie's octal escape is a NUL once Django reads it.
    response = client.get("/", HTTP_COOKIE=cookie)
    assert response.status_code == 400
    assert "holds a NUL character" in response.content.decode()


def test_a_nul_in_a_header_is_refused(client):
    response = client.get("/login/", HTTP_USER_AGENT="curl\0")
    assert response.status_code == 400 and "User-Agent header" in response.content.decode()


def test_a_nul_is_refused_for_anonymous_visitors_too(client):
    assert client.get("/batches/%00/").status_code == 400
    assert client.get("/login/?next=/%00").status_code == 400
    assert client.get("/healthz?scope=%00").status_code == 400


def test_text_that_is_not_utf8_is_not_refused(ops_client):
    # Invalid UTF-8 is decoded to U+FFFD by Django, which any column stores.
    make_batch(id="rb_\ufffd")
    assert ops_client.get("/?q=%FF%FE").status_code == 200
    assert ops_client.get("/?q=%ED%A0%80").status_code == 200  # a surrogate's bytes
    assert ops_client.get("/batches/rb_%FF/").status_code == 404  # Django keeps it as %FF


# Cache-Control -------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=[route.pattern for route in ROUTES])
def test_every_view_says_private_no_store(admin_client, samples, settings, route):
    settings.METRICS_TOKEN = "metrics-token-1"
    response = admin_client.get(
        route.path(filler(samples)), HTTP_AUTHORIZATION="Bearer metrics-token-1"
    )
    assert response.status_code != 500
    directives = {part.strip() for part in response["Cache-Control"].split(",")}
    assert {"private", "no-store"} <= directives, (route.pattern, response.status_code)


def test_static_files_stay_cacheable(client, collected_static):
    response = client.get("/static/dashboard/dashboard.css")
    # WhiteNoise answers the unhashed name without for-ever caching, and
    # never marks a public file private.
    assert "private" not in response.get("Cache-Control", "")


# The sync status follow form -----------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "after=0&queued=253402300800",  # the issue's: year 10000
        "after=0&queued=99999999999999999999999999",
        "after=99999999999999999999999&queued=1",
        "after=-1&queued=1",
        "after=0&queued=" + "9" * 5000,
    ],
)
def test_the_status_fragment_ignores_a_follow_it_cannot_hold(ops_client, query):
    response = ops_client.get(f"/sync/status/?{query}")
    assert response.status_code == 200
    assert 'id="sync-status"' in response.content.decode()
    assert "after=" not in response.content.decode()  # Not following anything.


def test_a_follow_queued_in_the_future_counts_from_now(ops_client):
    # Year 9999 fits a datetime but would keep the header polling for ever;
    # it counts as queued now, so it waits its two minutes like any other.
    finished_sync()
    last = int(datetime.max.replace(microsecond=0, tzinfo=UTC).timestamp())
    response = ops_client.get(f"/sync/status/?after={SyncRun.objects.newest_id()}&queued={last}")
    assert response.status_code == 200
    assert "Sync queued, waiting for a worker" in text(response)
    stamp = int(response.content.decode().split("queued=")[1].split('"')[0])
    assert stamp <= int(datetime.now(UTC).timestamp())
