"""Decisions intake: load decisions.csv (oppositions, activations, closures, deletions) and apply them.

One file is one transaction: rows are checked as they stream in and staged; then, set-based, a
reference seen before (in an earlier file, else earlier in this one) is ignored when the row says
the same thing (nir, event, received_at as an instant, channel; event and channel compared as
cleaned, case aside) and quarantined REFERENCE_CONFLICT when it says something else; an unknown
NIR is quarantined; then each person's decisions are applied in the order they were received, a
batch of people at a time: read (their states, locked first on PostgreSQL in NIR order, like
space creation, so that a decision and a creation of the same person never interleave), decide
(pure, enrolment/lifecycle.py: an opposition or activation received before the person's message
was sent is quarantined BEFORE_MESSAGE there), write (enrolment/dao.py). Rows reconcile: read =
accepted (applied + ignored) + quarantined.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, text

from enrolment import dao
from enrolment.lifecycle import PersonState, SpaceAction, Transition, after, decide
from enrolment.window import add_calendar_months, end_of_day
from mes_rollout import inputs
from mes_rollout.audit import AuditEvent
from mes_rollout.constants import (
    Channel,
    DecisionChannel,
    DecisionEvent,
    DecisionReason,
    EnrolmentState,
    FileKind,
    NotificationStatus,
    SpaceCause,
    SpaceState,
)
from mes_rollout.csvfile import chunks, read_rows
from mes_rollout.db import analyze, as_date, as_datetime
from mes_rollout.inputs import RowRejected
from mes_rollout.nir import Nir, NirError, normalise
from mes_rollout.runday import business_day

log = logging.getLogger(__name__)

REQUIRED = ("reference", "nir", "event", "received_at", "channel")
CHUNK_ROWS = 20_000
PEOPLE_PER_BATCH = 1_000
ARCHIVE_MONTHS = 120  # a closed space's data is kept 10 years
PURGE_MONTHS = 3  # a deletion request is carried out within 3 months


class Staged(StrEnum):
    """Where a row of decisions_staging (the file's rows, staged for the load) stands."""

    PENDING = "pending"  # to be applied
    IGNORED = "ignored"  # its reference was seen before, with the same content
    QUARANTINED = "quarantined"  # quarantined after staging (reference conflict, unknown NIR)


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
                        " VALUES (:line_no, :reference, :nir, :event, :received_at, :channel, :pending)"
                    ),
                    [{**row, "pending": Staged.PENDING.value} for row in staged],
                )
            _quarantine(connection, summary, rejected)
            summary.read += len(chunk)
        connection.exec_driver_sql("CREATE INDEX ix_decisions_staging_reference ON decisions_staging (reference)")
        connection.exec_driver_sql("CREATE INDEX ix_decisions_staging_nir ON decisions_staging (nir, status)")
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE decisions_staging")
        summary.ignored = _sort_seen_before(connection, summary)
        _quarantine_unknown_nirs(connection, summary)
        _apply(connection, summary, as_of=as_of, run_id=run_id, now=now)
        connection.exec_driver_sql("DROP TABLE decisions_staging")
        if summary.applied:
            analyze(connection, "decisions", "enrolments", "spaces")
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


_DIFFERENT_CONTENT = (
    "({seen}.nir <> s.nir OR {seen}.event <> s.event OR {seen}.received_at <> s.received_at"
    " OR {seen}.channel <> s.channel)"
)
# A reference is seen before when a decision of an earlier file has it, else when an earlier line
# of this file has it: the row is compared with that first occurrence.
_CONFLICTS = text(
    "SELECT s.line_no, s.nir, s.reference FROM decisions_staging AS s"
    " WHERE s.status = :pending AND EXISTS (SELECT 1 FROM decisions AS d WHERE d.reference = s.reference"
    f"   AND {_DIFFERENT_CONTENT.format(seen='d')})"
    " UNION ALL"
    " SELECT s.line_no, s.nir, s.reference FROM decisions_staging AS s"
    " JOIN decisions_staging AS first ON first.reference = s.reference AND first.line_no < s.line_no"
    " WHERE s.status = :pending"
    " AND NOT EXISTS (SELECT 1 FROM decisions AS d WHERE d.reference = s.reference)"
    " AND first.line_no = (SELECT MIN(e.line_no) FROM decisions_staging AS e WHERE e.reference = s.reference)"
    f" AND {_DIFFERENT_CONTENT.format(seen='first')}"
    " ORDER BY 1"
)


