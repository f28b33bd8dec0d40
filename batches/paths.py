"""A batch's address: any id Inkit can send, as a path a browser keeps.

Ids are opaque strings (FACTS.md): '#', '?', '%', '&', '+', spaces and any
Unicode are carried by percent-encoding, at /batches/<id>/, the address
every bookmark has. Two kinds of id are not:
- an id with '/': the server decodes %2F before Django resolves the path,
  so /batches/a%2Fb/ reads as two segments;
- '.' and '..': browsers drop or resolve such path segments (the WHATWG URL
  standard), %2e and %2E included, so /batches/../ would open the list.
Those ids live at /batches/~/<escaped>/, with '~', '/' and a whole '.' or
'..' written as ~7E, ~2F and ~2E ("a/b" at /batches/~/a~2Fb/). An ordinary
id has no '/', so it never reads as the two segments an escaped one takes:
neither can open the other's page.

The URL pattern uses BatchIdConverter, so reverse("batch-detail") works for
every id; batch_path() gives the same path without reverse()'s cost, for
the list's rows and the alerts (Batch.get_absolute_url() calls it).
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import quote

from django.conf import settings
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils.http import RFC3986_SUBDELIMS

ESCAPED = "~/"
_ESCAPES = {"~": "~7E", "/": "~2F"}
_UNESCAPES = {"7E": "~", "2F": "/", "2E": "."}
_ESCAPE = re.compile(r"~(..)?", re.DOTALL)
# What reverse() leaves unquoted in a path: RFC 3986's pchar.
PATH_SAFE = RFC3986_SUBDELIMS + "/~:@"


def id_to_url(batch_id: str) -> str:
    """The id as it stands in the path, before percent-encoding."""
    if not batch_id:
        raise ValueError("a batch id is never empty")
    if "/" not in batch_id and batch_id not in (".", ".."):
        return batch_id
    text = "".join(_ESCAPES.get(char, char) for char in batch_id)
    if text in (".", ".."):
        text = "~2E" * len(text)
    return ESCAPED + text


def id_from_url(text: str) -> str:
    """The id a path's (decoded) text stands for; ValueError for an escape
    this module never writes, which Django answers with a 404."""
    if not text.startswith(ESCAPED):
        return text
    escaped = text.removeprefix(ESCAPED)

    def unescape(match: re.Match[str]) -> str:
        code = (match.group(1) or "").upper()
        if code not in _UNESCAPES:
            raise ValueError(f"~{code} is not an escape in a batch's path")
        return _UNESCAPES[code]

    batch_id = _ESCAPE.sub(unescape, escaped)
    if not batch_id:
        raise ValueError("a batch id is never empty")
    return batch_id


class BatchIdConverter:
    """The <batch_id:...> path converter: one segment, or ~/ and one."""

    regex = r"[^/]+|~/[^/]+"

    def to_python(self, value: str) -> str:
        return id_from_url(value)

    def to_url(self, value: str) -> str:
        return id_to_url(value)


def batch_path(batch_id: str) -> str:
    """The detail page's path, exactly what reverse("batch-detail") gives."""
    return _detail_prefix(get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF) + (
        quote(id_to_url(batch_id), safe=PATH_SAFE) + "/"
    )


@lru_cache(maxsize=8)
def _detail_prefix(script_prefix: str, urlconf: str) -> str:
    # reverse() takes tens of microseconds, a list page draws 200 rows; the
    # prefix depends only on the arguments, the cache's key.
    return reverse("batch-detail", args=["-"], urlconf=urlconf).removesuffix("-/")
