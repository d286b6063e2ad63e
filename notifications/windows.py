"""Starting the opt-out windows of many messages at once (the sending hot path).

`enrolment.window.start_window` does it for one message in two statements; at 2 000 messages a
second that alone costs more than rendering. `start_windows` is its set-based twin: the same
deadline (from THE deadline function), the same enrolment update and the same audit rows, for a
list of messages sent on one date. tests/notifications/test_windows.py holds the two to the same
result. (It belongs next to start_window in enrolment/window.py; the enrolment side owns that file.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import Connection, TextClause, bindparam, text

from enrolment.window import PARIS, opt_out_deadline
from mes_rollout.config import OptOutWindow
from mes_rollout.constants import EnrolmentState
from notifications.dao import by_key

_CHUNK = 500


def _statements(connection: Connection) -> tuple[TextClause, TextClause]:
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
    for starts (again, for a fallback letter). Returns how many enrolments it started."""
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
    audit, update = _statements(connection)
    for start in range(0, len(ids), _CHUNK):
        part = {**params, "ids": ids[start : start + _CHUNK]}
        connection.execute(audit, part)
        started += max(connection.execute(update, part).rowcount, 0)
    return started