def _sort_seen_before(connection: Connection, summary: DecisionsSummary) -> int:
    """A reference seen before with other content is quarantined REFERENCE_CONFLICT; with the same
    content it is ignored (the same input twice changes nothing). Returns the rows ignored."""
    conflicts = connection.execute(_CONFLICTS, {"pending": Staged.PENDING.value}).all()
    if conflicts:
        _quarantine(
            connection,
            summary,
            [
                inputs.Rejection(
                    line_no, DecisionReason.REFERENCE_CONFLICT,
                    f"reference {reference} was seen before with other content", nir,
                )
                for line_no, nir, reference in conflicts
            ],
        )  # fmt: skip
        connection.execute(
            text("UPDATE decisions_staging SET status = :quarantined WHERE line_no = :line_no"),
            [{"quarantined": Staged.QUARANTINED.value, "line_no": line_no} for line_no, _, _ in conflicts],
        )
    return max(
        connection.execute(
            text(
                "UPDATE decisions_staging SET status = :ignored WHERE status = :pending"
                " AND (EXISTS (SELECT 1 FROM decisions WHERE decisions.reference = decisions_staging.reference)"
                " OR line_no > (SELECT MIN(earlier.line_no) FROM decisions_staging AS earlier"
                "               WHERE earlier.reference = decisions_staging.reference))"
            ),
            {"ignored": Staged.IGNORED.value, "pending": Staged.PENDING.value},
        ).rowcount,
        0,
    )


def _quarantine_unknown_nirs(connection: Connection, summary: DecisionsSummary) -> None:
    statuses = {"pending": Staged.PENDING.value, "quarantined": Staged.QUARANTINED.value}
    unknown = connection.execute(
        text(
            "SELECT line_no, nir FROM decisions_staging WHERE status = :pending"
            " AND NOT EXISTS (SELECT 1 FROM persons WHERE persons.nir = decisions_staging.nir) ORDER BY line_no"
        ),
        statuses,
    ).all()
    _quarantine(
        connection,
        summary,
        [inputs.Rejection(line, DecisionReason.UNKNOWN_NIR, "the NIR is not in the register", nir) for line, nir in unknown],
    )
    connection.execute(
        text(
            "UPDATE decisions_staging SET status = :quarantined"
            " WHERE status = :pending AND NOT EXISTS (SELECT 1 FROM persons WHERE persons.nir = decisions_staging.nir)"
        ),
        statuses,
    )


_LOCK = text("SELECT nir FROM enrolments WHERE nir IN :nirs ORDER BY nir FOR UPDATE").bindparams(
    bindparam("nirs", expanding=True)
)
_PEOPLE = text(
    "SELECT p.nir, p.date_deces, e.state AS enrolment_state, e.opt_out_deadline, e.notified_at,"
    " s.state AS space_state, s.creation_cause, s.created_on, s.closed_at, s.archive_until, s.purge_by"
    " FROM persons AS p LEFT JOIN enrolments AS e ON e.nir = p.nir LEFT JOIN spaces AS s ON s.nir = p.nir"
    " WHERE p.nir IN :nirs"
).bindparams(bindparam("nirs", expanding=True))
# The day (Paris: a send date) the first message for each person went out, whatever became of it
# after: an email the relay took (or reported delivered), a letter posted (or returned since).
_FIRST_SENT = text(
    "SELECT m.nir, MIN(n.send_date) AS first_sent_on"
    " FROM notification_members AS m JOIN notifications AS n ON n.notification_id = m.notification_id"
    " WHERE m.nir IN :nirs AND n.send_date IS NOT NULL"
    " AND ((n.channel = :email AND (n.sent_at IS NOT NULL OR n.status = :delivered))"
    "      OR (n.channel = :letter AND n.status IN (:posted, :returned)))"
    " GROUP BY m.nir"
).bindparams(bindparam("nirs", expanding=True))
_DECISIONS = text(
    "SELECT line_no, reference, nir, event, received_at, channel FROM decisions_staging"
    " WHERE status = :pending AND nir IN :nirs ORDER BY nir, received_at, line_no"
).bindparams(bindparam("nirs", expanding=True))


@dataclass(frozen=True)
class _Person:
    """What a batch reads of one person: the state the rules decide on, and their space row."""

    state: PersonState
    space: dao.SpaceRecord | None


@dataclass(frozen=True)
class _Decision:
    """A staged decisions.csv row waiting to be applied."""

    line_no: int
    reference: str
    nir: str
    event: DecisionEvent
    received_at: dt.datetime
    channel: str


