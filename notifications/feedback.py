"""feedback.csv: what became of each message (relay delivery reports, La Poste returns).

A line moves its message as notifications.statuses.TRANSITIONS allows (anything else is
quarantined IMPOSSIBLE_TRANSITION; a line dated after the end of the load's logical day, Paris
time, is quarantined OCCURRED_IN_FUTURE):

    email  sending | sent             -> delivered          (from sending: the window starts now)
    email  sending | sent | delivered -> permanent_failure  (address bounced: letter instead)
    email  sending | sent             -> temporary_failure  (the provider gave up: letter instead)
    letter posted                     -> returned           (NPAI: the people become unreachable)

A line whose status the message already has changes nothing. Each line applied is kept in
feedback_events under a hash of (notification_id, status, occurred_at): the same line again, in
the same file or a later one, changes nothing. The file is one transaction: a file that cannot
be read raises InputFileError and applies nothing. Rows reconcile: read = accepted + quarantined.

Feedback may come after the decisions it bears on: an opposition judged late against the deadline
of a message that, the feedback now says, did not reach the person (a bounce, an NPAI return) was
in time after all, since that window never ran; it becomes an opposition in time (late_opposed ->
opposed), as if the feedback had been loaded first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, text

from enrolment.dao import EnrolmentMove, apply_decisions, start_windows
from enrolment.window import end_of_day
from mes_rollout import inputs
from mes_rollout.audit import AuditEvent
from mes_rollout.config import OptOutWindow
from mes_rollout.constants import EnrolmentState, FeedbackReason, FeedbackStatus, FileKind, NotificationStatus
from mes_rollout.csvfile import Row, chunks, read_rows
from mes_rollout.db import as_date, as_datetime
from mes_rollout.inputs import RowRejected
from notifications import dao, fallback, statuses

log = logging.getLogger(__name__)

REQUIRED = ("notification_id", "status", "occurred_at")
OPTIONAL = ("detail",)
CHUNK_ROWS = 5_000
Status = NotificationStatus


@dataclass
class FeedbackSummary:
    path: str
    input_file_id: int | None
    already_loaded: bool = False
    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    applied: int = 0
    no_change: int = 0
    seen_before: int = 0
    letters_queued: int = 0
    unreachable_messages: int = 0
    late_oppositions_in_time: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "input_file_id": self.input_file_id,
            "already_loaded": self.already_loaded,
            "rows": {"read": self.read, "accepted": self.accepted, "quarantined": self.quarantined},
            "applied": self.applied,
            "no_change": self.no_change,
            "seen_before": self.seen_before,
            "letters_queued": self.letters_queued,
            "unreachable_messages": self.unreachable_messages,
            "late_oppositions_in_time": self.late_oppositions_in_time,
            "applied_by_status": dict(sorted(self.statuses.items())),
            "quarantine_reasons": dict(sorted(self.reasons.items())),
        }


@dataclass(frozen=True)
class _Line:
    line_no: int
    notification_id: str
    status: FeedbackStatus
    occurred_at: dt.datetime
    detail: str | None

    @property
    def key(self) -> str:
        stamp = self.occurred_at.astimezone(dt.UTC).isoformat()
        return hashlib.sha256(f"{self.notification_id}|{self.status.value}|{stamp}".encode()).hexdigest()


def parse_line(row: Row, latest: dt.datetime) -> _Line:
    """The line of a row, or RowRejected with a reason. `latest`: the end of the load's logical day."""
    values = row.values
    missing = [column for column in REQUIRED if not (values.get(column) or "").strip()]
    if missing:
        raise RowRejected(FeedbackReason.MISSING_FIELD, f"empty required field(s): {', '.join(missing)}")
    raw_status = (values["status"] or "").strip().lower()
    try:
        status = FeedbackStatus(raw_status)
    except ValueError:
        allowed = ", ".join(s.value for s in FeedbackStatus)
        raise RowRejected(FeedbackReason.BAD_STATUS, f"status is not one of {allowed}") from None
    raw_time = (values["occurred_at"] or "").strip()
    try:
        occurred_at = dt.datetime.fromisoformat(raw_time)
    except ValueError:
        raise RowRejected(FeedbackReason.BAD_TIMESTAMP, "occurred_at is not an ISO 8601 timestamp") from None
    if occurred_at.tzinfo is None:
        raise RowRejected(FeedbackReason.BAD_TIMESTAMP, "occurred_at has no offset")
    if occurred_at > latest:
        raise RowRejected(FeedbackReason.OCCURRED_IN_FUTURE, "occurred_at is after the day of the load")
    return _Line(row.line_no, (values["notification_id"] or "").strip(), status, occurred_at, values.get("detail"))


