"""Guards every request and response passes, once for every view (the
admin's included), so no view has to remember them."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils.cache import patch_cache_control

# What no database column takes: PostgreSQL refuses NUL in text, and a lone
# surrogate cannot be encoded at all. Such a character in a path, a query
# string or a header (a cookie is a header) can only reach a lookup as a
# server error, never a match: no stored value holds one.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def refuse_unstorable_input(get_response: Callable[[HttpRequest], HttpResponse]):
    """Answer 400, saying where, to a request whose path, query string or
    headers hold a character no database stores."""

    def middleware(request: HttpRequest) -> HttpResponse:
        where = unstorable_part(request)
        if where is None:
            return get_response(request)
        response = HttpResponseBadRequest(
            f"Bad request: {where} holds a NUL character (%00) or another character "
            "that no batch, sync run or filter can contain. Remove it and try again.\n",
            content_type="text/plain; charset=utf-8",
        )
        patch_cache_control(response, private=True, no_store=True)
        return response

    return middleware


def unstorable_part(request: HttpRequest) -> str | None:
    """Which part of the request holds an unstorable character, if any."""
    if UNSTORABLE.search(request.path_info):
        return "the address"
    for name, values in request.GET.lists():
        if UNSTORABLE.search(name) or any(UNSTORABLE.search(value) for value in values):
            return f"the query string parameter “{UNSTORABLE.sub('?', name)[:50]}”"
    for name, value in request.COOKIES.items():  # Unquoted: a quoted \000 is a NUL.
        if UNSTORABLE.search(name) or UNSTORABLE.search(value):
            return "a cookie"
    for key, value in request.META.items():
        if key.startswith("HTTP_") and isinstance(value, str) and UNSTORABLE.search(value):
            return f"the {key.removeprefix('HTTP_').replace('_', '-').title()} header"
    return None


def private_no_store(get_response: Callable[[HttpRequest], HttpResponse]):
    """Cache-Control: private, no-store on every response a view makes:
    pages, fragments, the CSV and the admin show what only a signed-in
    person may see, and a shared cache or the browser's disk must not keep
    it. Static files are answered before this (WhiteNoise, cached for ever
    under hashed names); a view's own stricter header (never_cache) is
    merged, not replaced."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        patch_cache_control(response, private=True, no_store=True)
        return response

    return middleware