@dataclass
class _BatchPlan:
    """What a batch of people's decisions does, decided before anything is written."""

    decisions: list[dao.AppliedDecision] = field(default_factory=list)
    moves: list[dao.EnrolmentMove] = field(default_factory=list)
    spaces: list[dao.SpaceWrite] = field(default_factory=list)
    events: list[AuditEvent] = field(default_factory=list)
    rejected: list[inputs.Rejection] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    spaces_created: int = 0


def _apply(connection: Connection, summary: DecisionsSummary, *, as_of: dt.date, run_id: str, now: dt.datetime) -> None:
    nirs = list(
        connection.execute(
            text("SELECT DISTINCT nir FROM decisions_staging WHERE status = :pending ORDER BY nir"),
            {"pending": Staged.PENDING.value},
        ).scalars()
    )
    assert summary.input_file_id is not None
    for start in range(0, len(nirs), PEOPLE_PER_BATCH):
        batch = nirs[start : start + PEOPLE_PER_BATCH]
        people, pending = _read_batch(connection, batch)
        plan = _decide_batch(people, pending, input_file_id=summary.input_file_id, as_of=as_of, run_id=run_id, now=now)
        _write_batch(connection, plan, summary, run_id=run_id, now=now)


def _read_batch(connection: Connection, nirs: list[str]) -> tuple[dict[str, _Person], list[_Decision]]:
    """Read: the people of the batch (locked first on PostgreSQL) and their pending decisions,
    in the order they were received."""
    if connection.dialect.name == "postgresql":
        connection.execute(_LOCK, {"nirs": nirs}).all()
    first_sent = {
        nir: as_date(day)
        for nir, day in connection.execute(
            _FIRST_SENT,
            {
                "nirs": nirs, "email": Channel.EMAIL.value, "letter": Channel.LETTER.value,
                "delivered": NotificationStatus.DELIVERED.value, "posted": NotificationStatus.POSTED.value,
                "returned": NotificationStatus.RETURNED.value,
            },
        )
    }  # fmt: skip
    people: dict[str, _Person] = {}
    for row in connection.execute(_PEOPLE, {"nirs": nirs}):
        notified_at = as_datetime(row.notified_at)
        created_on = as_date(row.created_on)
        state = PersonState(
            EnrolmentState(row.enrolment_state) if row.enrolment_state else None,
            as_datetime(row.opt_out_deadline),
            SpaceState(row.space_state) if row.space_state else None,
            SpaceCause(row.creation_cause) if row.creation_cause else None,
            deceased=row.date_deces is not None,
            notified_on=_first_message_day(business_day(notified_at) if notified_at else None, first_sent.get(row.nir)),
        )
        space = (
            dao.SpaceRecord(
                SpaceState(row.space_state), created_on, SpaceCause(row.creation_cause), as_datetime(row.closed_at),
                as_date(row.archive_until), as_date(row.purge_by),
            )
            if row.space_state and created_on is not None
            else None
        )  # fmt: skip
        people[row.nir] = _Person(state, space)
    pending = []
    for row in connection.execute(_DECISIONS, {"nirs": nirs, "pending": Staged.PENDING.value}):
        received_at = as_datetime(row.received_at)
        assert received_at is not None
        pending.append(_Decision(row.line_no, row.reference, row.nir, DecisionEvent(row.event), received_at, row.channel))
    return people, pending


def _first_message_day(window_started_on: dt.date | None, first_sent_on: dt.date | None) -> dt.date | None:
    """The day an answer is judged "before the message" against: the first message sent to the
    person, not the one their window runs on now. A fallback letter posted after a bounced email
    moves the window (enrolments.notified_at) but not the day the person was first written to: an
    answer received in between (quarantined BEFORE_MESSAGE while the letter waited, then sent again
    by its source) is an answer, whichever of the decisions and the bounce was loaded first."""
    days = [day for day in (window_started_on, first_sent_on) if day is not None]
    return min(days) if days else None


