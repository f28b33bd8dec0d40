"""The listing's completeness logic (batches/sync/listing.py), table by
table over plain reads: no HTTP, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batches.sync.listing import (
    Order,
    Read,
    Seen,
    Tally,
    between,
    classify,
    planned_segments,
    seen_order,
    verify,
    window,
)

T = datetime(2026, 1, 1, tzinfo=UTC)
ASC, DESC = Order.ASCENDING, Order.DESCENDING


def read(
    page: int,
    numbers: list[int],
    *,
    pages: int = 3,
    total: int | None = None,
    at: int = 0,
    size: int = 3,
    order: Order = ASC,
) -> Read:
    """A read of `page` holding batches b<n> (created n minutes after T),
    served at tick `at` (sent at..., received at+1)."""
    return Read(
        page=page,
        size=size,
        page_count=pages,
        total_count=total if total is not None else pages * size,
        ids=tuple(f"b{n}" for n in numbers),
        created=tuple(T + timedelta(minutes=n) for n in numbers),
        sent=at,
        received=at + 1,
    )


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        ([1, 2, 3], Seen.ASCENDING),
        ([3, 2, 1], Seen.DESCENDING),
        ([1, 1, 2], Seen.ASCENDING),  # ties allowed
        ([2, 2, 2], Seen.AMBIGUOUS),
        ([5], Seen.AMBIGUOUS),
        ([], Seen.AMBIGUOUS),
        ([1, 3, 2], Seen.MIXED),
    ],
)
def test_the_order_a_page_shows(minutes, expected):
    assert seen_order([T + timedelta(minutes=m) for m in minutes]) == expected


# (newer read, older read, order) -> (clean, gap bound)
BOUNDARIES = [
    # Oldest first: upper page served first, no overlap: nothing can slip past.
    ("asc backward abutting", read(3, [7, 8, 9], at=0), read(2, [4, 5, 6], at=5), ASC, True, None),
    # ... but served the other way round, a deletion below could hide one.
    ("asc forward", read(3, [7, 8, 9], at=5), read(2, [4, 5, 6], at=0), ASC, False, None),
    # Served at once (threads): no known order.
    ("asc concurrent", read(3, [7, 8, 9], at=0), read(2, [4, 5, 6], at=0), ASC, False, None),
    # A shared batch joins any two reads, whatever their order.
    ("asc overlap", read(3, [6, 7, 8], at=5), read(2, [4, 5, 6], at=0), ASC, True, None),
    # Newest first, forward, total steady or growing: clean.
    (
        "desc forward",
        read(1, [9, 8, 7], at=0, order=DESC, total=9),
        read(2, [6, 5, 4], at=5, total=9),
        DESC,
        True,
        None,
    ),
    (
        "desc forward grew",
        read(1, [9, 8, 7], at=0, total=9),
        read(2, [6, 5, 4], at=5, total=11),
        DESC,
        True,
        None,
    ),
    # ... total dropped by 2 with no overlap: up to 2 batches may hide.
    (
        "desc forward dropped",
        read(1, [9, 8, 7], at=0, total=9),
        read(2, [5, 4, 3], at=5, total=7),
        DESC,
        False,
        2,
    ),
    (
        "desc backward",
        read(1, [9, 8, 7], at=5, total=9),
        read(2, [6, 5, 4], at=0, total=9),
        DESC,
        False,
        None,
    ),
    (
        "desc overlap after drop",
        read(1, [9, 8, 7], at=0, total=9),
        read(2, [7, 6, 5], at=5, total=7),
        DESC,
        True,
        None,
    ),
    # Not neighbouring pages: nothing is known.
    ("asc not neighbours", read(3, [7, 8, 9], at=0), read(1, [4, 5, 6], at=5), ASC, False, None),
    (
        "desc other page size",
        read(1, [9, 8, 7], at=0),
        read(2, [6, 5, 4, 3], at=5, size=4),
        DESC,
        False,
        None,
    ),
]


@pytest.mark.parametrize(
    ("newer", "older", "order", "clean", "gap"),
    [case[1:] for case in BOUNDARIES],
    ids=[case[0] for case in BOUNDARIES],
)
def test_a_boundary_is_clean_only_when_nothing_can_hide_there(newer, older, order, clean, gap):
    boundary = classify(newer, older, order)
    assert (boundary.clean, boundary.gap_bound) == (clean, gap)
    assert not boundary.out_of_order


def test_pages_that_do_not_abut_in_order_are_reported():
    boundary = classify(read(3, [5, 8, 9], at=0), read(2, [4, 6, 7], at=5), ASC)
    assert boundary.out_of_order


CHAINS = [
    # (name, chain from the newest end, order, problems, suspicious boundaries)
    (
        "asc complete",
        [read(3, [7, 8], at=0), read(2, [4, 5, 6], at=2), read(1, [1, 2, 3], at=4)],
        ASC,
        [],
        0,
    ),
    (
        "asc head not last",
        [read(2, [4, 5, 6], at=2), read(1, [1, 2, 3], at=4)],
        ASC,
        ["the newest end of the listing was not read"],
        0,
    ),
    (
        "asc tail not page 1",
        [read(3, [7, 8], at=0), read(2, [4, 5, 6], at=2)],
        ASC,
        ["the oldest end of the listing was not read"],
        0,
    ),
    (
        "asc seam served concurrently",
        [read(3, [7, 8], at=0), read(2, [4, 5, 6], at=0), read(1, [1, 2, 3], at=4)],
        ASC,
        [],
        1,
    ),
    (
        "desc complete",
        [
            read(1, [9, 8, 7], at=0, total=8),
            read(2, [6, 5, 4], at=2, total=8),
            read(3, [3, 2], at=4, total=8),
        ],
        DESC,
        [],
        0,
    ),
    (
        "desc gap",
        [
            read(1, [9, 8, 7], at=0, total=8),
            read(2, [5, 4, 3], at=2, total=7),
            read(3, [2], at=4, total=7),
        ],
        DESC,
        [],
        1,
    ),
    (
        "desc empty middle",
        [read(1, [9, 8, 7], at=0), read(2, [], at=2), read(3, [3], at=4)],
        DESC,
        ["page 2 of 3 was empty"],
        0,
    ),
    ("mixed page", [read(1, [1, 3, 2], pages=1)], ASC, ["page 1 was not in created_at order"], 0),
    ("wrong way", [read(1, [3, 2, 1], pages=1)], ASC, ["page 1 was not in created_at order"], 0),
    ("one page", [read(1, [1, 2, 3], pages=1)], ASC, [], 0),
    ("empty listing", [read(1, [], pages=1, total=0)], DESC, [], 0),
]


@pytest.mark.parametrize(
    ("chain", "order", "problems", "suspicious"),
    [c[1:] for c in CHAINS],
    ids=[c[0] for c in CHAINS],
)
def test_verify_a_chain_of_reads(chain, order, problems, suspicious):
    verdict = verify(chain, order)
    assert verdict.problems == problems
    assert len(verdict.suspicious) == suspicious
    assert verdict.complete == (not problems and not suspicious)


def test_a_read_spanning_a_boundary_holds_what_slipped_between():
    newer = read(1, [9, 8, 7], total=9)
    older = read(2, [4, 3, 2], total=7)
    spanning = read(1, [8, 7, 6, 5, 4], size=5)
    assert between(spanning, newer, older, DESC) == ["b6", "b5"]
    assert between(read(1, [8, 7, 6]), newer, older, DESC) is None  # Only one side.
    asc_newer, asc_older = read(3, [7, 8, 9]), read(2, [2, 3, 4])
    assert between(read(2, [3, 4, 5, 6, 7], size=5), asc_newer, asc_older, ASC) == ["b5", "b6"]


@pytest.mark.parametrize(
    ("low", "high", "largest", "expected"),
    [
        (0, 5, 100, (1, 100)),
        (95, 104, 100, (2, 55)),  # straddles 100-wide pages: a narrower one holds both
        (10, 10, 1, (11, 1)),
        (0, 200, 100, None),  # wider than any page
        (5, 3, 100, None),
    ],
)
def test_a_window_page_holds_both_positions(low, high, largest, expected):
    found = window(low, high, largest)
    if expected is None:
        assert found is None
        return
    page, size = found
    assert size <= largest
    assert (page - 1) * size <= low and high < page * size


def test_a_read_keeps_only_the_ends_of_its_page():
    full = read(1, list(range(100)), size=100)
    assert full.count == 100 and len(full.ids) == 24
    assert full.index_of("b0") == 0 and full.index_of("b99") == 99 and full.index_of("b50") is None
    # A re-read shifted by fewer than the ends it keeps still overlaps.
    assert full.overlaps(read(1, list(range(11, 111)), size=100))
    assert not full.overlaps(read(1, list(range(40, 140)), size=100))


def test_seen_batches_tell_a_copy_read_again():
    from batches.sync.listing import SeenBatches

    seen = SeenBatches()
    seen.RECENT = 3  # Merged into the sorted array every 3.
    assert seen.add("rb_1") and not seen.add("rb_1")
    assert "rb_1" in seen and "rb_2" not in seen
    for n in range(2, 11):
        assert seen.add(f"rb_{n}")
    assert not any(seen.add(f"rb_{n}") for n in range(1, 11))  # Long after, still known.
    seen.freeze()
    assert len(seen) == 10 and all(f"rb_{n}" in seen for n in range(1, 11))


def test_segments_cover_every_page_once_in_order():
    assert planned_segments(1, 10, 4) == [[1, 2, 3], [4, 5, 6], [7, 8], [9, 10]]
    assert planned_segments(2, 3, 8) == [[2], [3]]
    assert planned_segments(2, 1, 4) == []


def test_the_note_is_one_sentence_with_counts():
    tally = Tally(
        pages=1012,
        rounds=3,
        boundaries_rechecked=2,
        created_while_reading=4,
        total_at_start=100_000,
        total_at_end=100_003,
    )
    assert tally.sentence(complete=True, gone=0) == (
        "Read 1,012 pages in 3 rounds; 4 batches created while it read; about 1 deleted while it "
        "read; 2 page boundaries re-checked; complete."
    )
    assert tally.sentence(complete=False, gone=0, reason="page 3 was empty").endswith(
        "completeness not verified: page 3 was empty."
    )
