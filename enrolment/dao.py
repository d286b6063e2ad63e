"""Every write to the tables enrolments, waves and spaces: a guarded transition and its audit row.

Each function moves rows only from the states it may come from (UPDATE ... WHERE state IN
(...)), so that two writers cannot both move a person, a wave or a space, and writes the audit
trail in the same transaction (the caller's). States reach SQL only as bound values of
mes_rollout.constants. Set-based writes stay set-based: one statement for many rows.
The callers decide (planning, window, space creation, decisions, notifications' fallback);
this module writes what they decided.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, TextClause, bindparam, text

from enrolment.waves import CohortOutcome, Wave, WaveRequest, WaveRequestError, load_wave
from enrolment.window import PARIS, opt_out_deadline
from mes_rollout.audit import AuditEvent, record, record_many
from mes_rollout.config import OptOutWindow
from mes_rollout.constants import (
    DecisionReason,
    EnrolmentState,
    NotificationStatus,
    SpaceCause,
    SpaceState,
    WaveState,
)
from mes_rollout.db import analyze, by_key

_CHUNK = 500  # messages (or people) per statement


class StaleState(RuntimeError):
    """Rows changed between the read that decided a transition and its guarded write: the
    transaction is rolled back whole, so no audit row tells of a move that did not happen."""


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# --- waves ---------------------------------------------------------------------------------


def register_wave(connection: Connection, request: WaveRequest, *, run_id: str, now: dt.datetime) -> Wave:
    """Record the wave (or find it again on a re-run). A wave id is unique: a real wave cannot be
    asked for again with other parameters; a dry run's id can be taken over by the real run
    (dry_run -> planning, guarded by the dry_run state)."""
    existing = load_wave(connection, request.wave_id)
    state = WaveState.DRY_RUN if request.dry_run else WaveState.PLANNING
    if existing is not None and existing.state != WaveState.DRY_RUN:
        if request.dry_run:
            raise WaveRequestError(f"wave {request.wave_id} is already {existing.state}: a dry run comes before")
        same = (existing.departements, existing.send_date, existing.recipient_cap) == (
            request.departements,
            request.send_date,
            request.recipient_cap,
        )
        if not same:
            raise WaveRequestError(
                f"wave id {request.wave_id} is already used with other parameters"
                f" ({','.join(existing.departements)}, {existing.send_date}, cap {existing.recipient_cap})"
            )
        return existing
    params = {
        "wave_id": request.wave_id,
        "departements": ",".join(request.departements),
        "send_date": request.send_date,
        "cap": request.recipient_cap,
        "dry_run": request.dry_run,
        "state": state.value,
        "from_state": WaveState.DRY_RUN.value,
        "run_id": run_id,
        "now": now,
    }
    if existing is None:
        connection.execute(
            text(
                "INSERT INTO waves (wave_id, departements, send_date, recipient_cap, dry_run, state, run_id,"
                " created_at, updated_at) VALUES (:wave_id, :departements, :send_date, :cap, :dry_run, :state,"
                " :run_id, :now, :now)"
            ),
            params,
        )
    else:
        moved = connection.execute(
            text(
                "UPDATE waves SET departements = :departements, send_date = :send_date, recipient_cap = :cap,"
                " dry_run = :dry_run, state = :state, run_id = :run_id, counts = NULL, updated_at = :now"
                " WHERE wave_id = :wave_id AND state = :from_state"
            ),
            params,
        ).rowcount
        if moved != 1:
            raise StaleState(f"wave {request.wave_id} left the dry_run state while it was taken over")
    connection.execute(text("DELETE FROM wave_departements WHERE wave_id = :wave_id"), params)
    connection.execute(
        text("INSERT INTO wave_departements (wave_id, departement) VALUES (:wave_id, :departement)"),
        [{"wave_id": request.wave_id, "departement": code} for code in request.departements],
    )
    analyze(connection, "wave_departements")  # the cohort query joins every person to it
    record(
        connection,
        AuditEvent(
            "wave", request.wave_id, "dry_run_requested" if request.dry_run else "planning_started", now,
            existing.state.value if existing else None, state.value,
            f"départements {params['departements']}, send date {request.send_date}, cap {request.recipient_cap}",
            run_id,
        ),
    )  # fmt: skip
    wave = load_wave(connection, request.wave_id)
    assert wave is not None
    return wave


def _store_counts(
    connection: Connection,
    wave_id: str,
    counts: dict[str, Any],
    *,
    from_state: WaveState,
    to_state: WaveState,
    now: dt.datetime,
) -> bool:
    return bool(
        connection.execute(
            text(
                "UPDATE waves SET counts = :counts, state = :to_state, updated_at = :now"
                " WHERE wave_id = :wave_id AND state = :from_state"
            ),
            {
                "counts": json.dumps(counts, sort_keys=True),
                "from_state": from_state.value,
                "to_state": to_state.value,
                "now": now,
                "wave_id": wave_id,
            },
        ).rowcount
    )


def record_dry_run_counts(
    connection: Connection, wave_id: str, counts: dict[str, Any], *, run_id: str, now: dt.datetime
) -> bool:
    """A dry run's counts on its wave row (dry_run stays dry_run): nothing else is written."""
    stored = _store_counts(connection, wave_id, counts, from_state=WaveState.DRY_RUN, to_state=WaveState.DRY_RUN, now=now)
    if stored:
        record(
            connection,
            AuditEvent("wave", wave_id, "dry_run_counted", now, None, WaveState.DRY_RUN.value, "dry run", run_id),
        )
    return stored