def _decide_batch(
    people: dict[str, _Person],
    pending: list[_Decision],
    *,
    input_file_id: int,
    as_of: dt.date,
    run_id: str,
    now: dt.datetime,
) -> _BatchPlan:
    """Decide (pure): each person's decisions in the order received, through lifecycle.decide; the
    enrolment and space each person ends with, the decisions applied, the audit rows, the rejections."""
    plan = _BatchPlan()
    states = {nir: person.state for nir, person in people.items()}
    spaces = {nir: person.space for nir, person in people.items()}
    changed_spaces: set[str] = set()
    last_move: dict[str, tuple[Transition, dt.datetime]] = {}
    for item in pending:
        state = states[item.nir]
        transition = decide(state, item.event, item.received_at)
        if transition.quarantined:
            assert transition.reason is not None
            plan.rejected.append(inputs.Rejection(item.line_no, transition.reason, transition.why, item.nir))
            continue
        assert transition.outcome is not None
        plan.outcomes[transition.outcome] += 1
        plan.decisions.append(
            dao.AppliedDecision(
                item.reference, item.nir, item.event.value, item.received_at, item.channel, transition.outcome.value,
                input_file_id,
            )
        )  # fmt: skip
        why = (
            f"{transition.why} (decision {item.reference}: {item.event.value} by {item.channel},"
            f" received {item.received_at.isoformat()})"
        )
        if transition.enrolment is not None and transition.enrolment != state.enrolment:
            plan.events.append(
                AuditEvent(
                    "enrolment", item.nir, transition.outcome.value, now,
                    state.enrolment.value if state.enrolment else None, transition.enrolment.value,
                    why, run_id, input_file_id,
                )
            )  # fmt: skip
            last_move[item.nir] = (transition, item.received_at)
        if transition.space is not None:
            before = spaces.get(item.nir)
            space = _space_after(before, transition.space, item.received_at, as_of)
            spaces[item.nir] = space
            changed_spaces.add(item.nir)
            if transition.space == SpaceAction.CREATE:
                plan.spaces_created += 1
            plan.events.append(
                AuditEvent(
                    "space", item.nir, transition.space.value, now, before.state.value if before else None,
                    space.state.value, why, run_id, input_file_id,
                )
            )  # fmt: skip
        states[item.nir] = after(state, transition)
    for nir, (transition, received_at) in last_move.items():
        initial, final = people[nir].state.enrolment, states[nir].enrolment
        if final != initial:
            assert initial is not None and final is not None
            plan.moves.append(dao.EnrolmentMove(nir, initial, final, transition.why, received_at))
    for nir in sorted(changed_spaces):
        final_space = spaces[nir]
        assert final_space is not None
        initial_space = people[nir].space
        plan.spaces.append(dao.SpaceWrite(nir, initial_space.state if initial_space else None, final_space))
    return plan


def _write_batch(
    connection: Connection, plan: _BatchPlan, summary: DecisionsSummary, *, run_id: str, now: dt.datetime
) -> None:
    """Write: the rejections to quarantine, the rest through enrolment/dao.py; the counts."""
    _quarantine(connection, summary, plan.rejected)
    dao.apply_decisions(
        connection, decisions=plan.decisions, moves=plan.moves, spaces=plan.spaces, events=plan.events,
        run_id=run_id, now=now,
    )  # fmt: skip
    summary.applied += len(plan.decisions)
    summary.outcomes.update(plan.outcomes)
    summary.spaces_created += plan.spaces_created


def _space_after(
    before: dao.SpaceRecord | None, action: SpaceAction, received_at: dt.datetime, as_of: dt.date
) -> dao.SpaceRecord:
    received_day = business_day(received_at)
    if action == SpaceAction.CREATE:
        return dao.SpaceRecord(SpaceState.ACTIVE, as_of, SpaceCause.ACTIVATION)
    assert before is not None, f"{action} of a space that does not exist"
    if action == SpaceAction.CLOSE:
        return dao.SpaceRecord(
            SpaceState.CLOSED, before.created_on, before.cause, received_at,
            add_calendar_months(received_day, ARCHIVE_MONTHS), None,
        )  # fmt: skip
    if action == SpaceAction.PURGE:
        return dao.SpaceRecord(
            SpaceState.PURGE_SCHEDULED, before.created_on, before.cause, before.closed_at or received_at,
            before.archive_until, add_calendar_months(received_day, PURGE_MONTHS),
        )  # fmt: skip
    return dao.SpaceRecord(SpaceState.DELETED, before.created_on, before.cause, received_at, None, None)


def _summary_of_earlier_load(connection: Connection, path: Path, input_file_id: int) -> DecisionsSummary:
    """The same file again changes nothing: the counts of its first load (its rows, those applied,
    the rest ignored as seen before, the outcomes). No space is created by this load."""
    earlier = inputs.earlier_load(connection, input_file_id)
    summary = DecisionsSummary(
        str(path), input_file_id, read=earlier.read, quarantined=earlier.quarantined,
        already_loaded=True, reasons=earlier.reasons,
    )  # fmt: skip
    for outcome, count in connection.execute(
        text("SELECT outcome, COUNT(*) FROM decisions WHERE input_file_id = :id GROUP BY outcome"), {"id": input_file_id}
    ):
        summary.outcomes[outcome] = int(count)
    summary.applied = sum(summary.outcomes.values())
    summary.ignored = earlier.accepted - summary.applied
    return summary
