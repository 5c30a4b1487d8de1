"""Business hours: when a tenant (or one of its queues) is open, and the pure computation of
open or closed at an instant and of the next change.

A schedule is read in its own time zone's wall time. Each day has up to three intervals
``HH:MM-HH:MM`` (``24:00`` may end one); a holiday replaces its day's intervals with its own
(none: closed all day). Every boundary is a local wall time turned into an instant with
``zoneinfo``:

- a wall time that does not exist (skipped by a spring-forward gap) moves to the first
  instant after the gap (so an opening at 00:00 on Brazil's 2018-11-04 opens at 01:00 -02);
- a wall time that occurs twice (a fall-back) is its first occurrence.

Openings that touch join, whatever their days: 22:00-24:00 on Saturday and 00:00-02:00 on
Sunday are one opening, so nothing closes at midnight. The functions never read the clock
(``at`` is always given, with a UTC offset) and look at most ``HORIZON_DAYS`` ahead (or back).
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from nudge.models.messages import MessageTemplate
from nudge.models.template_context import CONTACT_NAMES, unknown_names
from nudge.models.validation import Problem, located_errors

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MAX_INTERVALS = 3
MAX_HOLIDAYS = 400
# How far ahead next_open and next_close are looked for (more than a year, so a yearly
# holiday is always seen), and how far back a closed period's start is.
HORIZON_DAYS = 400
# The instants the functions take (a ValueError else): far enough from datetime's ends that
# a horizon around them never overflows.
EARLIEST_AT = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_AT = datetime(9000, 1, 1, tzinfo=UTC)

INTERVAL = r"^(([01][0-9]|2[0-3]):[0-5][0-9])-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
HOLIDAY_DATE = r"^([0-9]{2})/([0-9]{2})(/([0-9]{4}))?$"
HOLIDAY_TEXT = r"^([0-9]{2}/[0-9]{2}(/[0-9]{4})?) +- +(\S.{0,99})$"
# What ZoneInfo finds beside the IANA zones: the machine's own zone and a tzfile helper.
_NOT_IANA = frozenset({"localtime", "posixrules", "Factory"})

Span = tuple[int, int]  # minutes since local midnight: [start, end), end up to 1440
Opening = tuple[datetime, datetime]  # [start, end) in UTC


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Parsing ----------------------------------------------------------------------------------


def interval_span(text: str) -> Span:
    """``"08:00-12:30"`` as minutes since midnight, ``(480, 750)``."""
    match = re.fullmatch(INTERVAL, text)
    if match is None:
        raise ValueError(f"{text!r} is not HH:MM-HH:MM between 00:00 and 24:00")
    start, end = (_minutes(part) for part in (match.group(1), match.group(3)))
    if start >= end:
        raise ValueError(f"{text!r} must start before it ends")
    return start, end


def _minutes(hh_mm: str) -> int:
    hours, minutes = hh_mm.split(":")
    return int(hours) * 60 + int(minutes)


def _checked_interval(text: str) -> str:
    interval_span(text)
    return text


def overlap_problems(intervals: list[str]) -> list[Problem]:
    """A problem at each interval (by position) that overlaps one before it; touching is fine."""
    spans = [interval_span(text) for text in intervals]
    problems: list[Problem] = []
    for i, (start, end) in enumerate(spans):
        for j in range(i):
            if start < spans[j][1] and spans[j][0] < end:
                message = f"{intervals[i]!r} overlaps {intervals[j]!r}"
                problems.append(((i,), "overlap", message, intervals[i]))
                break
    return problems


@dataclass(frozen=True)
class HolidayDate:
    """A holiday's day: every year (``year`` None) or one date."""

    month: int
    day: int
    year: int | None = None

    def text(self) -> str:
        return f"{self.day:02}/{self.month:02}" + (f"/{self.year:04}" if self.year else "")


def holiday_date(text: str) -> HolidayDate:
    """``"25/12"`` (every year) or ``"01/01/2027"`` (that day); a day that no calendar has
    (31/02, 29/02/2027) is a ValueError. 29/02 every year holds in leap years only."""
    match = re.fullmatch(HOLIDAY_DATE, text)
    if match is None:
        raise ValueError(f"{text!r} is not DD/MM or DD/MM/YYYY")
    day, month = int(match.group(1)), int(match.group(2))
    year = int(match.group(4)) if match.group(4) else None
    try:
        date(year or 2000, month, day)  # 2000 is a leap year: 29/02 exists
    except ValueError:
        raise ValueError(f"{text!r} is not a day of the calendar") from None
    return HolidayDate(month, day, year)