def record_selection(
    connection: Connection, wave_id: str, counts: dict[str, Any], *, people: dict[str, int], run_id: str, now: dt.datetime
) -> bool:
    """The cohort is selected and routed: its counts on the wave row (planning stays planning)."""
    stored = _store_counts(connection, wave_id, counts, from_state=WaveState.PLANNING, to_state=WaveState.PLANNING, now=now)
    if stored:
        record(
            connection,
            AuditEvent(
                "wave", wave_id, "cohort_selected", now, WaveState.PLANNING.value, WaveState.PLANNING.value,
                "cohort selected and routed", run_id, details={"people": people},
            ),
        )  # fmt: skip
    return stored


def finish_planning(
    connection: Connection, wave_id: str, counts: dict[str, Any], *, run_id: str, now: dt.datetime
) -> bool:
    """planning -> awaiting_approval, with the counts the operator approves on."""
    moved = _store_counts(
        connection, wave_id, counts, from_state=WaveState.PLANNING, to_state=WaveState.AWAITING_APPROVAL, now=now
    )
    if moved:
        record(
            connection,
            AuditEvent(
                "wave", wave_id, "planned", now, WaveState.PLANNING.value, WaveState.AWAITING_APPROVAL.value,
                "every shard planned; waiting for approval", run_id,
                details={"people": counts.get("people"), "recipients": counts.get("recipients")},
            ),
        )  # fmt: skip
    return moved


def _decide_wave(
    connection: Connection, wave_id: str, to_state: WaveState, *, by: str, comment: str, now: dt.datetime
) -> bool:
    return bool(
        connection.execute(
            text(
                "UPDATE waves SET state = :to_state, decided_by = :by, decided_at = :now, decision_comment = :comment,"
                " updated_at = :now WHERE wave_id = :wave_id AND state = :awaiting"
            ),
            {
                "wave_id": wave_id,
                "by": by,
                "comment": comment,
                "now": now,
                "to_state": to_state.value,
                "awaiting": WaveState.AWAITING_APPROVAL.value,
            },
        ).rowcount
    )