def load_feedback(
    engine: Engine,
    path: Path,
    *,
    window: OptOutWindow,
    as_of: dt.date,
    run_id: str | None = None,
    now: dt.datetime | None = None,
) -> FeedbackSummary:
    """Apply one feedback file; the whole file or nothing. `as_of` is the load's logical day."""
    path = Path(path)
    run_id = run_id or f"feedback-{uuid.uuid4()}"
    now = now or dt.datetime.now(dt.UTC)
    with engine.begin() as connection:
        load = inputs.begin(connection, FileKind.FEEDBACK, path, run_id, now)
        if load.already_loaded:
            return _earlier(connection, path, load.input_file_id)
        input_file_id = load.input_file_id
        summary = FeedbackSummary(str(path), input_file_id)
        dao.refresh_planner_statistics(connection)
        for chunk in chunks(read_rows(path, REQUIRED, OPTIONAL), CHUNK_ROWS):
            _apply_chunk(connection, chunk, summary, window=window, latest=end_of_day(as_of), run_id=run_id, now=now)
        inputs.finish(
            connection,
            input_file_id,
            read=summary.read,
            accepted=summary.accepted,
            quarantined=summary.quarantined,
            warnings=0,
        )
    log.info(
        "feedback %s: read %d = accepted %d + quarantined %d; %d applied",
        path.name, summary.read, summary.accepted, summary.quarantined, summary.applied,
    )
    return summary


_MESSAGES = text(
    "SELECT notification_id, channel, status, recipient_nir, send_date FROM notifications"
    " WHERE notification_id IN :ids"
).bindparams(bindparam("ids", expanding=True))
_KNOWN_KEYS = text("SELECT event_key FROM feedback_events WHERE event_key IN :keys").bindparams(
    bindparam("keys", expanding=True)
)