def holiday_text(text: str) -> tuple[HolidayDate, str]:
    """``"25/12 - Navidad"`` as its date and name."""
    match = re.fullmatch(HOLIDAY_TEXT, text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not 'DD/MM - Name' or 'DD/MM/YYYY - Name'")
    return holiday_date(match.group(1)), match.group(3).strip()


@cache
def _iana_zones() -> frozenset[str]:
    # Read from the system's tz database once; the names do not change while a process runs.
    return frozenset(zoneinfo.available_timezones()) - _NOT_IANA


def _iana_zone(name: str) -> str:
    if name not in _iana_zones():
        raise ValueError(f"{name!r} is not an IANA time zone such as 'America/Sao_Paulo'")
    return name


# The schedule as written ------------------------------------------------------------------

Interval = Annotated[
    str,
    Field(
        max_length=11,
        json_schema_extra={"pattern": INTERVAL},
        examples=["08:00-12:00"],
        description="`HH:MM-HH:MM` in local time, between 00:00 and 24:00, start before end.",
    ),
    AfterValidator(_checked_interval),
]
DayHours = Annotated[list[Interval], Field(max_length=MAX_INTERVALS)]


class Week(_Strict):
    """Each weekday's open intervals (up to three, not overlapping); a day left out is closed."""

    monday: DayHours = []
    tuesday: DayHours = []
    wednesday: DayHours = []
    thursday: DayHours = []
    friday: DayHours = []
    saturday: DayHours = []
    sunday: DayHours = []

    @field_validator(*WEEKDAYS)
    @classmethod
    def _no_overlaps(cls, intervals: list[str]) -> list[str]:
        problems = overlap_problems(intervals)
        if problems:
            raise located_errors(cls.__name__, problems)
        return intervals

    def is_empty(self) -> bool:
        return not any(getattr(self, day) for day in WEEKDAYS)


def _checked_holiday_date(text: str) -> str:
    holiday_date(text)
    return text


class Holiday(_Strict):
    """A holiday written out, which may keep some hours open that day."""

    date: Annotated[
        str,
        Field(max_length=10, json_schema_extra={"pattern": HOLIDAY_DATE}, examples=["24/12"]),
        AfterValidator(_checked_holiday_date),
    ] = Field(description="`DD/MM` every year, or `DD/MM/YYYY` that year only.")
    name: Annotated[str, Field(min_length=1, max_length=100)]
    open: DayHours = Field(
        default=[], description="Open these hours that day instead of the week's; none: closed."
    )

    @field_validator("open")
    @classmethod
    def _no_overlaps(cls, intervals: list[str]) -> list[str]:
        problems = overlap_problems(intervals)
        if problems:
            raise located_errors(cls.__name__, problems)
        return intervals


def holiday_of(entry: str | Holiday) -> tuple[HolidayDate, str, list[str]]:
    """A holiday entry's date, name and open intervals, whichever way it was written."""
    if isinstance(entry, Holiday):
        return holiday_date(entry.date), entry.name, entry.open
    when, name = holiday_text(entry)
    return when, name, []


def _holiday_entry(value: Any) -> str | Holiday:
    """One entry of `holidays`, checked in one place so that its errors sit at the entry
    (a plain union would report each branch's failure under the branch's name)."""
    if isinstance(value, Holiday):
        return value
    if isinstance(value, dict):
        return Holiday.model_validate(value)
    if not isinstance(value, str):
        raise ValueError("a holiday is 'DD/MM - Name' or an object with `date` and `name`")
    if len(value) > 120:
        raise ValueError("a holiday is at most 120 characters")
    holiday_text(value)
    return value


_HolidayText = Annotated[
    str,
    Field(
        max_length=120,
        json_schema_extra={"pattern": HOLIDAY_TEXT},
        examples=["25/12 - Navidad", "01/01/2027 - Año nuevo"],
        description="`DD/MM - Name` (every year) or `DD/MM/YYYY - Name` (that year only).",
    ),
]
# The union only sees what `_holiday_entry` let through: a checked text or a Holiday.
HolidayEntry = Annotated[_HolidayText | Holiday, BeforeValidator(_holiday_entry)]


def _duplicate_holidays(holidays: list[str | Holiday]) -> list[Problem]:
    """A problem at each entry on a day an entry before it has (a yearly and a dated one
    may share a day: the dated one is the more specific)."""
    problems: list[Problem] = []
    seen: dict[HolidayDate, int] = {}
    for i, entry in enumerate(holidays):
        when, _, _ = holiday_of(entry)
        if when in seen:
            message = f"entry {seen[when]} is on {when.text()} already"
            problems.append(((i,), "duplicate_holiday", message, entry))
        seen.setdefault(when, i)
    return problems


class ClosedMessage(_Strict):
    """A message sent while closed (or when it opens again); templates see `contact`."""

    enabled: bool = False
    message: MessageTemplate | None = None

    @model_validator(mode="after")
    def _usable(self) -> ClosedMessage:
        problems: list[Problem] = []
        if self.enabled and self.message is None:
            problems.append((("message",), "missing", "an enabled message needs `message`", None))
        if self.message is not None:
            problems += unknown_names(self.message, CONTACT_NAMES)
        if problems:
            raise located_errors(type(self).__name__, problems)
        return self


BUSINESS_HOURS_EXAMPLE: dict[str, Any] = {
    "timezone": "America/Sao_Paulo",
    "always_open": False,
    "week": {
        "monday": ["08:00-12:00", "13:00-18:00"],
        "tuesday": ["08:00-18:00"],
        "saturday": ["22:00-24:00"],
        "sunday": ["00:00-02:00"],
    },
    "holidays": [
        "25/12 - Navidad",
        "01/01/2027 - Año nuevo",
        {"date": "24/12", "name": "Nochebuena", "open": ["08:00-12:00"]},
    ],
    "unavailable_message": {
        "enabled": True,
        "message": {
            "kind": "text",
            "text": "We are closed. Shall we tell you when we open? (yes/no)",
        },
    },
    "notify_when_available": {
        "enabled": True,
        "message": {
            "kind": "whatsapp_template",
            "template": {"name": "atendimento_esta_disponivel", "language": "pt_BR"},
        },
    },
    "absence": {"enabled": False},
}


class BusinessHoursPut(_Strict):
    """A schedule as an admin writes it (the body of PUT)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [BUSINESS_HOURS_EXAMPLE]}
    )

    timezone: Annotated[str, Field(max_length=64), AfterValidator(_iana_zone)] = Field(
        description="An IANA time zone, e.g. `America/Sao_Paulo`; hours are its wall time."
    )
    always_open: bool = Field(
        default=False, description="Open 24 hours every day; then no `week` and no `holidays`."
    )
    week: Week = Field(default_factory=Week)
    holidays: Annotated[list[HolidayEntry], Field(max_length=MAX_HOLIDAYS)] = Field(
        default=[],
        description="Closed those days, or open only a holiday's own `open` hours; a dated"
        " holiday and a yearly one may share a day (the dated one counts).",
    )
    unavailable_message: ClosedMessage = Field(
        default_factory=ClosedMessage, description="Sent to a contact who writes while closed."
    )
    notify_when_available: ClosedMessage = Field(
        default_factory=ClosedMessage,
        description="Sent when it opens again to contacts who asked to be told.",
    )
    absence: ClosedMessage = Field(
        default_factory=ClosedMessage,
        description="Sent while enabled, whatever the hours (an absence of some length).",
    )

    @field_validator("holidays")
    @classmethod
    def _one_a_day(cls, holidays: list[str | Holiday]) -> list[str | Holiday]:
        problems = _duplicate_holidays(holidays)
        if problems:
            raise located_errors(cls.__name__, problems)
        return holidays

    @model_validator(mode="after")
    def _always_open_alone(self) -> BusinessHoursPut:
        # As in the product it follows: 24 hours leaves nothing for a week or holidays to say,
        # so a schedule that has them too is refused rather than half ignored.
        problems: list[Problem] = []
        if self.always_open and not self.week.is_empty():
            message = "an `always_open` schedule has no `week`"
            problems.append((("week",), "always_open", message, None))
        if self.always_open and self.holidays:
            message = "an `always_open` schedule has no `holidays`"
            problems.append((("holidays",), "always_open", message, None))
        if problems:
            raise located_errors(type(self).__name__, problems)
        return self


class BusinessHoursPublic(BusinessHoursPut):
    """A stored schedule."""

    id: str
    updated_at: datetime


class HoursStatus(BaseModel):
    """Open or closed at an instant, and the next change (times in the schedule's zone)."""

    open: bool
    reason: str | None = Field(
        default=None, description="`holiday <name>` when closed on a holiday; else null."
    )
    next_open: datetime | None = Field(
        default=None,
        description="When it opens next; null while open, and when it opens in no day of"
        f" the next {HORIZON_DAYS}.",
    )
    next_close: datetime | None = Field(
        default=None,
        description="When the opening `at` is in (or, while closed, the next one) ends; null"
        f" for `always_open`, and when it does not end in the next {HORIZON_DAYS} days.",
    )


# The computation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Holiday:
    name: str
    hours: tuple[Span, ...]  # open that day instead of the week's hours (none: closed)


@dataclass(frozen=True)
class _Calendar:
    """A schedule parsed for computing: spans by weekday and holidays by day."""

    zone: zoneinfo.ZoneInfo
    week: tuple[tuple[Span, ...], ...]  # by date.weekday(), Monday first
    yearly: dict[tuple[int, int], _Holiday]  # (month, day)
    dated: dict[date, _Holiday]

    def holiday(self, day: date) -> _Holiday | None:
        # A dated holiday is the more specific: it wins over a yearly one on its day.
        return self.dated.get(day) or self.yearly.get((day.month, day.day))

    def hours(self, day: date) -> tuple[Span, ...]:
        holiday = self.holiday(day)
        return holiday.hours if holiday is not None else self.week[day.weekday()]


def _spans(intervals: list[str]) -> tuple[Span, ...]:
    return tuple(sorted(interval_span(text) for text in intervals))


def _calendar(schedule: BusinessHoursPut) -> _Calendar:
    yearly: dict[tuple[int, int], _Holiday] = {}
    dated: dict[date, _Holiday] = {}
    for entry in schedule.holidays:
        when, name, intervals = holiday_of(entry)
        holiday = _Holiday(name, _spans(intervals))
        if when.year is None:
            yearly[(when.month, when.day)] = holiday
        else:
            dated[date(when.year, when.month, when.day)] = holiday
    week = tuple(_spans(getattr(schedule.week, day)) for day in WEEKDAYS)
    return _Calendar(zoneinfo.ZoneInfo(schedule.timezone), week, yearly, dated)


def wall_to_utc(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The instant a naive local wall time names in ``zone``: a time skipped by a gap moves
    to the first instant after the gap, a time that occurs twice is its first occurrence."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)  # fold=0: the first occurrence
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    return _end_of_gap(wall, zone)


def _end_of_gap(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The instant a gap that skips ``wall`` ends: where the offset changes, found by halving
    (zoneinfo does not tell its transitions; they fall on whole seconds of POSIX time)."""
    # In a gap, fold=1 reads the wall time with the later offset, which puts it before the
    # change, and fold=0 with the earlier one, after it.
    before = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    after = int(wall.replace(tzinfo=zone, fold=0).timestamp())
    new_offset = _offset_at(after, zone)
    while after - before > 1:
        middle = (before + after) // 2
        if _offset_at(middle, zone) == new_offset:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, UTC)


def _offset_at(timestamp: int, zone: zoneinfo.ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(timestamp, zone).utcoffset()


def _day_openings(calendar: _Calendar, day: date) -> Iterator[Opening]:
    """The openings of one local day, in order (a span ending at 24:00 ends at next midnight)."""
    midnight = datetime.combine(day, time())
    for start, end in calendar.hours(day):
        opening = (
            wall_to_utc(midnight + timedelta(minutes=start), calendar.zone),
            wall_to_utc(midnight + timedelta(minutes=end), calendar.zone),
        )
        if opening[0] < opening[1]:  # a span inside a gap has no instant at all
            yield opening


def _openings(calendar: _Calendar, first_day: date, days: int) -> Iterator[Opening]:
    """The openings of ``days`` local days from ``first_day``, those that touch joined."""
    current: Opening | None = None
    for n in range(days):
        for start, end in _day_openings(calendar, first_day + timedelta(days=n)):
            if current is not None and start <= current[1]:
                current = (current[0], max(current[1], end))
                continue
            if current is not None:
                yield current
            current = (start, end)
    if current is not None:
        yield current


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a time needs a UTC offset")
    instant = at.astimezone(UTC)
    if not EARLIEST_AT <= instant < LATEST_AT:
        raise ValueError(f"a time between {EARLIEST_AT.year} and {LATEST_AT.year - 1}")
    return instant


def _local_day(calendar: _Calendar, at: datetime) -> date:
    return at.astimezone(calendar.zone).date()


def _horizon_end(calendar: _Calendar, at: datetime) -> datetime:
    """Where the forward search stops: an opening reaching it may go on beyond."""
    last = _local_day(calendar, at) + timedelta(days=HORIZON_DAYS)
    return wall_to_utc(datetime.combine(last, time()), calendar.zone)


def _first_opening_ending_after(calendar: _Calendar, at: datetime) -> Opening | None:
    """The opening ``at`` is in, else the next one; None when none within the horizon."""
    # From the day before: an opening that began yesterday may still be going on.
    first_day = _local_day(calendar, at) - timedelta(days=1)
    for opening in _openings(calendar, first_day, HORIZON_DAYS + 1):
        if opening[1] > at:
            return opening
    return None


def _reason(calendar: _Calendar, at: datetime) -> str | None:
    holiday = calendar.holiday(_local_day(calendar, at))
    return f"holiday {holiday.name}" if holiday is not None else None


def status_at(schedule: BusinessHoursPut, at: datetime) -> HoursStatus:
    """Open or closed at ``at`` (which has a UTC offset), why when closed on a holiday, and
    the next opening and closing; times are given in the schedule's zone."""
    at = _utc(at)
    if schedule.always_open:
        return HoursStatus(open=True)
    calendar = _calendar(schedule)
    opening = _first_opening_ending_after(calendar, at)
    if opening is None:
        return HoursStatus(open=False, reason=_reason(calendar, at))
    start, end = (moment.astimezone(calendar.zone) for moment in opening)
    next_close = end if opening[1] < _horizon_end(calendar, at) else None
    if opening[0] <= at:
        return HoursStatus(open=True, next_close=next_close)
    return HoursStatus(
        open=False, reason=_reason(calendar, at), next_open=start, next_close=next_close
    )


def openings_between(
    schedule: BusinessHoursPut, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The openings within [start, end), in UTC, cut at both ends; openings that touch
    (across midnight or between days) are one."""
    start, end = _utc(start), _utc(end)
    if start >= end:
        return []
    if schedule.always_open:
        return [(start, end)]
    calendar = _calendar(schedule)
    first_day = _local_day(calendar, start) - timedelta(days=1)
    days = (_local_day(calendar, end) - first_day).days + 1
    return [
        (max(opening[0], start), min(opening[1], end))
        for opening in _openings(calendar, first_day, days)
        if opening[0] < end and opening[1] > start
    ]


def next_opening_after(schedule: BusinessHoursPut, at: datetime) -> datetime | None:
    """The first instant from ``at`` on when it is open, in UTC: ``at`` itself while open;
    None when it does not open within the horizon."""
    at = _utc(at)
    if schedule.always_open:
        return at
    opening = _first_opening_ending_after(_calendar(schedule), at)
    if opening is None:
        return None
    return max(opening[0], at)


def closed_period_start(schedule: BusinessHoursPut, at: datetime) -> datetime | None:
    """When the closure ``at`` is in began (the end of the last opening), in UTC: the same
    instant for every moment of one closed period. None while open, and when nothing was
    open in the horizon before ``at`` (closed for longer than that, or never open)."""
    at = _utc(at)
    if schedule.always_open:
        return None
    calendar = _calendar(schedule)
    opening = _first_opening_ending_after(calendar, at)
    if opening is not None and opening[0] <= at:
        return None
    today = _local_day(calendar, at)
    for n in range(HORIZON_DAYS + 1):
        # Days end one after another, so the first day (going back) with an opening over by
        # `at` has the latest end; `at` being closed, what ends there is not joined past it.
        ends = [end for _, end in _day_openings(calendar, today - timedelta(days=n)) if end <= at]
        if ends:
            return max(ends)
    return None
