"""Decisions intake: load decisions.csv (oppositions, activations, closures, deletions) and apply them.

One file is one transaction: rows are checked as they stream in and staged; then, set-based, a
reference seen before (in an earlier file or earlier in this one) is ignored and an unknown NIR
is quarantined; then each person's decisions are applied in the order they were received, through
the state machine of enrolment/lifecycle.py, a batch of people at a time. On PostgreSQL the
people's enrolment rows are locked first (in NIR order, like space creation), so that a decision
and a creation of the same person never interleave. Rows reconcile: read = accepted (applied +
ignored) + quarantined.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, text

from enrolment.lifecycle import PersonState, SpaceAction, Transition, after, decide
from enrolment.window import PARIS, add_calendar_months, end_of_day
from mes_rollout import inputs
from mes_rollout.audit import AuditEvent, record_many
from mes_rollout.constants import (
    DecisionChannel,
    DecisionEvent,
    DecisionReason,
    EnrolmentState,
    FileKind,
    SpaceCause,
    SpaceState,
)
from mes_rollout.csvfile import chunks, read_rows
from mes_rollout.db import as_date, as_datetime
from mes_rollout.inputs import RowRejected
from mes_rollout.nir import Nir, NirError, normalise

log = logging.getLogger(__name__)

REQUIRED = ("reference", "nir", "event", "received_at", "channel")
CHUNK_ROWS = 20_000
PEOPLE_PER_BATCH = 1_000
ARCHIVE_MONTHS = 120  # a closed space's data is kept 10 years
PURGE_MONTHS = 3  # a deletion request is carried out within 3 months


@dataclass
class DecisionsSummary:
    """What one decisions file did."""

    path: str
    input_file_id: int | None
    read: int = 0
    applied: int = 0
    ignored: int = 0
    quarantined: int = 0
    spaces_created: int = 0
    already_loaded: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def accepted(self) -> int:
        return self.applied + self.ignored

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "input_file_id": self.input_file_id,
            "already_loaded": self.already_loaded,
            "rows": {"read": self.read, "accepted": self.accepted, "quarantined": self.quarantined},
            "applied": self.applied,
            "ignored_seen_before": self.ignored,
            "outcomes": dict(sorted(self.outcomes.items())),
            "quarantine_reasons": dict(sorted(self.reasons.items())),
            "spaces_created": self.spaces_created,
        }


def parse_received_at(value: str) -> dt.datetime:
    """An ISO 8601 timestamp that carries its offset ('2022-02-28T23:30:00+01:00')."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise RowRejected(DecisionReason.BAD_TIMESTAMP, f"received_at {value!r} is not ISO 8601") from None
    if moment.tzinfo is None:
        raise RowRejected(DecisionReason.BAD_TIMESTAMP, f"received_at {value!r} has no offset")
    return moment.astimezone(dt.UTC)


def validate_row(values: dict[str, str | None], latest: dt.datetime) -> dict[str, Any]:
    """The cleaned decision of one row, or RowRejected with a reason. `latest`: end of the run's day."""
    missing = [column for column in REQUIRED if not (values.get(column) or "").strip()]
    if missing:
        raise RowRejected(DecisionReason.MISSING_FIELD, f"empty required field(s): {', '.join(missing)}")
    try:
        nir = Nir.parse(values["nir"] or "").value
    except NirError as error:
        raise RowRejected(DecisionReason.BAD_NIR, str(error)) from None
    event_text = (values["event"] or "").strip().lower()
    if event_text not in {event.value for event in DecisionEvent}:
        raise RowRejected(DecisionReason.BAD_EVENT, f"event {event_text!r} is not one of {[e.value for e in DecisionEvent]}")
    channel = (values["channel"] or "").strip().lower()
    if channel not in {c.value for c in DecisionChannel}:
        raise RowRejected(DecisionReason.BAD_CHANNEL, f"channel {channel!r} is not one of {[c.value for c in DecisionChannel]}")
    received_at = parse_received_at((values["received_at"] or "").strip())
    if received_at > latest:
        raise RowRejected(DecisionReason.RECEIVED_IN_FUTURE, "received_at is after the day of the run")
    return {
        "reference": (values["reference"] or "").strip(),
        "nir": nir,
        "event": event_text,
        "received_at": received_at,
        "channel": channel,
    }


