"""The opt-out window: the one function that computes a deadline, and the start of a window."""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, TextClause, bindparam, text

from mes_rollout.config import OptOutWindow
from mes_rollout.constants import EnrolmentState
from mes_rollout.db import by_key

PARIS = ZoneInfo("Europe/Paris")


def add_calendar_months(day: dt.date, months: int) -> dt.date:
    """Same day number `months` later, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def last_day_to_oppose(send_date: dt.date, window: OptOutWindow) -> dt.date:
    """The last calendar day on which an opposition is in time, for a message sent on send_date."""
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


_WINDOW_CHUNK = 500  # messages per statement


def _window_statements(connection: Connection) -> tuple[TextClause, TextClause]:
    # The people are picked by message id, then by primary key: keep the planner off the state index.
    state = by_key(connection, "e.state")
    audit = text(
        "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id,"
        " details)"
        " SELECT :now, 'enrolment', e.nir, 'window_started', e.state, :notified,"
        " 'message ' || m.notification_id || ' sent', :run_id, NULL"
        " FROM notification_members m JOIN enrolments e ON e.nir = m.nir"
        f" WHERE m.notification_id IN :ids AND {state} IN (:planned, :notified)"  # noqa: S608
    ).bindparams(bindparam("ids", expanding=True))
    update = text(
        "UPDATE enrolments SET state = :notified, notified_at = :sent_at, opt_out_deadline = :deadline,"
        " updated_at = :now"
        " WHERE nir IN (SELECT nir FROM notification_members WHERE notification_id IN :ids)"
        f" AND {by_key(connection, 'state')} IN (:planned, :notified)"  # noqa: S608
    ).bindparams(bindparam("ids", expanding=True))
    return audit, update


def start_windows(
    connection: Connection,
    notification_ids: Sequence[str],
    send_date: dt.date,
    window: OptOutWindow,
    *,
    run_id: str,
    now: dt.datetime,
) -> int:
    """The messages reached their recipients on send_date: the window of every person they are
    for starts (again, for a fallback letter). Set-based, for the sending hot path; audited per
    person. Returns how many enrolments it started."""
    params = {
        "deadline": opt_out_deadline(send_date, window),
        "sent_at": dt.datetime.combine(send_date, dt.time(12, 0), tzinfo=PARIS).astimezone(dt.UTC),
        "now": now,
        "run_id": run_id,
        "notified": EnrolmentState.NOTIFIED.value,
        "planned": EnrolmentState.PLANNED.value,
    }
    started = 0
    ids = list(notification_ids)
    audit, update = _window_statements(connection)
    for start in range(0, len(ids), _WINDOW_CHUNK):
        part = {**params, "ids": ids[start : start + _WINDOW_CHUNK]}
        connection.execute(audit, part)
        started += max(connection.execute(update, part).rowcount, 0)
    return started


def start_window(
    connection: Connection,
    notification_id: str,
    send_date: dt.date,
    window: OptOutWindow,
    *,
    run_id: str,
    now: dt.datetime,
) -> int:
    """`start_windows` for one message."""
    return start_windows(connection, [notification_id], send_date, window, run_id=run_id, now=now)


def mark_unreachable(
    connection: Connection, notification_id: str, reason: str, *, run_id: str, now: dt.datetime
) -> int:
    """No channel is left for the people a message was for: the window does not run for them."""
    params = {
        "notification_id": notification_id,
        "reason": reason,
        "run_id": run_id,
        "now": now,
        "unreachable": EnrolmentState.UNREACHABLE.value,
        "planned": EnrolmentState.PLANNED.value,
        "notified": EnrolmentState.NOTIFIED.value,
    }
    where = (
        " WHERE nir IN (SELECT nir FROM notification_members WHERE notification_id = :notification_id)"
        " AND state IN (:planned, :notified)"
    )
    connection.execute(
        text(
            "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id)"
            " SELECT :now, 'enrolment', nir, 'unreachable', state, :unreachable, :reason, :run_id"
            " FROM enrolments" + where  # noqa: S608
        ),
        params,
    )
    result = connection.execute(
        text(
            "UPDATE enrolments SET state = :unreachable, state_reason = :reason, opt_out_deadline = NULL,"
            " updated_at = :now" + where  # noqa: S608
        ),
        params,
    )
    return max(result.rowcount, 0)


def suspend_window(
    connection: Connection, notification_id: str, reason: str, *, run_id: str, now: dt.datetime
) -> int:
    """The message did not reach them after all (permanent email failure): back to planned, no
    deadline, until the fallback letter is posted and starts a new window."""
    params = {
        "notification_id": notification_id,
        "reason": reason,
        "run_id": run_id,
        "now": now,
        "planned": EnrolmentState.PLANNED.value,
        "notified": EnrolmentState.NOTIFIED.value,
    }
    where = (
        " WHERE nir IN (SELECT nir FROM notification_members WHERE notification_id = :notification_id)"
        " AND state = :notified"
    )
    connection.execute(
        text(
            "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id)"
            " SELECT :now, 'enrolment', nir, 'window_suspended', state, :planned, :reason, :run_id"
            " FROM enrolments" + where  # noqa: S608
        ),
        params,
    )
    result = connection.execute(
        text(
            "UPDATE enrolments SET state = :planned, state_reason = :reason, opt_out_deadline = NULL,"
            " updated_at = :now" + where  # noqa: S608
        ),
        params,
    )
    return max(result.rowcount, 0)
