"""Business hours: the rules of a schedule (422s at the field and entry), the computation of
open or closed and the next change (midnight, weekends, holidays, daylight-saving changes in
Europe/Madrid and in Brazil's 2018), and the API (CRUD, status, tenants, deletion refused
while something uses the schedule)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nudge.models.business_hours import (
    BUSINESS_HOURS_EXAMPLE,
    BusinessHoursPut,
    HoursStatus,
    closed_period_start,
    next_opening_after,
    openings_between,
    status_at,
)
from nudge.models.db import transaction
from nudge.models.tables import FollowUp, FollowUpVersion, Journey, JourneyVersion
from tests.conftest import TenantKeys, problems

OFFICE = {day: ["08:00-18:00"] for day in ("monday", "tuesday", "wednesday", "thursday", "friday")}


def schedule(timezone: str = "Europe/Madrid", **fields: Any) -> BusinessHoursPut:
    return BusinessHoursPut.model_validate({"timezone": timezone, **fields})


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def status(hours: BusinessHoursPut, when: str) -> dict[str, Any]:
    found: HoursStatus = status_at(hours, at(when))
    return found.model_dump(mode="json")


# The rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "loc", "words"),
    [
        ({"timezone": "Mars/Olympus"}, "body.timezone", "IANA"),
        ({"timezone": "localtime"}, "body.timezone", "IANA"),
        ({"week": {"monday": ["08:00-12:00", "11:00-13:00"]}}, "body.week.monday.1", "overlaps"),
        ({"week": {"monday": ["12:00-08:00"]}}, "body.week.monday.0", "start before"),
        ({"week": {"monday": ["10:00-10:00"]}}, "body.week.monday.0", "start before"),
        ({"week": {"tuesday": ["08:00-25:00"]}}, "body.week.tuesday.0", "HH:MM-HH:MM"),
        ({"week": {"tuesday": ["24:00-24:00"]}}, "body.week.tuesday.0", "HH:MM-HH:MM"),
        ({"week": {"tuesday": ["8:00-12:00"]}}, "body.week.tuesday.0", "HH:MM-HH:MM"),
        (
            {"week": {"friday": ["01:00-02:00", "03:00-04:00", "05:00-06:00", "07:00-08:00"]}},
            "body.week.friday",
            "at most 3",
        ),
        ({"week": {"Monday": ["08:00-12:00"]}}, "body.week.Monday", "Extra inputs"),
        ({"holidays": ["25/12 - Navidad", "31/02 - Nope"]}, "body.holidays.1", "31/02"),
        ({"holidays": ["29/02/2027 - Nope"]}, "body.holidays.0", "29/02/2027"),
        ({"holidays": ["Navidad 25/12"]}, "body.holidays.0", "DD/MM - Name"),
        ({"holidays": ["25/12 - Navidad", "25/12 - Again"]}, "body.holidays.1", "entry 0"),
        ({"holidays": [{"date": "31/04", "name": "Nope"}]}, "body.holidays.0.date", "31/04"),
        (
            {
                "holidays": [
                    {"date": "24/12", "name": "Eve", "open": ["08:00-12:00", "09:00-10:00"]}
                ]
            },
            "body.holidays.0.open.1",
            "overlaps",
        ),
        ({"always_open": True, "week": {"monday": ["08:00-12:00"]}}, "body.week", "always_open"),
        ({"always_open": True, "holidays": ["25/12 - Navidad"]}, "body.holidays", "always_open"),
        (
            {
                "unavailable_message": {
                    "enabled": True,
                    "message": {"kind": "text", "text": "{{ x }}"},
                }
            },
            "body.unavailable_message.message.text",
            "unknown variable 'x'",
        ),
        (
            {"notify_when_available": {"enabled": True}},
            "body.notify_when_available.message",
            "needs",
        ),
        (
            {
                "absence": {
                    "message": {
                        "kind": "whatsapp_template",
                        "template": {"name": "t", "language": "es", "body": ["{{ followup.x }}"]},
                    }
                }
            },
            "body.absence.message.template.body.0",
            "unknown variable 'followup'",
        ),
    ],
)
async def test_each_rule_is_a_422_at_the_field_and_entry(
    api: httpx.AsyncClient, tenant: TenantKeys, changes: dict[str, Any], loc: str, words: str
) -> None:
    body = {"timezone": "Europe/Madrid", **changes}
    answer = await api.put("/v1/business-hours/default", json=body, headers=tenant.headers())
    found = problems(answer)
    assert loc in found, found
    assert words in found[loc]
    assert (
        await api.get("/v1/business-hours/default", headers=tenant.headers())
    ).status_code == 404


def test_the_contract_example_is_valid_and_kept_as_written() -> None:
    hours = BusinessHoursPut.model_validate(BUSINESS_HOURS_EXAMPLE)
    assert (
        hours.model_dump(mode="json", exclude_none=True)["holidays"]
        == (BUSINESS_HOURS_EXAMPLE["holidays"])
    )


def test_a_yearly_29_february_is_a_holiday_in_leap_years_only() -> None:
    hours = schedule(week=OFFICE, holidays=["29/02 - Leap day"])
    assert status(hours, "2028-02-29T10:00:00+01:00")["reason"] == "holiday Leap day"
    assert status(hours, "2027-02-28T10:00:00+01:00")["open"] is False  # a Sunday
    assert status(hours, "2027-03-01T10:00:00+01:00")["open"] is True


# Days, midnight and weekends --------------------------------------------------------------


def test_three_intervals_a_day() -> None:
    hours = schedule(week={"monday": ["08:00-10:00", "12:00-14:00", "16:00-18:00"]})
    day = openings_between(hours, at("2026-06-01T00:00:00+02:00"), at("2026-06-02T00:00:00+02:00"))
    assert [(iso(start), iso(end)) for start, end in day] == [
        ("2026-06-01T06:00:00+00:00", "2026-06-01T08:00:00+00:00"),
        ("2026-06-01T10:00:00+00:00", "2026-06-01T12:00:00+00:00"),
        ("2026-06-01T14:00:00+00:00", "2026-06-01T16:00:00+00:00"),
    ]
    assert status(hours, "2026-06-01T11:00:00+02:00") == {
        "open": False,
        "reason": None,
        "next_open": "2026-06-01T12:00:00+02:00",
        "next_close": "2026-06-01T14:00:00+02:00",
    }
    assert status(hours, "2026-06-01T17:59:00+02:00")["next_close"] == "2026-06-01T18:00:00+02:00"


def test_an_opening_starts_at_its_start_and_is_over_at_its_end() -> None:
    hours = schedule(week={"monday": ["08:00-10:00"]})
    assert status(hours, "2026-06-01T08:00:00+02:00")["open"] is True
    assert status(hours, "2026-06-01T10:00:00+02:00")["open"] is False


def test_saturday_night_and_sunday_morning_are_one_opening() -> None:
    hours = schedule(week={"saturday": ["22:00-24:00"], "sunday": ["00:00-02:00"]})
    for moment in (
        "2026-06-06T23:00:00+02:00",
        "2026-06-07T00:00:00+02:00",
        "2026-06-07T01:00:00+02:00",
    ):
        assert status(hours, moment) == {
            "open": True,
            "reason": None,
            "next_open": None,
            "next_close": "2026-06-07T02:00:00+02:00",
        }
    week = openings_between(hours, at("2026-06-01T00:00:00Z"), at("2026-06-08T00:00:00Z"))
    assert week == [(utc("2026-06-06T22:00:00+02:00"), utc("2026-06-07T02:00:00+02:00"))]
    # The closure that follows began at 02:00 on Sunday, not at midnight.
    assert closed_period_start(hours, at("2026-06-07T03:00:00+02:00")) == utc(
        "2026-06-07T02:00:00+02:00"
    )
    assert status(hours, "2026-06-06T21:00:00+02:00")["next_close"] == "2026-06-07T02:00:00+02:00"


def test_the_weekend_is_one_closure_from_friday_evening_to_monday_morning() -> None:
    hours = schedule(week=OFFICE)
    friday_close = utc("2026-06-05T18:00:00+02:00")
    assert status(hours, "2026-06-05T17:59:00+02:00")["next_close"] == "2026-06-05T18:00:00+02:00"
    for moment in (
        "2026-06-05T18:00:00+02:00",
        "2026-06-06T12:00:00+02:00",
        "2026-06-08T07:59:59+02:00",
    ):
        assert status(hours, moment) == {
            "open": False,
            "reason": None,
            "next_open": "2026-06-08T08:00:00+02:00",
            "next_close": "2026-06-08T18:00:00+02:00",
        }
        # One closed period: the same start from Friday 18:00 to Monday 08:00.
        assert closed_period_start(hours, at(moment)) == friday_close
    assert closed_period_start(hours, at("2026-06-08T08:00:00+02:00")) is None
    assert closed_period_start(hours, at("2026-06-08T19:00:00+02:00")) == utc(
        "2026-06-08T18:00:00+02:00"
    )


def test_next_opening_after_is_at_itself_while_open() -> None:
    hours = schedule(week=OFFICE)
    assert next_opening_after(hours, at("2026-06-05T12:00:00+02:00")) == utc(
        "2026-06-05T12:00:00+02:00"
    )
    assert next_opening_after(hours, at("2026-06-06T12:00:00+02:00")) == utc(
        "2026-06-08T08:00:00+02:00"
    )


def test_openings_between_are_cut_at_both_ends_and_in_utc() -> None:
    hours = schedule(week=OFFICE)
    found = openings_between(
        hours, at("2026-06-05T12:00:00+02:00"), at("2026-06-08T09:00:00+02:00")
    )
    assert found == [
        (utc("2026-06-05T12:00:00+02:00"), utc("2026-06-05T18:00:00+02:00")),
        (utc("2026-06-08T08:00:00+02:00"), utc("2026-06-08T09:00:00+02:00")),
    ]
    assert all(start.tzinfo is UTC and end.tzinfo is UTC for start, end in found)
    assert openings_between(hours, at("2026-06-06T00:00:00Z"), at("2026-06-06T00:00:00Z")) == []


# Holidays ----------------------------------------------------------------------------------


def test_a_yearly_holiday_closes_its_day_every_year() -> None:
    hours = schedule(week=OFFICE, holidays=["25/12 - Navidad"])
    for year in (2026, 2031):
        answer = status(hours, f"{year}-12-25T10:00:00+01:00")
        assert (answer["open"], answer["reason"]) == (False, "holiday Navidad")
    # Friday 25 December 2026: next opening on Monday the 28th.
    assert status(hours, "2026-12-25T10:00:00+01:00")["next_open"] == "2026-12-28T08:00:00+01:00"
    assert status(hours, "2026-12-24T17:00:00+01:00")["next_close"] == "2026-12-24T18:00:00+01:00"


def test_a_dated_holiday_is_that_year_only() -> None:
    hours = schedule(week=OFFICE, holidays=["01/01/2027 - Año nuevo"])
    assert status(hours, "2027-01-01T10:00:00+01:00")["reason"] == "holiday Año nuevo"
    assert status(hours, "2032-01-01T10:00:00+01:00")["open"] is True  # a Thursday


def test_a_partial_holiday_opens_its_own_hours_instead_of_the_week() -> None:
    eve = {"date": "24/12", "name": "Nochebuena", "open": ["08:00-12:00"]}
    hours = schedule(week=OFFICE, holidays=[eve])
    assert status(hours, "2026-12-24T10:00:00+01:00") == {
        "open": True,
        "reason": None,
        "next_open": None,
        "next_close": "2026-12-24T12:00:00+01:00",
    }
    assert status(hours, "2026-12-24T13:00:00+01:00") == {
        "open": False,
        "reason": "holiday Nochebuena",
        "next_open": "2026-12-25T08:00:00+01:00",
        "next_close": "2026-12-25T18:00:00+01:00",
    }


def test_a_dated_holiday_wins_over_a_yearly_one_on_its_day() -> None:
    hours = schedule(
        week=OFFICE,
        holidays=[
            "24/12 - Nochebuena",
            {"date": "24/12/2026", "name": "Eve", "open": ["09:00-11:00"]},
        ],
    )
    assert status(hours, "2026-12-24T10:00:00+01:00")["open"] is True
    assert status(hours, "2027-12-24T10:00:00+01:00")["reason"] == "holiday Nochebuena"


def test_a_holiday_on_sunday_breaks_the_opening_across_midnight() -> None:
    hours = schedule(
        week={"saturday": ["22:00-24:00"], "sunday": ["00:00-02:00"]}, holidays=["07/06 - Fiesta"]
    )
    assert status(hours, "2026-06-06T23:00:00+02:00")["next_close"] == "2026-06-07T00:00:00+02:00"
    assert status(hours, "2026-06-07T01:00:00+02:00")["reason"] == "holiday Fiesta"


# Daylight-saving changes -------------------------------------------------------------------


def test_madrid_spring_forward_moves_a_skipped_start_to_the_end_of_the_gap() -> None:
    # 29 March 2026, a Sunday: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    hours = schedule(week={"sunday": ["02:30-05:00"], "monday": ["09:00-18:00"]})
    assert status(hours, "2026-03-29T00:59:00Z") == {
        "open": False,
        "reason": None,
        "next_open": "2026-03-29T03:00:00+02:00",
        "next_close": "2026-03-29T05:00:00+02:00",
    }
    assert status(hours, "2026-03-29T01:00:00Z")["open"] is True
    # The Monday after is in summer time: 09:00 is 07:00 UTC.
    assert openings_between(hours, at("2026-03-30T00:00:00Z"), at("2026-03-31T00:00:00Z")) == [
        (utc("2026-03-30T07:00:00Z"), utc("2026-03-30T16:00:00Z"))
    ]


def test_madrid_an_interval_inside_the_gap_never_opens() -> None:
    hours = schedule(week={"sunday": ["02:10-02:40"]})
    day = openings_between(hours, at("2026-03-28T12:00:00Z"), at("2026-03-29T23:00:00Z"))
    assert day == []
    assert status(hours, "2026-03-28T12:00:00Z")["next_open"] == "2026-04-05T02:10:00+02:00"


def test_madrid_fall_back_boundaries_take_the_first_occurrence() -> None:
    # 25 October 2026: 03:00 CEST falls back to 02:00 CET; 02:00-03:00 occurs twice.
    opens_in_the_repeat = schedule(week={"sunday": ["02:30-04:00"]})
    opening = openings_between(
        opens_in_the_repeat, at("2026-10-24T00:00:00Z"), at("2026-10-26T00:00:00Z")
    )
    assert opening == [(utc("2026-10-25T02:30:00+02:00"), utc("2026-10-25T04:00:00+01:00"))]
    assert opening[0][1] - opening[0][0] == timedelta(hours=2, minutes=30)
    assert status(opens_in_the_repeat, "2026-10-25T02:45:00+01:00")["open"] is True

    ends_in_the_repeat = schedule(week={"sunday": ["01:00-02:30"]})
    second_pass = at("2026-10-25T02:15:00+01:00")
    assert status(ends_in_the_repeat, second_pass.isoformat())["open"] is False
    assert closed_period_start(ends_in_the_repeat, second_pass) == utc("2026-10-25T02:30:00+02:00")


def test_sao_paulo_2018_spring_forward_keeps_saturday_night_one_opening() -> None:
    # 4 November 2018, a Sunday: 00:00 -03 jumped to 01:00 -02; Sunday's 00:00 never was.
    hours = schedule(
        "America/Sao_Paulo", week={"saturday": ["22:00-24:00"], "sunday": ["00:00-02:00"]}
    )
    found = openings_between(hours, at("2018-11-03T12:00:00Z"), at("2018-11-04T12:00:00Z"))
    assert found == [(utc("2018-11-03T22:00:00-03:00"), utc("2018-11-04T02:00:00-02:00"))]
    for moment in ("2018-11-03T23:30:00-03:00", "2018-11-04T01:30:00-02:00"):
        assert status(hours, moment)["next_close"] == "2018-11-04T02:00:00-02:00"

    sunday_only = schedule("America/Sao_Paulo", week={"sunday": ["00:00-02:00"]})
    # The start moves to the first instant after the gap: 01:00 -02 (03:00 UTC).
    assert status(sunday_only, "2018-11-03T12:00:00-03:00")["next_open"] == (
        "2018-11-04T01:00:00-02:00"
    )


def test_sao_paulo_2018_fall_back_ends_at_the_first_occurrence() -> None:
    # 18 February 2018: 00:00 -02 fell back to 23:00 -03 on Saturday the 17th.
    hours = schedule("America/Sao_Paulo", week={"saturday": ["20:00-23:30"]})
    assert status(hours, "2018-02-17T22:30:00-02:00")["next_close"] == "2018-02-17T23:30:00-02:00"
    assert status(hours, "2018-02-17T23:15:00-02:00")["open"] is True
    assert status(hours, "2018-02-17T23:15:00-03:00")["open"] is False  # the second pass
    # Saturday to Sunday across the change: three real hours from 22:00 -02 to 00:00 -03.
    night = schedule("America/Sao_Paulo", week={"saturday": ["22:00-24:00"]})
    found = openings_between(night, at("2018-02-17T12:00:00Z"), at("2018-02-18T12:00:00Z"))
    assert found == [(utc("2018-02-17T22:00:00-02:00"), utc("2018-02-18T00:00:00-03:00"))]
    assert found[0][1] - found[0][0] == timedelta(hours=3)


def test_a_day_the_zone_skipped_has_no_opening() -> None:
    # Samoa skipped 30 December 2011: 23:59:59 on the 29th (-10) was followed by the 31st (+14).
    hours = schedule("Pacific/Apia", week={day: ["09:00-17:00"] for day in ("thursday", "friday")})
    found = openings_between(
        hours, at("2011-12-29T00:00:00-10:00"), at("2011-12-31T00:00:00+14:00")
    )
    assert found == [(utc("2011-12-29T09:00:00-10:00"), utc("2011-12-29T17:00:00-10:00"))]


# Never open, always open ------------------------------------------------------------------


def test_a_schedule_that_never_opens_has_no_next_opening() -> None:
    hours = schedule()
    assert status(hours, "2026-06-01T10:00:00Z") == {
        "open": False,
        "reason": None,
        "next_open": None,
        "next_close": None,
    }
    assert next_opening_after(hours, at("2026-06-01T10:00:00Z")) is None
    assert closed_period_start(hours, at("2026-06-01T10:00:00Z")) is None


def test_a_holiday_with_hours_is_found_months_ahead() -> None:
    hours = schedule(holidays=[{"date": "24/12", "name": "Eve", "open": ["10:00-12:00"]}])
    assert status(hours, "2026-01-05T10:00:00Z")["next_open"] == "2026-12-24T10:00:00+01:00"


def test_always_open() -> None:
    hours = schedule(always_open=True)
    assert status(hours, "2026-12-25T03:00:00Z") == {
        "open": True,
        "reason": None,
        "next_open": None,
        "next_close": None,
    }
    moment = at("2026-12-25T03:00:00Z")
    assert next_opening_after(hours, moment) == moment
    assert closed_period_start(hours, moment) is None
    later = moment + timedelta(days=3)
    assert openings_between(hours, moment, later) == [(moment, later)]


def test_a_week_open_around_the_clock_closes_only_for_its_holiday() -> None:
    every_day = {day: ["00:00-24:00"] for day in OFFICE} | {
        "saturday": ["00:00-24:00"],
        "sunday": ["00:00-24:00"],
    }
    assert status(schedule(week=every_day), "2026-06-01T10:00:00Z")["next_close"] is None
    with_holiday = schedule(week=every_day, holidays=["25/12 - Navidad"])
    assert status(with_holiday, "2026-06-01T10:00:00Z")["next_close"] == (
        "2026-12-25T00:00:00+01:00"
    )


def test_a_time_without_offset_or_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        status_at(schedule(week=OFFICE), datetime(2026, 6, 1, 10))
    with pytest.raises(ValueError, match="between"):
        next_opening_after(schedule(week=OFFICE), datetime(9999, 6, 1, tzinfo=UTC))


# The API ---------------------------------------------------------------------------------


async def test_put_get_list_and_delete(api: httpx.AsyncClient, tenant: TenantKeys) -> None:
    put = await api.put(
        "/v1/business-hours/default", json=BUSINESS_HOURS_EXAMPLE, headers=tenant.headers()
    )
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["id"] == "default"
    assert body["week"]["monday"] == ["08:00-12:00", "13:00-18:00"]
    assert body["holidays"] == BUSINESS_HOURS_EXAMPLE["holidays"]
    assert body["notify_when_available"]["message"]["template"]["name"] == (
        "atendimento_esta_disponivel"
    )
    await api.put(
        "/v1/business-hours/sales",
        json={"timezone": "Europe/Madrid", "week": OFFICE},
        headers=tenant.headers(),
    )
    got = await api.get("/v1/business-hours/default", headers=tenant.headers())
    assert got.json() == body

    first = (await api.get("/v1/business-hours?limit=1", headers=tenant.headers())).json()
    assert [item["id"] for item in first["items"]] == ["default"]
    rest = await api.get(
        "/v1/business-hours", params={"cursor": first["next_cursor"]}, headers=tenant.headers()
    )
    assert [item["id"] for item in rest.json()["items"]] == ["sales"]

    deleted = await api.delete("/v1/business-hours/sales", headers=tenant.headers())
    assert deleted.status_code == 204
    assert (await api.get("/v1/business-hours/sales", headers=tenant.headers())).status_code == 404
    again = await api.delete("/v1/business-hours/sales", headers=tenant.headers())
    assert again.status_code == 404


async def test_put_replaces_the_whole_schedule(api: httpx.AsyncClient, tenant: TenantKeys) -> None:
    url = "/v1/business-hours/default"
    await api.put(url, json=BUSINESS_HOURS_EXAMPLE, headers=tenant.headers())
    replaced = await api.put(
        url, json={"timezone": "UTC", "always_open": True}, headers=tenant.headers()
    )
    assert replaced.json()["holidays"] == []
    assert replaced.json()["always_open"] is True


async def test_status_at_a_time(api: httpx.AsyncClient, tenant: TenantKeys) -> None:
    await api.put(
        "/v1/business-hours/default", json=BUSINESS_HOURS_EXAMPLE, headers=tenant.headers()
    )
    christmas = await api.get(
        "/v1/business-hours/default/status",
        params={"at": "2026-12-25T10:00:00-03:00"},
        headers=tenant.headers(),
    )
    assert christmas.json() == {
        "open": False,
        "reason": "holiday Navidad",
        "next_open": "2026-12-26T22:00:00-03:00",
        "next_close": "2026-12-27T02:00:00-03:00",
    }
    now = await api.get("/v1/business-hours/default/status", headers=tenant.headers())
    assert now.status_code == 200
    assert set(now.json()) == {"open", "reason", "next_open", "next_close"}


@pytest.mark.parametrize(
    "value", ["2026-12-25T10:00:00", "2026-12-25", "tomorrow", "0001-01-01T00:00:00+14:00"]
)
async def test_status_needs_a_time_with_its_offset(
    api: httpx.AsyncClient, tenant: TenantKeys, value: str
) -> None:
    await api.put("/v1/business-hours/default", json={"timezone": "UTC"}, headers=tenant.headers())
    answer = await api.get(
        "/v1/business-hours/default/status", params={"at": value}, headers=tenant.headers()
    )
    assert "query.at" in problems(answer)


async def test_another_tenants_schedule_is_not_found(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    make_tenant: Callable[[], Awaitable[TenantKeys]],
) -> None:
    await api.put("/v1/business-hours/default", json={"timezone": "UTC"}, headers=tenant.headers())
    other = await make_tenant()
    for path in ("/v1/business-hours/default", "/v1/business-hours/default/status"):
        assert (await api.get(path, headers=other.headers())).status_code == 404
    gone = await api.delete("/v1/business-hours/default", headers=other.headers())
    assert gone.status_code == 404
    listed = await api.get("/v1/business-hours", headers=other.headers())
    assert listed.json()["items"] == []
    still = await api.get("/v1/business-hours/default", headers=tenant.headers())
    assert still.status_code == 200


async def test_only_admins_manage_business_hours(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    answer = await api.put(
        "/v1/business-hours/default", json={"timezone": "UTC"}, headers=tenant.headers("service")
    )
    assert answer.status_code == 403
    bad_id = await api.get("/v1/business-hours/Not Valid", headers=tenant.headers())
    assert bad_id.status_code == 422


async def _store_users(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys, slug: str
) -> None:
    """A follow-up and a journey naming the schedule, written as stored JSON (the models do
    not have these fields yet)."""
    window = {"business_hours": slug}
    async with transaction(sessions) as session:
        followup = FollowUp(tenant_id=tenant.id, name="Late invoices", version=2)
        journey = Journey(tenant_id=tenant.id, name="Menu", version=1)
        session.add_all([followup, journey])
        await session.flush()
        session.add_all(
            [
                # Only the current version counts: version 1 names nothing.
                FollowUpVersion(followup_id=followup.id, version=1, definition={"schedule": {}}),
                FollowUpVersion(
                    followup_id=followup.id,
                    version=2,
                    definition={"schedule": {"attempts": 1, "send_window": window}},
                ),
                JourneyVersion(
                    journey_id=journey.id,
                    version=1,
                    definition={
                        "steps": [
                            {"id": "greet", "type": "send_message"},
                            {"id": "wait", "type": "wait", "send_window": window},
                            {"id": "hours", "type": "branch", "check_hours": window},
                        ]
                    },
                ),
            ]
        )


async def test_a_schedule_in_use_cannot_be_deleted(
    api: httpx.AsyncClient, tenant: TenantKeys, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for slug in ("default", "other"):
        await api.put(
            f"/v1/business-hours/{slug}", json={"timezone": "UTC"}, headers=tenant.headers()
        )
    await _store_users(sessions, tenant, "default")

    refused = await api.delete("/v1/business-hours/default", headers=tenant.headers())
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert "follow-up 'Late invoices'" in detail
    assert "journey 'Menu' step 'wait'" in detail
    assert "journey 'Menu' step 'hours'" in detail
    assert "greet" not in detail
    kept = await api.get("/v1/business-hours/default", headers=tenant.headers())
    assert kept.status_code == 200

    unused = await api.delete("/v1/business-hours/other", headers=tenant.headers())
    assert unused.status_code == 204