def _apply_chunk(
    connection: Connection, chunk: list[Row], summary: FeedbackSummary, *, window: OptOutWindow,
    latest: dt.datetime, run_id: str, now: dt.datetime,
) -> None:
    assert summary.input_file_id is not None
    summary.read += len(chunk)
    rejected: list[inputs.Rejection] = []
    lines: list[_Line] = []
    for row in chunk:
        try:
            lines.append(parse_line(row, latest))
        except RowRejected as rejection:
            key = (row.values.get("notification_id") or "").strip() or None
            rejected.append(inputs.Rejection(row.line_no, rejection.reason, str(rejection), key))
    ids = sorted({line.notification_id for line in lines})
    messages: dict[str, Any] = {}
    known: set[str] = set()
    for part in dao.chunked(ids):
        messages.update((row.notification_id, row) for row in connection.execute(_MESSAGES, {"ids": list(part)}))
    for part in dao.chunked(sorted({line.key for line in lines})):
        known.update(connection.execute(_KNOWN_KEYS, {"keys": list(part)}).scalars())

    current = {notification_id: row.status for notification_id, row in messages.items()}
    rounds: list[list[tuple[_Line, str]]] = []  # the n-th change of each message goes in round n
    changes_per_message: Counter[str] = Counter()
    events: list[dict[str, Any]] = []
    for line in lines:
        message = messages.get(line.notification_id)
        if line.key in known:
            summary.seen_before += 1
            continue
        if message is None:
            rejected.append(
                inputs.Rejection(line.line_no, FeedbackReason.UNKNOWN_NOTIFICATION, "no such notification",
                                 line.notification_id)
            )
            continue
        known.add(line.key)
        status_now = current[line.notification_id]
        if status_now == line.status.value:
            events.append(_event(line, "no_change", summary.input_file_id, now))
            summary.no_change += 1
            continue
        if status_now not in statuses.sources(message.channel, Status(line.status.value)):
            rejected.append(
                inputs.Rejection(
                    line.line_no,
                    FeedbackReason.IMPOSSIBLE_TRANSITION,
                    f"{line.status.value} on a {message.channel} that is {status_now}",
                    line.notification_id,
                )
            )
            known.discard(line.key)
            continue
        round_index = changes_per_message[line.notification_id]
        changes_per_message[line.notification_id] += 1
        if round_index == len(rounds):
            rounds.append([])
        rounds[round_index].append((line, status_now))
        current[line.notification_id] = line.status.value
        events.append(_event(line, "applied", summary.input_file_id, now))
        summary.applied += 1
        summary.statuses[line.status.value] += 1

    for changes in rounds:
        _apply_round(connection, changes, messages, summary, window=window, run_id=run_id, now=now)
    if events:
        connection.execute(
            text(
                "INSERT INTO feedback_events (event_key, notification_id, status, occurred_at, detail, outcome,"
                " input_file_id, line_no, recorded_at)"
                " VALUES (:key, :id, :status, :occurred_at, :detail, :outcome, :file_id, :line, :now)"
                " ON CONFLICT (event_key) DO NOTHING"
            ),
            events,
        )
    inputs.quarantine(connection, summary.input_file_id, FileKind.FEEDBACK, rejected)
    summary.quarantined += len(rejected)
    summary.accepted += len(chunk) - len(rejected)
    summary.reasons.update(rejection.reason_code for rejection in rejected)


def _event(line: _Line, outcome: str, input_file_id: int, now: dt.datetime) -> dict[str, Any]:
    return {
        "key": line.key,
        "id": line.notification_id,
        "status": line.status.value,
        "occurred_at": line.occurred_at,
        "detail": line.detail,
        "outcome": outcome,
        "file_id": input_file_id,
        "line": line.line_no,
        "now": now,
    }


def _apply_round(
    connection: Connection,
    changes: list[tuple[_Line, str]],
    messages: dict[str, Any],
    summary: FeedbackSummary,
    *,
    window: OptOutWindow,
    run_id: str,
    now: dt.datetime,
) -> None:
    file_id = summary.input_file_id
    for status in FeedbackStatus:
        these = [(line, before) for line, before in changes if line.status is status]
        if not these:
            continue
        moved = set(
            dao.transition(
                connection,
                [dao.Transition(line.notification_id, reason=f"feedback {status.value}") for line, _ in these],
                from_status=[Status(before) for before in sorted({before for _, before in these})],
                to_status=Status(status.value),
                now=now,
                run_id=run_id,
                input_file_id=file_id,
            )
        )
        ids = [line.notification_id for line, _ in these if line.notification_id in moved]
        if status is FeedbackStatus.DELIVERED:
            # Delivered while still `sending` (the sender died after the relay took it): the window
            # was never started; start it from the message's send date.
            unsent: dict[dt.date, list[str]] = {}
            for line, before in these:
                send_date = as_date(messages[line.notification_id].send_date)
                if before == Status.SENDING and line.notification_id in moved and send_date is not None:
                    unsent.setdefault(send_date, []).append(line.notification_id)
            for send_date, unsent_ids in sorted(unsent.items()):
                start_windows(connection, unsent_ids, send_date, window, run_id=run_id, now=now)
        elif status in (FeedbackStatus.PERMANENT_FAILURE, FeedbackStatus.TEMPORARY_FAILURE):
            outcome = fallback.email_failed(
                connection,
                ids,
                bounced=status is FeedbackStatus.PERMANENT_FAILURE,
                reason=f"email {status.value} (feedback)",
                run_id=run_id,
                now=now,
                input_file_id=file_id,
            )
            summary.letters_queued += outcome.letters_queued
            summary.unreachable_messages += outcome.unreachable_messages
            summary.late_oppositions_in_time += _late_oppositions_in_time(
                connection, ids, f"email {status.value}", run_id=run_id, now=now, input_file_id=file_id
            )
        elif status is FeedbackStatus.RETURNED:
            for notification_id in ids:
                fallback.letter_returned(
                    connection, notification_id, messages[notification_id].recipient_nir, run_id=run_id, now=now,
                    input_file_id=file_id,
                )
                summary.unreachable_messages += 1
            summary.late_oppositions_in_time += _late_oppositions_in_time(
                connection, ids, "letter returned", run_id=run_id, now=now, input_file_id=file_id
            )


