"""CappedPage: where a page sits in a result counted up to a cap."""

from __future__ import annotations

import pytest

from dashboard.paging import CappedPage


@pytest.mark.parametrize(
    ("requested", "found", "expected"),
    [(1, 0, 1), (3, 120, 3), (4, 120, 3), (99, 120, 3), (0, 120, 1), (9, 501, 9), (11, 501, 10)],
)
def test_it_clamps_to_the_pages_that_exist_within_the_cap(requested, found, expected):
    assert CappedPage.clamp(requested, 50, found, cap=500).number == expected


def test_it_knows_the_rows_it_shows_and_whether_it_was_capped():
    page = CappedPage.clamp(10, 50, 501, cap=500)
    assert (page.first_row, page.last_row, page.capped, page.count) == (451, 500, True, 10)
    page = CappedPage.clamp(1, 50, 0, cap=500)
    assert (page.first_row, page.last_row, page.capped, page.count) == (0, 0, False, 1)
    page = CappedPage.clamp(2, 25, 30, cap=500)
    assert (page.offset, page.first_row, page.last_row, page.has_next, page.has_previous) == (25, 26, 30, False, True)


def test_it_offers_nearby_page_numbers_with_gaps():
    assert CappedPage.clamp(10, 10, 500, cap=500).nearby() == [1, None, 8, 9, 10, 11, 12, None, 50]
    assert CappedPage.clamp(1, 50, 120, cap=500).nearby() == [1, 2, 3]