@dataclass
class _Space:
    """A person's space row as the batch leaves it."""

    state: SpaceState
    created_on: dt.date
    cause: SpaceCause
    closed_at: dt.datetime | None = None
    archive_until: dt.date | None = None
    purge_by: dt.date | None = None


def load_decisions(
    engine: Engine, path: Path, *, as_of: dt.date, run_id: str | None = None, now: dt.datetime | None = None
) -> DecisionsSummary:
    """Load one decisions file: all of it or nothing. `as_of` is the run's logical day."""
    path = Path(path)
    run_id = run_id or f"decisions-{uuid.uuid4()}"
    now = now or dt.datetime.now(dt.UTC)
    with engine.begin() as connection:
        load = inputs.begin(connection, FileKind.DECISIONS, path, run_id, now)
        if load.already_loaded:
            return _summary_of_earlier_load(connection, path, load.input_file_id)
        input_file_id = load.input_file_id
        summary = DecisionsSummary(str(path), input_file_id)
        _create_staging(connection)
        latest = end_of_day(as_of)
        for chunk in chunks(read_rows(path, REQUIRED), CHUNK_ROWS):
            staged, rejected = [], []
            for row in chunk:
                try:
                    staged.append({**validate_row(row.values, latest), "line_no": row.line_no})
                except RowRejected as rejection:
                    key = normalise(row.values.get("nir") or "") or None
                    rejected.append(inputs.Rejection(row.line_no, rejection.reason, str(rejection), key))
            if staged:
                connection.execute(
                    text(
                        "INSERT INTO decisions_staging (line_no, reference, nir, event, received_at, channel, status)"
                        " VALUES (:line_no, :reference, :nir, :event, :received_at, :channel, 'pending')"
                    ),
                    staged,
                )
            _quarantine(connection, summary, rejected)
            summary.read += len(chunk)
        connection.exec_driver_sql("CREATE INDEX ix_decisions_staging_reference ON decisions_staging (reference)")
        connection.exec_driver_sql("CREATE INDEX ix_decisions_staging_nir ON decisions_staging (nir, status)")
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE decisions_staging")
        summary.ignored = _ignore_seen_before(connection)
        _quarantine_unknown_nirs(connection, summary)
        _apply(connection, summary, as_of=as_of, run_id=run_id, now=now)
        connection.exec_driver_sql("DROP TABLE decisions_staging")
        inputs.finish(
            connection,
            input_file_id,
            read=summary.read,
            accepted=summary.accepted,
            quarantined=summary.quarantined,
            warnings=0,
        )
    log.info(
        "decisions %s: read %d = applied %d + ignored %d + quarantined %d; %d spaces created",
        path.name, summary.read, summary.applied, summary.ignored, summary.quarantined, summary.spaces_created,
    )  # fmt: skip
    return summary


def _create_staging(connection: Connection) -> None:
    connection.exec_driver_sql("DROP TABLE IF EXISTS decisions_staging")
    ts = "TIMESTAMPTZ" if connection.dialect.name == "postgresql" else "TEXT"
    connection.exec_driver_sql(
        "CREATE TEMP TABLE decisions_staging (line_no BIGINT NOT NULL, reference TEXT NOT NULL, nir TEXT NOT NULL,"
        f" event TEXT NOT NULL, received_at {ts} NOT NULL, channel TEXT NOT NULL, status TEXT NOT NULL)"
    )


def _quarantine(connection: Connection, summary: DecisionsSummary, rejected: Sequence[inputs.Rejection]) -> None:
    assert summary.input_file_id is not None
    summary.quarantined += inputs.quarantine(connection, summary.input_file_id, FileKind.DECISIONS, rejected)
    summary.reasons.update(rejection.reason_code for rejection in rejected)


def _ignore_seen_before(connection: Connection) -> int:
    """A reference seen before, in an earlier file or on an earlier line of this one, is ignored."""
    return max(
        connection.execute(
            text(
                "UPDATE decisions_staging SET status = 'ignored'"
                " WHERE EXISTS (SELECT 1 FROM decisions WHERE decisions.reference = decisions_staging.reference)"
                " OR line_no > (SELECT MIN(earlier.line_no) FROM decisions_staging AS earlier"
                "               WHERE earlier.reference = decisions_staging.reference)"
            )
        ).rowcount,
        0,
    )


