"""Space creation, set-based: the daily run creates the spaces whose opt-out window has closed.

For the run of day D (its logical date, in Paris): first a death recorded on or before D cancels
every enrolment still waiting (planned, notified, unreachable); then every person reached by a
message whose deadline is before D 00:00 Paris (the window closed by D), who has not opposed, gets
an active space created on D, cause 'automatic'. Opposed, late-opposed, unreachable, planned and
deceased people never match. On PostgreSQL the due enrolment rows are locked in NIR order and
checked again once locked, as decisions intake does, so that a concurrent opposition wins or is
applied after the creation (then it withdraws the space: enrolment/lifecycle.py). A space is
inserted with ON CONFLICT DO NOTHING: nobody is created twice. This module selects; the writes
(cancellation, creation, their audit rows) are enrolment/dao.py's.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, text

from enrolment import dao
from enrolment.window import start_of_day
from mes_rollout.constants import EnrolmentState

log = logging.getLogger(__name__)

_WAITING = [EnrolmentState.PLANNED.value, EnrolmentState.NOTIFIED.value, EnrolmentState.UNREACHABLE.value]


def _params(day: dt.date) -> dict[str, Any]:
    return {"day": day, "cutoff": start_of_day(day), "notified": EnrolmentState.NOTIFIED.value, "waiting": _WAITING}


def creation_due(connection: Connection, day: dt.date) -> bool:
    """Has the creation run of `day` anything to do? Two index look-ups (used by `advance`)."""
    params = _params(day)
    due = connection.execute(
        text("SELECT 1 FROM enrolments WHERE state = :notified AND opt_out_deadline < :cutoff LIMIT 1"), params
    ).first()
    if due is not None:
        return True
    deceased_waiting = text(
        "SELECT 1 FROM enrolments AS e JOIN persons AS p ON p.nir = e.nir"
        " WHERE p.date_deces IS NOT NULL AND p.date_deces <= :day AND e.state IN :waiting LIMIT 1"
    ).bindparams(bindparam("waiting", expanding=True))
    return connection.execute(deceased_waiting, params).first() is not None


def _stage_due_spaces(connection: Connection, day: dt.date) -> None:
    """The temporary table due_spaces: whoever the creation run of `day` gives a space."""
    params = _params(day)
    connection.exec_driver_sql("DROP TABLE IF EXISTS due_spaces")
    connection.exec_driver_sql("CREATE TEMP TABLE due_spaces (nir TEXT PRIMARY KEY)")
    connection.execute(
        text(
            "INSERT INTO due_spaces (nir) SELECT e.nir FROM enrolments AS e"
            " WHERE e.state = :notified AND e.opt_out_deadline < :cutoff"
            " AND NOT EXISTS (SELECT 1 FROM persons AS p WHERE p.nir = e.nir AND p.date_deces IS NOT NULL)"
        ),
        params,
    )
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ANALYZE due_spaces")
        # Lock in NIR order (decisions intake locks in the same order: no deadlock), then drop
        # whoever changed while we waited: an opposition, or a fallback letter's new window.
        connection.execute(
            text(
                "SELECT COUNT(*) FROM (SELECT e.nir FROM enrolments AS e JOIN due_spaces AS d ON d.nir = e.nir"
                " ORDER BY e.nir FOR UPDATE OF e) AS locked"
            )
        )
        connection.execute(
            text(
                "DELETE FROM due_spaces WHERE nir IN (SELECT e.nir FROM enrolments AS e JOIN due_spaces AS d"
                " ON d.nir = e.nir WHERE e.state <> :notified OR e.opt_out_deadline >= :cutoff)"
            ),
            params,
        )


def create_due_spaces(engine: Engine, day: dt.date, *, run_id: str, now: dt.datetime) -> dict[str, Any]:
    """The creation run of `day` (its logical date), in one transaction. Counts come back."""
    with engine.begin() as connection:
        cancelled = dao.cancel_deceased(connection, day, run_id=run_id, now=now)
        _stage_due_spaces(connection, day)
        created = dao.create_automatic_spaces(connection, day, run_id=run_id, now=now)
        connection.exec_driver_sql("DROP TABLE due_spaces")
    result = {"day": day.isoformat(), "spaces_created": created, **cancelled}
    log.info("space creation %s: %s", day, result)
    return result
