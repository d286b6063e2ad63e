"""Space creation, set-based: the daily run creates the spaces whose opt-out window has closed.

For the run of day D (its logical date, in Paris): first a death recorded on or before D cancels
every enrolment still waiting (planned, notified, unreachable); then every person reached by a
message whose deadline is before D 00:00 Paris (the window closed by D), who has not opposed, gets
an active space created on D, cause 'automatic'. Opposed, late-opposed, unreachable, planned and
deceased people never match. On PostgreSQL the due enrolment rows are locked in NIR order and
checked again once locked, as decisions intake does, so that a concurrent opposition wins or is
applied after the creation (then it withdraws the space: enrolment/lifecycle.py). A space is
inserted with ON CONFLICT DO NOTHING: nobody is created twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, text

from enrolment.window import start_of_day
from mes_rollout.audit import AuditEvent, record_many
from mes_rollout.constants import EnrolmentState, NotificationStatus, SpaceCause, SpaceState

log = logging.getLogger(__name__)

_WAITING = (EnrolmentState.PLANNED.value, EnrolmentState.NOTIFIED.value, EnrolmentState.UNREACHABLE.value)
_DECEASED_WAITING = (
    " FROM enrolments AS e JOIN persons AS p ON p.nir = e.nir"
    " WHERE p.date_deces IS NOT NULL AND p.date_deces <= :day AND e.state IN (:planned, :notified, :unreachable)"
)


def _params(day: dt.date, run_id: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "day": day,
        "cutoff": start_of_day(day),
        "run_id": run_id,
        "now": now,
        "planned": EnrolmentState.PLANNED.value,
        "notified": EnrolmentState.NOTIFIED.value,
        "unreachable": EnrolmentState.UNREACHABLE.value,
        "created": EnrolmentState.CREATED.value,
        "cancelled_deceased": EnrolmentState.CANCELLED_DECEASED.value,
        "active": SpaceState.ACTIVE.value,
        "automatic": SpaceCause.AUTOMATIC.value,
    }


def creation_due(connection: Connection, day: dt.date) -> bool:
    """Has the creation run of `day` anything to do? Two index look-ups (used by `advance`)."""
    params = _params(day, "", dt.datetime.now(dt.UTC))
    due = connection.execute(
        text("SELECT 1 FROM enrolments WHERE state = :notified AND opt_out_deadline < :cutoff LIMIT 1"), params
    ).first()
    if due is not None:
        return True
    return connection.execute(text("SELECT 1" + _DECEASED_WAITING + " LIMIT 1"), params).first() is not None  # noqa: S608


def cancel_deceased(connection: Connection, day: dt.date, *, run_id: str, now: dt.datetime) -> dict[str, int]:
    """A death recorded before creation cancels the enrolment; a message not yet sent whose people
    all died is cancelled too. Deaths are few: the NIRs come back to be audited one by one."""
    params = _params(day, run_id, now)
    rows = connection.execute(
        text(
            "UPDATE enrolments SET state = :cancelled_deceased, state_reason = 'PERSON_DECEASED', updated_at = :now"
            " WHERE state IN (:planned, :notified, :unreachable) AND nir IN"
            " (SELECT nir FROM persons WHERE date_deces IS NOT NULL AND date_deces <= :day)"
            " RETURNING nir, notification_id"
        ),
        params,
    ).all()
    if not rows:
        return {"cancelled_deceased": 0, "cancelled_notifications": 0}
    record_many(
        connection,
        (
            AuditEvent(
                "enrolment", nir, "cancelled_deceased", now, None, EnrolmentState.CANCELLED_DECEASED.value,
                "death recorded before the space was created", run_id,
            )
            for nir, _ in rows
        ),
    )  # fmt: skip
    messages = sorted({notification for _, notification in rows if notification})
    cancelled: list[str] = []
    if messages:
        cancelled = list(
            connection.execute(
                text(
                    "UPDATE notifications SET status = :cancelled, status_detail = 'everyone it was for died',"
                    " updated_at = :now WHERE status = :created_status AND notification_id IN :ids"
                    " AND NOT EXISTS (SELECT 1 FROM notification_members AS m JOIN enrolments AS e ON e.nir = m.nir"
                    "   WHERE m.notification_id = notifications.notification_id AND e.state <> :cancelled_deceased)"
                    " RETURNING notification_id"
                ).bindparams(bindparam("ids", expanding=True)),
                {
                    **params,
                    "ids": messages,
                    "cancelled": NotificationStatus.CANCELLED.value,
                    "created_status": NotificationStatus.CREATED.value,
                },
            ).scalars()
        )
        record_many(
            connection,
            (
                AuditEvent(
                    "notification", notification, "cancelled", now, NotificationStatus.CREATED.value,
                    NotificationStatus.CANCELLED.value, "everyone it was for died", run_id,
                )
                for notification in cancelled
            ),
        )  # fmt: skip
    return {"cancelled_deceased": len(rows), "cancelled_notifications": len(cancelled)}


def create_due_spaces(engine: Engine, day: dt.date, *, run_id: str, now: dt.datetime) -> dict[str, Any]:
    """The creation run of `day` (its logical date), in one transaction. Counts come back."""
    params = _params(day, run_id, now)
    with engine.begin() as connection:
        cancelled = cancel_deceased(connection, day, run_id=run_id, now=now)
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
        connection.execute(
            text(
                "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id)"
                " SELECT :now, 'enrolment', nir, 'space_created', :notified, :created,"
                " 'no opposition by the deadline', :run_id FROM due_spaces"
            ),
            params,
        )
        connection.execute(
            text(
                "UPDATE enrolments SET state = :created, state_reason = 'no opposition by the deadline',"
                " updated_at = :now WHERE nir IN (SELECT nir FROM due_spaces) AND state = :notified"
            ),
            params,
        )
        created = connection.execute(
            text(
                "INSERT INTO spaces (nir, state, created_on, creation_cause, run_id, updated_at)"
                " SELECT nir, :active, :day, :automatic, :run_id, :now FROM due_spaces WHERE TRUE"
                " ON CONFLICT (nir) DO NOTHING"
            ),
            params,
        ).rowcount
        connection.execute(
            text(
                "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id)"
                " SELECT :now, 'space', s.nir, 'created', NULL, :active, 'automatic: no opposition by the deadline',"
                " :run_id FROM spaces AS s JOIN due_spaces AS d ON d.nir = s.nir WHERE s.run_id = :run_id"
            ),
            params,
        )
        connection.exec_driver_sql("DROP TABLE due_spaces")
    result = {"day": day.isoformat(), "spaces_created": max(created, 0), **cancelled}
    log.info("space creation %s: %s", day, result)
    return result
