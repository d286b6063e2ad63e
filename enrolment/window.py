"""The opt-out window, pure: the one function that says which window applies to a message sent on a
day, the one function that computes a deadline, and the start and end of a day in Paris. The window's transitions in the database (start, suspend, unreachable) are writes
of the enrolments table: enrolment/dao.py."""

from __future__ import annotations

import calendar
import datetime as dt
from zoneinfo import ZoneInfo

from mes_rollout.config import OptOutWindow

PARIS = ZoneInfo("Europe/Paris")


def add_calendar_months(day: dt.date, months: int) -> dt.date:
    """Same day number `months` later, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def window_for(send_date: dt.date, window: OptOutWindow) -> OptOutWindow:
    """The window of a message sent on send_date: the latest change of the setting effective on or
    before that day, else its first length. A change never moves a window already running: the
    deadline of every message is computed from its own send date."""
    applying = OptOutWindow(window.months, window.weeks, window.days)
    for effective, later in window.changes:
        if effective <= send_date:
            applying = later
    return applying


def window_line(send_date: dt.date, window: OptOutWindow) -> str:
    """What the operator reads before approving a wave: the window its messages get, and the last
    day to oppose for a message sent on the wave's send date (a letter posted later gets later)."""
    applying = window_for(send_date, window)
    return (
        f"Opt-out window {applying} (setting {window}) for messages sent on {send_date.isoformat()}:"
        f" last day to oppose {last_day_to_oppose(send_date, window).isoformat()}."
    )


def last_day_to_oppose(send_date: dt.date, window: OptOutWindow) -> dt.date:
    """The last calendar day on which an opposition is in time, for a message sent on send_date
    (with the window that applies on that day: `window_for`)."""
    window = window_for(send_date, window)
    return add_calendar_months(send_date, window.months) + dt.timedelta(weeks=window.weeks, days=window.days)


def start_of_day(day: dt.date) -> dt.datetime:
    """Midnight at the start of `day`, Europe/Paris, as aware UTC. Every window whose deadline is
    before this instant has closed by `day`: the creation run of `day` creates those spaces."""
    return dt.datetime.combine(day, dt.time(0, 0), tzinfo=PARIS).astimezone(dt.UTC)


def end_of_day(day: dt.date) -> dt.datetime:
    """The last microsecond of `day`, Europe/Paris, as aware UTC."""
    return dt.datetime.combine(day, dt.time(23, 59, 59, 999_999), tzinfo=PARIS).astimezone(dt.UTC)


def opt_out_deadline(send_date: dt.date, window: OptOutWindow) -> dt.datetime:
    """The instant the window closes: the end of the last day, Europe/Paris time, as an aware UTC time.

    An answer received at or before this instant is in time (`received_at <= deadline`).
    """
    return end_of_day(last_day_to_oppose(send_date, window))