def _quarantine_unknown_nirs(connection: Connection, summary: DecisionsSummary) -> None:
    unknown = connection.execute(
        text(
            "SELECT line_no, nir FROM decisions_staging WHERE status = 'pending'"
            " AND NOT EXISTS (SELECT 1 FROM persons WHERE persons.nir = decisions_staging.nir) ORDER BY line_no"
        )
    ).all()
    _quarantine(
        connection,
        summary,
        [inputs.Rejection(line, DecisionReason.UNKNOWN_NIR, "the NIR is not in the register", nir) for line, nir in unknown],
    )
    connection.execute(
        text(
            "UPDATE decisions_staging SET status = 'quarantined'"
            " WHERE status = 'pending' AND NOT EXISTS (SELECT 1 FROM persons WHERE persons.nir = decisions_staging.nir)"
        )
    )


_LOCK = text("SELECT nir FROM enrolments WHERE nir IN :nirs ORDER BY nir FOR UPDATE").bindparams(
    bindparam("nirs", expanding=True)
)
_STATES = text(
    "SELECT p.nir, p.date_deces, e.state, e.opt_out_deadline, s.state, s.creation_cause, s.created_on,"
    " s.closed_at, s.archive_until, s.purge_by"
    " FROM persons AS p LEFT JOIN enrolments AS e ON e.nir = p.nir LEFT JOIN spaces AS s ON s.nir = p.nir"
    " WHERE p.nir IN :nirs"
).bindparams(bindparam("nirs", expanding=True))
_DECISIONS = text(
    "SELECT line_no, reference, nir, event, received_at, channel FROM decisions_staging"
    " WHERE status = 'pending' AND nir IN :nirs ORDER BY nir, received_at, line_no"
).bindparams(bindparam("nirs", expanding=True))


def _apply(connection: Connection, summary: DecisionsSummary, *, as_of: dt.date, run_id: str, now: dt.datetime) -> None:
    nirs = list(
        connection.execute(text("SELECT DISTINCT nir FROM decisions_staging WHERE status = 'pending' ORDER BY nir")).scalars()
    )
    for start in range(0, len(nirs), PEOPLE_PER_BATCH):
        _apply_batch(connection, nirs[start : start + PEOPLE_PER_BATCH], summary, as_of=as_of, run_id=run_id, now=now)


