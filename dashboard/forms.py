"""The batch list's query string, validated.

Two kinds of parameters, treated differently on bad input:
- filters (q, status, destination, destination_status, created_after,
  created_before, stuck, failed, and the triage panel's stuck_soon, overdue,
  recent_failures and attention) decide which batches are shown: ignoring a
  bad one would show the wrong set, so it is an error (400) naming it;
- view parameters (sort, page, page_size) only shape the view: a bad one
  falls back to the nearest sensible value and leaves a notice.
The same form serves the list page and the CSV export.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from django import forms
from django.core.validators import ProhibitNullCharactersValidator
from django.http import QueryDict
from django.utils import timezone

from batches.models import BATCH_SORT_KEYS, Batch, BatchQuerySet

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
DEFAULT_SORT = "-created_at"
# Beyond this, page numbers are nonsense rather than deep paging.
MAX_PAGE = 1_000_000

# The sort menu (the headings do the same on wide screens): each key, and
# the direction people mean by it first.
SORT_CHOICES = (
    ("-created_at", "Newest first"),
    ("created_at", "Oldest first"),
    ("last_progress_at", "Longest without progress"),
    ("-failure_rate", "Worst failure rate"),
    ("-failed", "Most failed"),
    ("-in_progress", "Most in progress"),
    ("-completed", "Most completed"),
    ("-total", "Most documents"),
    ("total", "Fewest documents"),
    ("name", "Name A–Z"),
    ("-name", "Name Z–A"),
    ("status", "Status A–Z"),
    ("-last_progress_at", "Latest progress"),
    ("failure_rate", "Best failure rate"),
    ("failed", "Fewest failed"),
    ("completed", "Fewest completed"),
    ("in_progress", "Fewest in progress"),
    ("-status", "Status Z–A"),
)

# The order parameters appear in canonical URLs.
PARAMETERS = (
    "q",
    "status",
    "destination",
    "destination_status",
    "created_after",
    "created_before",
    "stuck",
    "failed",
    "stuck_soon",
    "overdue",
    "recent_failures",
    "attention",
    "sort",
    "page_size",
    "page",
)


class RepeatedTextField(forms.Field):
    """A parameter that may be given several times (status=A&status=B).
    Statuses are data (Inkit may add some), so there is no list to check
    against: only length, count and no NUL characters."""

    widget = forms.MultipleHiddenInput  # reads every value, not just the last

    def __init__(self, *, max_length: int, max_values: int, **kwargs: Any):
        self.max_length = max_length
        self.max_values = max_values
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> list[str]:
        values = value if isinstance(value, (list, tuple)) else [value] if value else []
        cleaned: list[str] = []
        for item in values:
            text = str(item).strip()
            if text and text not in cleaned:
                cleaned.append(text)
        return cleaned

    def validate(self, value: list[str]) -> None:
        super().validate(value)
        if len(value) > self.max_values:
            raise forms.ValidationError(f"give at most {self.max_values} values")
        for item in value:
            if len(item) > self.max_length:
                raise forms.ValidationError(f"a value is longer than {self.max_length} characters")
            ProhibitNullCharactersValidator()(item)


class FlagField(forms.ChoiceField):
    """stuck=1 / failed=1: on when 1, off when 0 or absent."""

    def __init__(self, **kwargs: Any):
        super().__init__(choices=[("", ""), ("1", "1"), ("0", "0")], required=False, **kwargs)
        self.error_messages["invalid_choice"] = "use 1 (or leave it out)"

    def clean(self, value: Any) -> bool:
        return super().clean(value) == "1"


class BatchListForm(forms.Form):
    q = forms.CharField(required=False, max_length=200)
    status = RepeatedTextField(required=False, max_length=100, max_values=20)
    destination = forms.CharField(required=False, max_length=100)
    destination_status = forms.CharField(required=False, max_length=100)
    created_after = forms.DateField(required=False, input_formats=["%Y-%m-%d"])
    created_before = forms.DateField(required=False, input_formats=["%Y-%m-%d"])
    stuck = FlagField()
    failed = FlagField()
    # The triage panel's views (BatchQuerySet.stuck_soon(), overdue(),
    # finished_with_failures() and needs_attention()).
    stuck_soon = FlagField()
    overdue = FlagField()
    recent_failures = FlagField()
    attention = FlagField()
    sort = forms.CharField(required=False)
    page = forms.CharField(required=False)
    page_size = forms.CharField(required=False)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # What the view changed about a bad view parameter, said on the page.
        self.notices: list[str] = []

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        after, before = data.get("created_after"), data.get("created_before")
        if after and before and after >= before:
            self.add_error("created_before", "must be a later date than created_after")
        if data.get("destination_status") and not data.get("destination"):
            self.add_error("destination_status", "give a destination too: it is that destination's status")
        return data

    # View parameters: never an error, the nearest sensible value instead.

    def clean_sort(self) -> str:
        raw = self.cleaned_data["sort"].strip()
        if not raw:
            return DEFAULT_SORT
        if raw.removeprefix("-") in BATCH_SORT_KEYS:
            return raw
        self.notices.append(
            f"There is no sort “{raw[:50]}”; sorted newest first instead. "
            f"Sort keys: {', '.join(BATCH_SORT_KEYS)}, each with - for descending."
        )
        return DEFAULT_SORT

    def clean_page(self) -> int:
        raw = self.cleaned_data["page"].strip()
        if not raw:
            return 1
        # Length first (MAX_PAGE has 7 digits): int() refuses 4,300 or more.
        if raw.isascii() and raw.isdigit() and len(raw) <= 7 and 1 <= int(raw) <= MAX_PAGE:
            return int(raw)
        self.notices.append(f"“{raw[:50]}” is not a page number; showing the first page.")
        return 1

    def clean_page_size(self) -> int:
        raw = self.cleaned_data["page_size"].strip()
        if not raw:
            return DEFAULT_PAGE_SIZE
        if raw.isascii() and raw.isdigit() and len(raw) <= 9:
            wanted = int(raw)
            if wanted in PAGE_SIZES:
                return wanted
            nearest = min(PAGE_SIZES, key=lambda size: abs(size - wanted))
        else:
            nearest = DEFAULT_PAGE_SIZE
        self.notices.append(
            f"Page size “{raw[:50]}” is not offered; showing {nearest} rows "
            f"(choose {', '.join(map(str, PAGE_SIZES))})."
        )
        return nearest

    # Reading the valid form.

    @property
    def sort_key(self) -> str:
        return self.cleaned_data["sort"].removeprefix("-")

    @property
    def descending(self) -> bool:
        return self.cleaned_data["sort"].startswith("-")

    def problems(self) -> list[str]:
        """The errors as "parameter: message" lines, for the 400 page."""
        return [
            f"{name}: {' '.join(messages)}" if name != "__all__" else " ".join(messages)
            for name, messages in self.errors.items()
        ]

    def batches(self, now: datetime | None = None) -> BatchQuerySet:
        """The batches this query string asks for, filtered and sorted."""
        data = self.cleaned_data
        batches = Batch.objects.present()
        if data["status"]:
            batches = batches.with_status(*data["status"])
        if data["destination"]:
            # failed=1 with a destination means failed there, not anywhere.
            batches = batches.with_destination(
                data["destination"],
                status=data["destination_status"] or None,
                failing=data["failed"],
            )
        elif data["failed"]:
            batches = batches.with_failures()
        if data["q"]:
            batches = batches.search(data["q"])
        batches = batches.created_between(
            _start_of(data["created_after"]), _start_of(data["created_before"])
        )
        if data["stuck"]:
            batches = batches.stuck(now)
        if data["stuck_soon"]:
            batches = batches.stuck_soon(now)
        if data["overdue"]:
            batches = batches.overdue(now)
        if data["recent_failures"]:
            batches = batches.finished_with_failures(now)
        if data["attention"]:
            batches = batches.needs_attention(now)
        return batches.sorted_by(self.sort_key, self.descending)

    def query(self, page: int = 1) -> QueryDict:
        """The canonical query string of this view on the given page:
        cleaned values in a fixed order, defaults left out."""
        data = self.cleaned_data
        query = QueryDict(mutable=True)
        for name in PARAMETERS:
            value = page if name == "page" else data.get(name)
            if name == "status":
                query.setlist(name, value)
            elif isinstance(value, date):
                query[name] = value.isoformat()
            elif value is True:
                query[name] = "1"
            elif name == "sort" and value == DEFAULT_SORT:
                continue
            elif name == "page_size" and value == DEFAULT_PAGE_SIZE:
                continue
            elif name == "page" and value == 1:
                continue
            elif value not in (None, "", False):
                query[name] = str(value)
        return query

    @property
    def filtered(self) -> bool:
        """True when any filter (not just sorting or paging) is applied."""
        data = self.cleaned_data
        return any(data[name] for name in PARAMETERS[: PARAMETERS.index("sort")])


def _start_of(day: date | None) -> datetime | None:
    """Midnight starting the day, in the site's time zone (UTC)."""
    if day is None:
        return None
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


# The last second a datetime can hold (9999-12-31 23:59:59 UTC).
MAX_TIMESTAMP = int(datetime.max.replace(microsecond=0, tzinfo=UTC).timestamp())


class SyncFollowForm(forms.Form):
    """/sync/status/?after=<run id>&queued=<unix time>: the header following
    a "Sync now" that was queued when run `after` was the newest."""

    after = forms.IntegerField(min_value=0, max_value=2**63 - 1)
    queued = forms.IntegerField(min_value=0, max_value=MAX_TIMESTAMP)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "queued" in data:
            # Never later than now: a sync is not queued in the future, and a
            # link claiming one would keep the header polling for ever.
            queued_at = datetime.fromtimestamp(data.pop("queued"), UTC)
            data["queued_at"] = min(queued_at, timezone.now())
        return data
