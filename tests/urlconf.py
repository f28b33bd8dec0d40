"""Every URL pattern the app serves (the admin's included), walked from the
URLconf itself, so a test over "every view" also covers the next one added."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

from django.urls import get_resolver, resolve
from django.urls.resolvers import RegexPattern, URLPattern, URLResolver

_ROUTE_PARAMETER = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")
_REGEX_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>[^)]*\)")


@dataclass(frozen=True)
class Route:
    pattern: str  # as the URLconf spells it, for test ids
    name: str | None
    view: Callable

    def path(self, fill: Callable[[Route, str], str]) -> str:
        """A path to this route, each parameter given fill(route, name),
        percent-encoded as a browser sends it."""
        if self.is_regex:
            template = self.pattern.replace("^", "").replace("$", "")
            filled = _REGEX_GROUP.sub(lambda m: quote(fill(self, m["name"]), safe=""), template)
        else:
            filled = _ROUTE_PARAMETER.sub(
                lambda m: quote(fill(self, m["name"]), safe=""), self.pattern
            )
        return "/" + filled

    @property
    def is_regex(self) -> bool:
        return "(?P<" in self.pattern or self.pattern.endswith("$")

    @property
    def parameters(self) -> list[str]:
        found = _REGEX_GROUP if self.is_regex else _ROUTE_PARAMETER
        return [match["name"] for match in found.finditer(self.pattern)]


def routes() -> list[Route]:
    """Every URL pattern, in URLconf order."""
    return list(_walk(get_resolver().url_patterns, ""))


def _walk(patterns, prefix: str) -> Iterator[Route]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + _text(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield Route(prefix + _text(entry.pattern), entry.name, entry.callback)


def _text(pattern) -> str:
    return pattern.regex.pattern if isinstance(pattern, RegexPattern) else str(pattern)


def resolves_to(path: str, route: Route) -> bool:
    """Whether the (decoded) path reaches this route's view."""
    from urllib.parse import unquote

    return resolve(unquote(path)).func is route.view