def _apply_batch(
    connection: Connection,
    nirs: list[str],
    summary: DecisionsSummary,
    *,
    as_of: dt.date,
    run_id: str,
    now: dt.datetime,
) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(_LOCK, {"nirs": nirs}).all()
    states: dict[str, PersonState] = {}
    spaces: dict[str, _Space | None] = {}
    for row in connection.execute(_STATES, {"nirs": nirs}):
        states[row[0]] = PersonState(
            EnrolmentState(row[2]) if row[2] else None,
            as_datetime(row[3]),
            SpaceState(row[4]) if row[4] else None,
            SpaceCause(row[5]) if row[5] else None,
            deceased=row[1] is not None,
        )
        created_on = as_date(row[6])
        spaces[row[0]] = (
            _Space(SpaceState(row[4]), created_on, SpaceCause(row[5]), as_datetime(row[7]), as_date(row[8]), as_date(row[9]))
            if row[4] and created_on is not None
            else None
        )
    initial = dict(states)
    changed_spaces: set[str] = set()
    last_transition: dict[str, tuple[Transition, dt.datetime]] = {}
    decided: list[dict[str, Any]] = []
    rejected: list[inputs.Rejection] = []
    events: list[AuditEvent] = []
    assert summary.input_file_id is not None
    for line_no, reference, nir, event, received_raw, channel in connection.execute(_DECISIONS, {"nirs": nirs}).all():
        received_at = as_datetime(received_raw)
        assert received_at is not None
        state = states[nir]
        transition = decide(state, DecisionEvent(event), received_at)
        if transition.quarantined:
            assert transition.reason is not None
            rejected.append(inputs.Rejection(line_no, transition.reason, transition.why, nir))
            continue
        assert transition.outcome is not None
        summary.applied += 1
        summary.outcomes[transition.outcome] += 1
        decided.append(
            {
                "reference": reference,
                "nir": nir,
                "event": event,
                "received_at": received_at,
                "channel": channel,
                "outcome": transition.outcome.value,
                "input_file_id": summary.input_file_id,
            }
        )
        why = f"{transition.why} (decision {reference}: {event} by {channel}, received {received_at.isoformat()})"
        if transition.enrolment is not None and transition.enrolment != state.enrolment:
            events.append(
                AuditEvent(
                    "enrolment", nir, transition.outcome.value, now,
                    state.enrolment.value if state.enrolment else None, transition.enrolment.value,
                    why, run_id, summary.input_file_id,
                )
            )  # fmt: skip
            last_transition[nir] = (transition, received_at)
        if transition.space is not None:
            before = spaces.get(nir)
            space = _space_after(before, transition.space, received_at, as_of)
            spaces[nir] = space
            changed_spaces.add(nir)
            if transition.space == SpaceAction.CREATE:
                summary.spaces_created += 1
            events.append(
                AuditEvent(
                    "space", nir, transition.space.value, now, before.state.value if before else None,
                    space.state.value, why, run_id, summary.input_file_id,
                )
            )  # fmt: skip
        states[nir] = after(state, transition)
    _quarantine(connection, summary, rejected)
    if decided:
        connection.execute(
            text(
                "INSERT INTO decisions (reference, nir, event, received_at, channel, outcome, input_file_id)"
                " VALUES (:reference, :nir, :event, :received_at, :channel, :outcome, :input_file_id)"
                " ON CONFLICT (reference) DO NOTHING"
            ),
            decided,
        )
    enrolment_updates = [
        {
            "nir": nir,
            "state": states[nir].enrolment.value,  # type: ignore[union-attr]
            "reason": transition.why,
            "decided_at": received_at,
            "now": now,
        }
        for nir, (transition, received_at) in last_transition.items()
        if states[nir].enrolment != initial[nir].enrolment
    ]
    if enrolment_updates:
        connection.execute(
            text(
                "UPDATE enrolments SET state = :state, state_reason = :reason, decided_at = :decided_at,"
                " updated_at = :now WHERE nir = :nir"
            ),
            enrolment_updates,
        )
    space_rows = []
    for nir in sorted(changed_spaces):
        final = spaces[nir]
        assert final is not None
        space_rows.append(
            {
                "nir": nir,
                "state": final.state.value,
                "created_on": final.created_on,
                "cause": final.cause.value,
                "closed_at": final.closed_at,
                "archive_until": final.archive_until,
                "purge_by": final.purge_by,
                "run_id": run_id,
                "now": now,
            }
        )
    if space_rows:
        connection.execute(
            text(
                "INSERT INTO spaces (nir, state, created_on, creation_cause, closed_at, archive_until, purge_by,"
                " run_id, updated_at)"
                " VALUES (:nir, :state, :created_on, :cause, :closed_at, :archive_until, :purge_by, :run_id, :now)"
                " ON CONFLICT (nir) DO UPDATE SET state = excluded.state, created_on = excluded.created_on,"
                " creation_cause = excluded.creation_cause, closed_at = excluded.closed_at,"
                " archive_until = excluded.archive_until, purge_by = excluded.purge_by, run_id = excluded.run_id,"
                " updated_at = excluded.updated_at"
            ),
            space_rows,
        )
    record_many(connection, events)


def _space_after(before: _Space | None, action: SpaceAction, received_at: dt.datetime, as_of: dt.date) -> _Space:
    received_day = received_at.astimezone(PARIS).date()
    if action == SpaceAction.CREATE:
        return _Space(SpaceState.ACTIVE, as_of, SpaceCause.ACTIVATION)
    assert before is not None, f"{action} of a space that does not exist"
    if action == SpaceAction.CLOSE:
        return _Space(
            SpaceState.CLOSED, before.created_on, before.cause, received_at,
            add_calendar_months(received_day, ARCHIVE_MONTHS), None,
        )  # fmt: skip
    if action == SpaceAction.PURGE:
        return _Space(
            SpaceState.PURGE_SCHEDULED, before.created_on, before.cause, before.closed_at or received_at,
            before.archive_until, add_calendar_months(received_day, PURGE_MONTHS),
        )  # fmt: skip
    return _Space(SpaceState.DELETED, before.created_on, before.cause, received_at, None, None)


def _summary_of_earlier_load(connection: Connection, path: Path, input_file_id: int) -> DecisionsSummary:
    earlier = inputs.earlier_load(connection, input_file_id)
    summary = DecisionsSummary(
        str(path), input_file_id, read=earlier.read, applied=earlier.accepted, quarantined=earlier.quarantined,
        already_loaded=True, reasons=earlier.reasons,
    )
    for outcome, count in connection.execute(
        text("SELECT outcome, COUNT(*) FROM decisions WHERE input_file_id = :id GROUP BY outcome"), {"id": input_file_id}
    ):
        summary.outcomes[outcome] = count
    return summary
