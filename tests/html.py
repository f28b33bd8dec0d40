"""Reading rendered pages in tests."""

import re


def text(response) -> str:
    """The response's text with tags removed and whitespace squeezed."""
    plain = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", plain)