_LATE_OPPOSED = (
    "SELECT e.nir, e.notification_id, e.decided_at FROM enrolments AS e"
    " WHERE e.notification_id IN :ids AND e.state = :late_opposed ORDER BY e.nir"
)


def _late_oppositions_in_time(
    connection: Connection, notification_ids: list[str], what: str, *, run_id: str, now: dt.datetime,
    input_file_id: int | None,
) -> int:
    """The people told by these messages (the message each one's deadline came from) who opposed
    after its deadline: the message did not reach them, its window never ran, so the opposition
    was in time: late_opposed -> opposed, audited, guarded by the state read (locked first on
    PostgreSQL, as decisions intake locks them). Returns how many."""
    late: list[Any] = []
    lock = " FOR UPDATE" if connection.dialect.name == "postgresql" else ""
    query = text(_LATE_OPPOSED + lock).bindparams(bindparam("ids", expanding=True))
    for part in dao.chunked(notification_ids):
        late += connection.execute(query, {"ids": list(part), "late_opposed": EnrolmentState.LATE_OPPOSED.value}).all()
    if not late:
        return 0
    moves, events = [], []
    for row in late:
        why = f"opposition in time: message {row.notification_id} did not reach them ({what}), its window never ran"
        decided_at = as_datetime(row.decided_at) or now
        moves.append(EnrolmentMove(row.nir, EnrolmentState.LATE_OPPOSED, EnrolmentState.OPPOSED, why, decided_at))
        events.append(
            AuditEvent(
                "enrolment", row.nir, "opposed", now, EnrolmentState.LATE_OPPOSED.value, EnrolmentState.OPPOSED.value,
                why, run_id, input_file_id,
            )
        )  # fmt: skip
    apply_decisions(connection, decisions=[], moves=moves, spaces=[], events=events, run_id=run_id, now=now)
    return len(moves)


def _earlier(connection: Connection, path: Path, input_file_id: int) -> FeedbackSummary:
    """The same file again changes nothing: the counts of its first load (its rows, and what each
    accepted line did, from feedback_events). No letter is queued and nobody made unreachable by
    this load."""
    earlier = inputs.earlier_load(connection, input_file_id)
    summary = FeedbackSummary(
        str(path), input_file_id, already_loaded=True, read=earlier.read, accepted=earlier.accepted,
        quarantined=earlier.quarantined, reasons=earlier.reasons,
    )
    for outcome, status, count in connection.execute(
        text(
            "SELECT outcome, status, COUNT(*) FROM feedback_events WHERE input_file_id = :id GROUP BY outcome, status"
        ),
        {"id": input_file_id},
    ):
        if outcome == "applied":
            summary.applied += int(count)
            summary.statuses[status] += int(count)
        else:
            summary.no_change += int(count)
    summary.seen_before = summary.accepted - summary.applied - summary.no_change
    return summary
