"""The opt-out window: THE deadline function (property-based), and the window transitions in the database."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from enrolment.dao import mark_unreachable, start_window, suspend_window
from enrolment.window import PARIS, last_day_to_oppose, opt_out_deadline, start_of_day
from mes_rollout.config import OptOutWindow, load_settings
from mes_rollout.db import as_datetime
from mes_rollout.runday import business_day
from tests.enrolment.builders import load_people, plan_wave
from tests.factories import person_row

send_dates = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2099, 12, 31))
month_windows = st.integers(min_value=1, max_value=12).map(lambda months: OptOutWindow(months=months))
any_windows = st.builds(
    OptOutWindow,
    months=st.integers(min_value=0, max_value=3),
    weeks=st.integers(min_value=0, max_value=8),
    days=st.integers(min_value=0, max_value=30),
).filter(lambda window: window.months or window.weeks or window.days)


def _calendar_months_later(day: dt.date, months: int) -> dt.date:
    """An oracle written differently: count months on, then step back from the day number until
    the date exists (31 -> 30 -> 29 -> 28)."""
    year, month = day.year, day.month
    for _ in range(months):
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    for number in range(day.day, 0, -1):
        try:
            return dt.date(year, month, number)
        except ValueError:
            continue
    raise AssertionError("unreachable")


@given(send_dates, month_windows)
def test_a_window_in_months_ends_on_the_same_day_number_or_the_month_end(send_date: dt.date, window: OptOutWindow) -> None:
    assert last_day_to_oppose(send_date, window) == _calendar_months_later(send_date, window.months)


@given(send_dates, any_windows)
def test_the_deadline_is_the_last_microsecond_of_the_last_day_in_paris(send_date: dt.date, window: OptOutWindow) -> None:
    deadline = opt_out_deadline(send_date, window)
    assert deadline.tzinfo is not None and deadline.utcoffset() == dt.timedelta(0)
    local = deadline.astimezone(PARIS)
    assert local.date() == last_day_to_oppose(send_date, window)
    assert (local.hour, local.minute, local.second, local.microsecond) == (23, 59, 59, 999_999)
    # one microsecond later it is midnight of the next day in Paris, whatever the offset that night
    following = (deadline + dt.timedelta(microseconds=1)).astimezone(PARIS)
    assert following.date() == local.date() + dt.timedelta(days=1) and following.time() == dt.time(0, 0)
    assert local.utcoffset() in (dt.timedelta(hours=1), dt.timedelta(hours=2))


@given(send_dates, send_dates, month_windows)
def test_a_later_message_never_has_an_earlier_deadline(first: dt.date, second: dt.date, window: OptOutWindow) -> None:
    early, late = sorted((first, second))
    assert opt_out_deadline(early, window) <= opt_out_deadline(late, window)


@given(send_dates, any_windows, st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 12, 31)))
def test_an_answer_is_in_time_exactly_when_received_by_the_last_day_paris_time(
    send_date: dt.date, window: OptOutWindow, received_utc: dt.datetime
) -> None:
    received = received_utc.replace(tzinfo=dt.UTC)
    in_time = received <= opt_out_deadline(send_date, window)
    assert in_time == (received.astimezone(PARIS).date() <= last_day_to_oppose(send_date, window))


@pytest.mark.parametrize(
    ("send_date", "last_day", "deadline_utc"),
    [
        (dt.date(2022, 1, 31), dt.date(2022, 2, 28), "2022-02-28T22:59:59.999999+00:00"),  # 31 Jan + 1 month
        (dt.date(2024, 1, 31), dt.date(2024, 2, 29), "2024-02-29T22:59:59.999999+00:00"),  # leap year
        (dt.date(2024, 2, 29), dt.date(2024, 3, 29), "2024-03-29T22:59:59.999999+00:00"),
        (dt.date(2022, 2, 27), dt.date(2022, 3, 27), "2022-03-27T21:59:59.999999+00:00"),  # clocks go forward that day
        (dt.date(2022, 9, 30), dt.date(2022, 10, 30), "2022-10-30T22:59:59.999999+00:00"),  # clocks go back that day
        (dt.date(2022, 12, 31), dt.date(2023, 1, 31), "2023-01-31T22:59:59.999999+00:00"),  # across the year
    ],
)
def test_deadline_examples(send_date: dt.date, last_day: dt.date, deadline_utc: str) -> None:
    assert last_day_to_oppose(send_date, OptOutWindow()) == last_day
    assert opt_out_deadline(send_date, OptOutWindow()) == dt.datetime.fromisoformat(deadline_utc)


def test_six_weeks_is_one_setting_away() -> None:
    window = load_settings({"MES_OPT_OUT_WINDOW": "P6W", "MES_VAR_DIR": "/tmp"}).opt_out_window
    assert last_day_to_oppose(dt.date(2022, 1, 31), window) == dt.date(2022, 3, 14)
    assert opt_out_deadline(dt.date(2022, 1, 31), window) == dt.datetime(2022, 3, 14, 22, 59, 59, 999_999, tzinfo=dt.UTC)


def test_the_business_day_of_a_run_is_its_date_in_paris() -> None:
    assert business_day(dt.datetime(2022, 2, 28, 23, 30, tzinfo=dt.UTC)) == dt.date(2022, 3, 1)
    assert business_day(dt.datetime(2022, 3, 1, 0, 0, tzinfo=dt.UTC)) == dt.date(2022, 3, 1)
    assert start_of_day(dt.date(2022, 3, 1)) == dt.datetime(2022, 2, 28, 23, 0, tzinfo=dt.UTC)
    with pytest.raises(ValueError):
        business_day(dt.datetime(2022, 3, 1))


@settings(max_examples=50)
@given(send_dates, month_windows)
def test_the_creation_day_is_the_day_after_the_last_day(send_date: dt.date, window: OptOutWindow) -> None:
    deadline, last_day = opt_out_deadline(send_date, window), last_day_to_oppose(send_date, window)
    assert not deadline < start_of_day(last_day)
    assert deadline < start_of_day(last_day + dt.timedelta(days=1))


def _deadlines(engine: Engine) -> dict[str, tuple[str, dt.datetime | None]]:
    with engine.connect() as connection:
        return {
            nir: (state, as_datetime(deadline))
            for nir, state, deadline in connection.execute(text("SELECT nir, state, opt_out_deadline FROM enrolments"))
        }


def test_a_message_starts_the_window_of_everyone_it_tells_and_a_fallback_letter_starts_a_new_one(
    engine: Engine, tmp_path: Path
) -> None:
    parent = person_row()
    child = person_row(date_naissance="2012-04-02", nir_representant=parent["nir"], email="")
    load_people(engine, [parent, child], tmp_path)
    plan_wave(engine, tmp_path / "var", "W1", ["01"], dt.date(2022, 1, 31))
    with engine.begin() as connection:
        (message,) = connection.execute(text("SELECT notification_id FROM notifications")).scalars()
        window = OptOutWindow()
        now = dt.datetime(2022, 1, 31, 9, tzinfo=dt.UTC)
        assert start_window(connection, message, dt.date(2022, 1, 31), window, run_id="r", now=now) == 2
    first = opt_out_deadline(dt.date(2022, 1, 31), OptOutWindow())
    assert _deadlines(engine) == {parent["nir"]: ("notified", first), child["nir"]: ("notified", first)}
    with engine.begin() as connection:
        assert suspend_window(connection, message, "EMAIL_FAILED", run_id="r", now=now) == 2
    assert _deadlines(engine) == {parent["nir"]: ("planned", None), child["nir"]: ("planned", None)}
    with engine.begin() as connection:  # the fallback letter, posted a week later
        start_window(connection, message, dt.date(2022, 2, 7), OptOutWindow(), run_id="r", now=now)
    again = opt_out_deadline(dt.date(2022, 2, 7), OptOutWindow())
    assert _deadlines(engine) == {parent["nir"]: ("notified", again), child["nir"]: ("notified", again)}
    with engine.begin() as connection:
        assert mark_unreachable(connection, message, "LETTER_RETURNED", run_id="r", now=now) == 2
        audited = connection.execute(
            text("SELECT action, COUNT(*) FROM audit_trail WHERE entity = 'enrolment' GROUP BY action ORDER BY action")
        ).all()
    assert _deadlines(engine) == {parent["nir"]: ("unreachable", None), child["nir"]: ("unreachable", None)}
    assert [tuple(row) for row in audited] == [("planned", 2), ("unreachable", 2), ("window_started", 4), ("window_suspended", 2)]