def approve_wave(
    connection: Connection, wave_id: str, *, by: str, comment: str, run_id: str, now: dt.datetime
) -> bool:
    """awaiting_approval -> approved: the sending DAG takes the wave's created notifications."""
    moved = _decide_wave(connection, wave_id, WaveState.APPROVED, by=by, comment=comment, now=now)
    if moved:
        record(
            connection,
            AuditEvent(
                "wave", wave_id, "approved", now, WaveState.AWAITING_APPROVAL.value, WaveState.APPROVED.value,
                f"approved by {by}" + (f": {comment}" if comment else ""), run_id,
            ),
        )  # fmt: skip
    return moved


def reject_wave(
    connection: Connection, wave_id: str, *, by: str, comment: str, run_id: str, now: dt.datetime
) -> dict[str, int]:
    """awaiting_approval -> rejected: its messages are cancelled and its people released (their
    enrolment rows deleted, audited), so that a later wave can take them."""
    if not _decide_wave(connection, wave_id, WaveState.REJECTED, by=by, comment=comment, now=now):
        return {"cancelled_notifications": 0, "released_people": 0}
    params = {
        "wave_id": wave_id,
        "now": now,
        "run_id": run_id,
        "reason": f"wave {wave_id} rejected by {by}",
        "created": NotificationStatus.CREATED.value,
        "cancelled": NotificationStatus.CANCELLED.value,
        "cancelled_action": "cancelled",  # the audit trail's action, named after the status
        "planned": EnrolmentState.PLANNED.value,
        "unreachable": EnrolmentState.UNREACHABLE.value,
    }
    connection.execute(
        text(
            "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id)"
            " SELECT :now, 'notification', notification_id, :cancelled_action, status, :cancelled, :reason, :run_id"
            " FROM notifications WHERE wave_id = :wave_id AND status = :created"
        ),
        params,
    )
    cancelled = connection.execute(
        text(
            "UPDATE notifications SET status = :cancelled, status_detail = :reason, updated_at = :now"
            " WHERE wave_id = :wave_id AND status = :created"
        ),
        params,
    ).rowcount
    connection.execute(
        text(
            "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id)"
            " SELECT :now, 'enrolment', nir, 'released', state, NULL, :reason, :run_id"
            " FROM enrolments WHERE wave_id = :wave_id AND state IN (:planned, :unreachable)"
        ),
        params,
    )
    released = connection.execute(
        text("DELETE FROM enrolments WHERE wave_id = :wave_id AND state IN (:planned, :unreachable)"), params
    ).rowcount
    record(
        connection,
        AuditEvent(
            "wave", wave_id, "rejected", now, WaveState.AWAITING_APPROVAL.value, WaveState.REJECTED.value,
            f"rejected by {by}" + (f": {comment}" if comment else ""), run_id,
            details={"cancelled_notifications": cancelled, "released_people": released},
        ),
    )  # fmt: skip
    return {"cancelled_notifications": max(cancelled, 0), "released_people": max(released, 0)}


# --- enrolments: planning --------------------------------------------------------------------


def enrol_unreachable(connection: Connection, wave_id: str, *, run_id: str, now: dt.datetime) -> None:
    """The wave's cohort rows routed unreachable get their enrolment row (new, or taken over from
    an earlier wave where they were unreachable too), set-based from wave_cohort."""
    params = {
        "wave_id": wave_id,
        "now": now,
        "run_id": run_id,
        "unreachable": EnrolmentState.UNREACHABLE.value,
        "outcome_unreachable": CohortOutcome.UNREACHABLE.value,
    }
    connection.execute(
        text(
            "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id)"
            " SELECT :now, 'enrolment', c.nir, :unreachable,"
            " (SELECT e.state FROM enrolments AS e WHERE e.nir = c.nir), :unreachable,"
            " 'wave ' || c.wave_id || ': no usable email nor printable address for the recipient', :run_id"
            " FROM wave_cohort AS c WHERE c.wave_id = :wave_id AND c.outcome = :outcome_unreachable"
        ),
        params,
    )
    connection.execute(
        text(
            "INSERT INTO enrolments (nir, wave_id, state, recipient_nir, state_reason, updated_at)"
            " SELECT nir, wave_id, :unreachable, recipient_nir, reason, :now"
            " FROM wave_cohort WHERE wave_id = :wave_id AND outcome = :outcome_unreachable"
            " ON CONFLICT (nir) DO UPDATE SET wave_id = excluded.wave_id, recipient_nir = excluded.recipient_nir,"
            " state_reason = excluded.state_reason, updated_at = excluded.updated_at"
            " WHERE enrolments.state = :unreachable"
        ),
        params,
    )


# plan_keys is the shard's staging table (enrolment/planning.py): nir, recipient_nir, channel,
# code_hash, notification_id, previous_state.
_ENROL = text(
    "INSERT INTO enrolments (nir, wave_id, state, recipient_nir, code_hash, notification_id, updated_at)"
    " SELECT nir, :wave_id, :planned, recipient_nir, code_hash, notification_id, :now FROM plan_keys WHERE TRUE"
    " ON CONFLICT (nir) DO UPDATE SET wave_id = excluded.wave_id, state = excluded.state,"
    " recipient_nir = excluded.recipient_nir, code_hash = excluded.code_hash,"
    " notification_id = excluded.notification_id, state_reason = NULL, notified_at = NULL,"
    " opt_out_deadline = NULL, decided_at = NULL, updated_at = excluded.updated_at"
    " WHERE enrolments.state = :unreachable"
    " RETURNING nir"
)
_AUDIT_PLANNED = text(
    "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id)"
    " SELECT :now, 'enrolment', nir, :planned, previous_state, :planned,"
    " 'wave ' || :wave_id || ': message ' || notification_id || ' by ' || channel, :run_id FROM plan_keys"
)


def enrol_planned(connection: Connection, wave_id: str, *, run_id: str, now: dt.datetime) -> set[str]:
    """The people staged in plan_keys become planned in the wave (new, or unreachable before).
    Whoever another wave took meanwhile is dropped from plan_keys, so that the shard's messages
    and audit rows leave them out. Returns the NIRs enrolled."""
    params = {
        "wave_id": wave_id,
        "now": now,
        "run_id": run_id,
        "planned": EnrolmentState.PLANNED.value,
        "unreachable": EnrolmentState.UNREACHABLE.value,
    }
    enrolled = set(connection.execute(_ENROL, params).scalars())
    lost = [{"nir": nir} for nir in connection.execute(text("SELECT nir FROM plan_keys")).scalars() if nir not in enrolled]
    if lost:
        connection.execute(text("DELETE FROM plan_keys WHERE nir = :nir"), lost)
    connection.execute(_AUDIT_PLANNED, params)
    return enrolled


# --- enrolments: the opt-out window ----------------------------------------------------------


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
    """planned | notified -> notified: the messages reached their recipients on send_date, and the
    window of every person they are for starts (again, for a fallback letter). notified_at is noon
    of the send date in Paris (the day is what counts). Set-based, for the sending hot path;
    audited per person. Returns how many enrolments it started."""
    params = {
        "deadline": opt_out_deadline(send_date, window),
        "sent_at": dt.datetime.combine(send_date, dt.time(12, 0), tzinfo=PARIS).astimezone(dt.UTC),
        "now": now,
        "run_id": run_id,
        "notified": EnrolmentState.NOTIFIED.value,
        "planned": EnrolmentState.PLANNED.value,
    }
    started = 0
    audit, update = _window_statements(connection)
    for part in _chunks(list(notification_ids)):
        values = {**params, "ids": part}
        connection.execute(audit, values)
        started += max(connection.execute(update, values).rowcount, 0)
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


def _move_members(
    connection: Connection,
    notification_id: str,
    *,
    action: str,
    from_states: Sequence[EnrolmentState],
    to_state: EnrolmentState,
    reason: str,
    run_id: str,
    now: dt.datetime,
) -> int:
    """The people of one message, from one of `from_states` to `to_state`, without a deadline."""
    params: dict[str, Any] = {
        "notification_id": notification_id,
        "action": action,
        "reason": reason,
        "run_id": run_id,
        "now": now,
        "to_state": to_state.value,
        "from_states": [state.value for state in from_states],
    }
    where = (
        " WHERE nir IN (SELECT nir FROM notification_members WHERE notification_id = :notification_id)"
        " AND state IN :from_states"
    )
    connection.execute(
        text(
            "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id)"
            " SELECT :now, 'enrolment', nir, :action, state, :to_state, :reason, :run_id"
            " FROM enrolments" + where  # noqa: S608
        ).bindparams(bindparam("from_states", expanding=True)),
        params,
    )
    result = connection.execute(
        text(
            "UPDATE enrolments SET state = :to_state, state_reason = :reason, opt_out_deadline = NULL,"
            " updated_at = :now" + where  # noqa: S608
        ).bindparams(bindparam("from_states", expanding=True)),
        params,
    )
    return max(result.rowcount, 0)


def mark_unreachable(
    connection: Connection, notification_id: str, reason: str, *, run_id: str, now: dt.datetime
) -> int:
    """planned | notified -> unreachable: no channel is left for the people a message was for; the
    window does not run for them."""
    return _move_members(
        connection, notification_id, action="unreachable",
        from_states=(EnrolmentState.PLANNED, EnrolmentState.NOTIFIED), to_state=EnrolmentState.UNREACHABLE,
        reason=reason, run_id=run_id, now=now,
    )  # fmt: skip


def suspend_window(
    connection: Connection, notification_id: str, reason: str, *, run_id: str, now: dt.datetime
) -> int:
    """notified -> planned: the message did not reach them after all (permanent email failure); no
    deadline until the fallback letter is posted and starts a new window."""
    return _move_members(
        connection, notification_id, action="window_suspended", from_states=(EnrolmentState.NOTIFIED,),
        to_state=EnrolmentState.PLANNED, reason=reason, run_id=run_id, now=now,
    )  # fmt: skip


def point_at_letter(connection: Connection, notification_id: str, nirs: Sequence[str]) -> int:
    """The planned people of a failed email are now told by its fallback letter (enrolments.
    notification_id names the message that tells each person: the enrolment side cancels it if
    everyone it is for dies before it goes). Not a change of state: no audit row."""
    moved = 0
    query = text(
        "UPDATE enrolments SET notification_id = :id WHERE nir IN :nirs AND state = :planned"
    ).bindparams(bindparam("nirs", expanding=True))
    for part in _chunks(nirs):
        moved += max(
            connection.execute(query, {"id": notification_id, "nirs": part, "planned": EnrolmentState.PLANNED.value}).rowcount,
            0,
        )
    return moved


def renotify(
    connection: Connection, notification_id: str, nirs: Sequence[str], *, reason: str, run_id: str, now: dt.datetime
) -> list[str]:
    """unreachable -> planned, told by a new message: the register brought their recipient a usable
    channel. Returns the NIRs moved (each audited)."""
    query = text(
        "UPDATE enrolments SET state = :planned, state_reason = NULL, notification_id = :id, updated_at = :now"
        " WHERE nir IN :nirs AND state = :unreachable RETURNING nir"
    ).bindparams(bindparam("nirs", expanding=True))
    moved: list[str] = []
    for part in _chunks(nirs):
        moved += connection.execute(
            query,
            {
                "id": notification_id,
                "nirs": part,
                "now": now,
                "planned": EnrolmentState.PLANNED.value,
                "unreachable": EnrolmentState.UNREACHABLE.value,
            },
        ).scalars().all()
    record_many(
        connection,
        (
            AuditEvent(
                "enrolment", nir, "renotified", now, from_state=EnrolmentState.UNREACHABLE.value,
                to_state=EnrolmentState.PLANNED.value, reason=reason, run_id=run_id,
            )
            for nir in sorted(moved)
        ),
    )  # fmt: skip
    return moved


# --- enrolments and spaces: the daily creation run ------------------------------------------

_WAITING_BEFORE_CREATION = (EnrolmentState.PLANNED, EnrolmentState.NOTIFIED, EnrolmentState.UNREACHABLE)
_NO_OPPOSITION = "no opposition by the deadline"


def cancel_deceased(connection: Connection, day: dt.date, *, run_id: str, now: dt.datetime) -> dict[str, int]:
    """planned | notified | unreachable -> cancelled_deceased: a death recorded on or before `day`
    cancels the enrolment; a message not yet sent whose people all died is cancelled too (created
    -> cancelled). Deaths are few: the NIRs come back to be audited one by one."""
    params = {
        "day": day,
        "now": now,
        "waiting": [state.value for state in _WAITING_BEFORE_CREATION],
        "cancelled_deceased": EnrolmentState.CANCELLED_DECEASED.value,
        "reason": DecisionReason.PERSON_DECEASED.value,
    }
    rows = connection.execute(
        text(
            "UPDATE enrolments SET state = :cancelled_deceased, state_reason = :reason, updated_at = :now"
            " WHERE state IN :waiting AND nir IN"
            " (SELECT nir FROM persons WHERE date_deces IS NOT NULL AND date_deces <= :day)"
            " RETURNING nir, notification_id"
        ).bindparams(bindparam("waiting", expanding=True)),
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
                    "now": now,
                    "ids": messages,
                    "cancelled_deceased": EnrolmentState.CANCELLED_DECEASED.value,
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


def create_automatic_spaces(connection: Connection, day: dt.date, *, run_id: str, now: dt.datetime) -> int:
    """notified -> created, and an active space created on `day` (cause automatic), for the people
    staged in the temporary table due_spaces (enrolment/spaces.py selects them, locked and checked
    again on PostgreSQL). A space is inserted with ON CONFLICT DO NOTHING: nobody is created twice.
    Returns the number of spaces created."""
    params = {
        "day": day,
        "now": now,
        "run_id": run_id,
        "notified": EnrolmentState.NOTIFIED.value,
        "created": EnrolmentState.CREATED.value,
        "active": SpaceState.ACTIVE.value,
        "automatic": SpaceCause.AUTOMATIC.value,
        "created_action": "created",
        "why": _NO_OPPOSITION,
        "space_why": f"automatic: {_NO_OPPOSITION}",
    }
    connection.execute(
        text(
            "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id)"
            " SELECT :now, 'enrolment', nir, 'space_created', :notified, :created, :why, :run_id FROM due_spaces"
        ),
        params,
    )
    connection.execute(
        text(
            "UPDATE enrolments SET state = :created, state_reason = :why, updated_at = :now"
            " WHERE nir IN (SELECT nir FROM due_spaces) AND state = :notified"
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
            " SELECT :now, 'space', s.nir, :created_action, NULL, :active, :space_why, :run_id"
            " FROM spaces AS s JOIN due_spaces AS d ON d.nir = s.nir WHERE s.run_id = :run_id"
        ),
        params,
    )
    if created > 0:
        analyze(connection, "enrolments", "spaces")  # the migration's scope joins spaces next
    return max(created, 0)


# --- enrolments and spaces: decisions ---------------------------------------------------------


@dataclass(frozen=True)
class SpaceRecord:
    """A person's space row as a decision leaves it."""

    state: SpaceState
    created_on: dt.date
    cause: SpaceCause
    closed_at: dt.datetime | None = None
    archive_until: dt.date | None = None
    purge_by: dt.date | None = None


@dataclass(frozen=True)
class SpaceWrite:
    """A space's new row, guarded by the state it had when the batch read it (None: no space)."""

    nir: str
    from_state: SpaceState | None
    space: SpaceRecord


@dataclass(frozen=True)
class EnrolmentMove:
    """A person's enrolment after their decisions of a file, guarded by the state it was read in."""

    nir: str
    from_state: EnrolmentState
    to_state: EnrolmentState
    reason: str
    decided_at: dt.datetime


@dataclass(frozen=True)
class AppliedDecision:
    """A decisions.csv row that was applied (its reference is then seen for good)."""

    reference: str
    nir: str
    event: str
    received_at: dt.datetime
    channel: str
    outcome: str
    input_file_id: int


def apply_decisions(
    connection: Connection,
    *,
    decisions: Sequence[AppliedDecision],
    moves: Sequence[EnrolmentMove],
    spaces: Sequence[SpaceWrite],
    events: Sequence[AuditEvent],
    run_id: str,
    now: dt.datetime,
) -> None:
    """What a batch of people's decisions did: the decisions recorded, each enrolment moved from
    the state it was read in, each space written over the state it was read in, and their audit
    rows. A row that moved meanwhile (which the locks of decisions intake rule out) raises
    StaleState: nothing of the file is kept."""
    if decisions:
        connection.execute(
            text(
                "INSERT INTO decisions (reference, nir, event, received_at, channel, outcome, input_file_id)"
                " VALUES (:reference, :nir, :event, :received_at, :channel, :outcome, :input_file_id)"
                " ON CONFLICT (reference) DO NOTHING"
            ),
            [
                {
                    "reference": d.reference, "nir": d.nir, "event": d.event, "received_at": d.received_at,
                    "channel": d.channel, "outcome": d.outcome, "input_file_id": d.input_file_id,
                }
                for d in decisions
            ],
        )  # fmt: skip
    if moves:
        moved = connection.execute(
            text(
                "UPDATE enrolments SET state = :to_state, state_reason = :reason, decided_at = :decided_at,"
                " updated_at = :now WHERE nir = :nir AND state = :from_state"
            ),
            [
                {
                    "nir": m.nir, "from_state": m.from_state.value, "to_state": m.to_state.value,
                    "reason": m.reason, "decided_at": m.decided_at, "now": now,
                }
                for m in moves
            ],
        ).rowcount  # fmt: skip
        if moved != len(moves):
            raise StaleState(f"{len(moves) - moved} of {len(moves)} enrolments changed while their decisions were applied")
    if spaces:
        written = connection.execute(
            text(
                "INSERT INTO spaces (nir, state, created_on, creation_cause, closed_at, archive_until, purge_by,"
                " run_id, updated_at)"
                " VALUES (:nir, :state, :created_on, :cause, :closed_at, :archive_until, :purge_by, :run_id, :now)"
                " ON CONFLICT (nir) DO UPDATE SET state = excluded.state, created_on = excluded.created_on,"
                " creation_cause = excluded.creation_cause, closed_at = excluded.closed_at,"
                " archive_until = excluded.archive_until, purge_by = excluded.purge_by, run_id = excluded.run_id,"
                " updated_at = excluded.updated_at"
                " WHERE spaces.state = :from_state"
            ),
            [
                {
                    "nir": w.nir,
                    "from_state": w.from_state.value if w.from_state else None,
                    "state": w.space.state.value,
                    "created_on": w.space.created_on,
                    "cause": w.space.cause.value,
                    "closed_at": w.space.closed_at,
                    "archive_until": w.space.archive_until,
                    "purge_by": w.space.purge_by,
                    "run_id": run_id,
                    "now": now,
                }
                for w in spaces
            ],
        ).rowcount
        if written != len(spaces):
            raise StaleState(f"{len(spaces) - written} of {len(spaces)} spaces changed while their decisions were applied")
    record_many(connection, events)
