"""Queries of the notifications, notification_members and sending_attempts tables.

Every status change is guarded by the status (and attempt) it comes from, so that two writers
cannot both move a message, and is written to the audit trail in the same transaction. A message
in `sending` is held by one sender's claim (`claimed_by`) until its lease ends (`lease_until`):
no other sender takes it before then.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, text

from mes_rollout.constants import Channel, EnrolmentState, NotificationStatus, WaveState
from mes_rollout.db import analyze, as_date, by_key, load_query
from notifications import statuses
from notifications.render import Member

_ID_CHUNK = 500
_AUDIT_ENTITY = "notification"
_STATUS_CHANGED = "status_changed"
Status = NotificationStatus
# notifications.status_detail of an email in `sending` that its sender gave back because the relay
# could not be reached (cleared by the next claim).
RELAY_UNREACHABLE = "given back: the relay could not be reached"


@dataclass(frozen=True)
class Lease:
    """A sender's claim: who holds the messages it claims (unique per sender) and until when."""

    claim_id: str
    until: dt.datetime


@dataclass(frozen=True)
class PendingMessage:
    """A message to render and hand over, with what it says."""

    notification_id: str
    reference: str  # the short one the message shows (enrolment/references.py)
    wave_id: str
    recipient_nir: str
    email: str | None
    attempts: int  # before this claim
    send_date: dt.date | None
    status: str
    recipient: Member
    members: tuple[Member, ...]
    # Left `sending` by a sender that stopped because the relay could not be reached and gave it
    # back (`release_lease` with RELAY_UNREACHABLE): not a crash's leftover, its attempts were not
    # the message's fault.
    given_back: bool = False


@dataclass(frozen=True)
class Transition:
    notification_id: str
    attempt: int | None = None  # the attempt that must still own the row (emails being sent)
    reason: str | None = None


def chunked(items: Sequence[str], size: int = _ID_CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def audit_moves(
    connection: Connection,
    notification_ids: Sequence[str],
    action: str,
    *,
    from_state: str | None,
    to_state: str,
    reason: str | None,
    now: dt.datetime,
    run_id: str | None,
    input_file_id: int | None = None,
) -> None:
    """The same audit row for many messages, set-based (the hot path: one statement per 500)."""
    query = text(
        "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id,"
        " input_file_id) SELECT :now, :entity, notification_id, :action, :from_state, :to_state, :reason,"
        " :run_id, :input_file_id FROM notifications WHERE notification_id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    params = {
        "now": now,
        "entity": _AUDIT_ENTITY,
        "action": action,
        "from_state": from_state,
        "to_state": to_state,
        "reason": reason,
        "run_id": run_id,
        "input_file_id": input_file_id,
    }
    for part in chunked(list(notification_ids)):
        connection.execute(query, {**params, "ids": list(part)})


def _pending_sql(connection: Connection, *, with_shard: bool) -> str:
    sql = load_query("notifications_pending_emails.sql")
    sql = sql.replace("/* more conditions */", " AND n.shard = :shard" if with_shard else "")
    if connection.dialect.name == "postgresql":
        # Rows another sender's open claim transaction holds are passed over, not waited for.
        # SQLite needs nothing: its one writer (BEGIN IMMEDIATE) runs the claims one after another.
        sql += "\nFOR UPDATE OF n SKIP LOCKED"
    return sql


_SENDING_PAGE_CACHE_KIB = 16_384
_SENDING_CHECKPOINT_PAGES = 10_000


def size_page_cache(connection: Connection) -> None:
    """SQLite, for the sender's connection: a page cache (16 MB) that holds what a sender of one
    shard keeps touching (its messages, their people, the index pages they move in), and a
    checkpoint every 10 000 WAL pages (40 MB) rather than 1 000. With SQLite's defaults (2 MB,
    1 000 pages) each step spills and re-reads pages and checkpoints at every commit: 40 % more
    time in the database per email (160 against 115 us, 100 000 emails). Both are caps: memory
    stays bounded whatever the volume. PostgreSQL sizes its buffers and checkpoints server-side."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(f"PRAGMA cache_size = -{_SENDING_PAGE_CACHE_KIB}")
        connection.exec_driver_sql(f"PRAGMA wal_autocheckpoint = {_SENDING_CHECKPOINT_PAGES}")


def refresh_planner_statistics(connection: Connection) -> None:
    """Table statistics for the planner before a bulk run (sending, printing, feedback). Our own
    statements do not depend on them (`by_key`), but the enrolment side's per-message ones do:
    without statistics SQLite reads their `state IN (...)` filter through the state index, every
    planned enrolment for each message, instead of the few people of that message."""
    analyze(connection, "enrolments", "notifications", "notification_members", always=True)


def email_shards(connection: Connection, logical_date: dt.date) -> list[int]:
    """Shards holding emails to send (created) or to settle (sending) for the run's date."""
    rows = connection.execute(
        text(load_query("notifications_email_shards.sql")),
        {
            "email": Channel.EMAIL.value,
            "created": Status.CREATED.value,
            "sending": Status.SENDING.value,
            "approved": WaveState.APPROVED.value,
            "logical_date": logical_date,
        },
    )
    return [int(row[0]) for row in rows]


def pending_emails(
    connection: Connection,
    *,
    logical_date: dt.date,
    status: NotificationStatus,
    after_id: str,
    limit: int,
    now: dt.datetime,
    shard: int | None = None,
) -> list[PendingMessage]:
    """The next emails of a status that no live sender holds (created: to send; sending: their
    sender's lease passed at `now`), by id. On PostgreSQL the rows stay locked until the end of
    the caller's transaction, which claims them."""
    params: dict[str, object] = {
        "email": Channel.EMAIL.value,
        "status": status.value,
        "approved": WaveState.APPROVED.value,
        "logical_date": logical_date,
        "after_id": after_id,
        "limit": limit,
        "now": now,
    }
    if shard is not None:
        params["shard"] = shard
    sql = _pending_sql(connection, with_shard=shard is not None)
    rows = connection.execute(text(sql), params).all()
    members = members_of(connection, [row.notification_id for row in rows])
    return [
        PendingMessage(
            notification_id=row.notification_id,
            reference=row.reference,
            wave_id=row.wave_id,
            recipient_nir=row.recipient_nir,
            email=row.email,
            attempts=int(row.attempts),
            send_date=as_date(row.send_date),
            status=row.status,
            recipient=Member(row.recipient_nir, row.prenom, row.nom, row.sexe),
            members=tuple(members.get(row.notification_id, ())),
            given_back=status == Status.SENDING and row.status_detail == RELAY_UNREACHABLE,
        )
        for row in rows
    ]


def members_of(connection: Connection, notification_ids: Sequence[str]) -> dict[str, list[Member]]:
    """Each message's people (a representative's message lists each represented person)."""
    found: dict[str, list[Member]] = {}
    query = text(
        "SELECT m.notification_id, m.nir, p.prenom, COALESCE(p.nom_usage, p.nom_naissance) AS nom"
        " FROM notification_members m JOIN persons p ON p.nir = m.nir"
        " WHERE m.notification_id IN :ids ORDER BY m.notification_id, m.nir"
    ).bindparams(bindparam("ids", expanding=True))
    for part in chunked(list(notification_ids)):
        for row in connection.execute(query, {"ids": list(part)}):
            found.setdefault(row.notification_id, []).append(Member(row.nir, row.prenom, row.nom))
    return found


def still_told(connection: Connection, notification_ids: Sequence[str], day: dt.date) -> dict[str, int]:
    """How many of each message's people it still tells on `day`: their enrolment planned and
    naming this message, no death recorded on or before `day`. A message absent from the answer
    tells nobody any more (its people activated their space, died, or are told by another one).
    One grouped lookup per chunk of messages, on the members' keys: never a query per message."""
    found: dict[str, int] = {}
    query = text(
        "SELECT m.notification_id, COUNT(*) AS people FROM notification_members m"
        " JOIN enrolments e ON e.nir = m.nir AND e.notification_id = m.notification_id"
        " JOIN persons p ON p.nir = m.nir"
        " WHERE m.notification_id IN :ids AND e.state = :planned"
        " AND (p.date_deces IS NULL OR p.date_deces > :day)"
        " GROUP BY m.notification_id"
    ).bindparams(bindparam("ids", expanding=True))
    for part in chunked(list(notification_ids)):
        for row in connection.execute(query, {"ids": list(part), "planned": EnrolmentState.PLANNED.value, "day": day}):
            found[row.notification_id] = int(row.people)
    return found


def claim_for_sending(
    connection: Connection,
    messages: Sequence[PendingMessage],
    *,
    send_date: dt.date,
    now: dt.datetime,
    run_id: str,
    lease: Lease,
) -> list[PendingMessage]:
    """created/sending -> sending with one more attempt (notifications.attempts), held by `lease`,
    before the relay sees the message (a mark that it was given back is cleared: it is held
    again). Returns the messages this call claimed (a row another writer moved is left: the
    attempt count is the fence)."""
    groups: dict[tuple[str, int], list[str]] = {}
    for message in messages:
        groups.setdefault((message.status, message.attempts), []).append(message.notification_id)
    for from_status, _ in groups:
        statuses.check(Status(from_status), Status.SENDING)
    query = text(
        "UPDATE notifications SET status = :sending, attempts = attempts + 1,"
        # A message given back because the relay was down reached nobody: it is sent, and its
        # window runs, from the day it is claimed again (a later day gives the person a later deadline).
        " send_date = CASE WHEN status_detail = :given_back THEN :send_date ELSE COALESCE(send_date, :send_date) END,"
        " claimed_at = :now, claimed_by = :claim_id,"
        " lease_until = :lease_until, status_detail = NULL, updated_at = :now"
        f" WHERE notification_id IN :ids AND {by_key(connection, 'status')} = :from_status"  # noqa: S608
        " AND attempts = :attempts RETURNING notification_id"
    ).bindparams(bindparam("ids", expanding=True))
    owned: set[str] = set()
    for (from_status, attempts), ids in groups.items():
        for part in chunked(ids):
            owned.update(
                connection.execute(
                    query,
                    {
                        "ids": list(part),
                        "from_status": from_status,
                        "attempts": attempts,
                        "send_date": send_date,
                        "now": now,
                        "sending": Status.SENDING.value,
                        "claim_id": lease.claim_id,
                        "lease_until": lease.until,
                        "given_back": RELAY_UNREACHABLE,
                    },
                ).scalars()
            )
    claimed = [message for message in messages if message.notification_id in owned]
    for from_status in sorted({m.status for m in claimed}):
        audit_moves(
            connection,
            [m.notification_id for m in claimed if m.status == from_status],
            _STATUS_CHANGED,
            from_state=from_status,
            to_state=Status.SENDING.value,
            reason=None,
            now=now,
            run_id=run_id,
        )
    return claimed


_HELD = (
    "UPDATE notifications SET lease_until = :until"
    " WHERE channel = :email AND status = :sending AND claimed_by = :claim_id"
)
# Given back (the lease ends now), saying why: NULL when the sender stopped for any other reason.
_GIVE_BACK = (
    "UPDATE notifications SET lease_until = :until, status_detail = :detail"
    " WHERE channel = :email AND status = :sending AND claimed_by = :claim_id"
)


def renew_lease(connection: Connection, lease: Lease) -> int:
    """Extend to `lease.until` the lease of every message the claim still holds in `sending`
    (those waiting for a connection or for their retry); returns how many."""
    return connection.execute(
        text(_HELD),
        {
            "until": lease.until,
            "email": Channel.EMAIL.value,
            "sending": Status.SENDING.value,
            "claim_id": lease.claim_id,
        },
    ).rowcount


def release_lease(
    connection: Connection, claim_id: str, now: dt.datetime, *, detail: str | None = None
) -> int:
    """A sender that stops gives up what it still holds: the next sender takes it over at once
    instead of waiting for the lease to pass. `detail` (RELAY_UNREACHABLE) marks why, in
    status_detail. Returns how many messages it gave up."""
    held = {"email": Channel.EMAIL.value, "sending": Status.SENDING.value, "claim_id": claim_id}
    return connection.execute(text(_GIVE_BACK), {**held, "until": now, "detail": detail}).rowcount


@dataclass(frozen=True)
class Attempt:
    """An attempt the relay answered (or that ended before it could be handed over)."""

    notification_id: str
    attempt: int
    claimed_at: dt.datetime
    outcome: str
    smtp_code: int | None


def record_attempts(
    connection: Connection, attempts: Sequence[Attempt], *, run_id: str, now: dt.datetime
) -> None:
    if attempts:
        # Straight to the driver (named parameters, SQLite's and psycopg's spelling): one row per
        # email on the hot path, where SQLAlchemy's per-row parameter processing showed.
        sql = (
            "INSERT INTO sending_attempts (notification_id, attempt, run_id, claimed_at, finished_at, outcome,"
            " smtp_code) VALUES (:id, :attempt, :run_id, :claimed_at, :now, :outcome, :code)"
            " ON CONFLICT (notification_id, attempt) DO NOTHING"
        )
        if connection.dialect.paramstyle == "pyformat":
            sql = re.sub(r":([a-z_]+)", r"%(\1)s", sql)
        connection.exec_driver_sql(
            sql,
            [
                {
                    "id": a.notification_id,
                    "attempt": a.attempt,
                    "run_id": run_id,
                    "claimed_at": a.claimed_at,
                    "now": now,
                    "outcome": a.outcome,
                    "code": a.smtp_code,
                }
                for a in attempts
            ],
        )


def transition(
    connection: Connection,
    transitions: Sequence[Transition],
    *,
    from_status: NotificationStatus | Sequence[NotificationStatus],
    to_status: NotificationStatus,
    now: dt.datetime,
    run_id: str | None,
    input_file_id: int | None = None,
    sent: bool = False,
) -> list[str]:
    """Move messages from one status (or one of several) to another; returns the ids moved.

    A transition carrying an attempt only applies while that attempt still owns the row, so a
    late answer cannot overwrite what a newer attempt or a feedback line already recorded."""
    sources = [from_status] if isinstance(from_status, NotificationStatus) else list(from_status)
    for source in sources:
        statuses.check(source, to_status)
    groups: dict[tuple[int | None, str | None], list[str]] = {}
    for t in transitions:
        groups.setdefault((t.attempt, t.reason), []).append(t.notification_id)
    stamp = ", sent_at = :now" if sent else ""
    moved: list[str] = []
    for source in sources:
        for (attempt, reason), ids in groups.items():
            guard = " AND attempts = :attempt" if attempt is not None else ""
            query = text(
                f"UPDATE notifications SET status = :to_status, status_detail = :reason, updated_at = :now{stamp}"
                f" WHERE notification_id IN :ids AND {by_key(connection, 'status')} = :from_status{guard}"  # noqa: S608
                " RETURNING notification_id"
            ).bindparams(bindparam("ids", expanding=True))
            for part in chunked(ids):
                rows = (
                    connection.execute(
                        query,
                        {
                            "ids": list(part),
                            "attempt": attempt,
                            "reason": reason,
                            "now": now,
                            "from_status": source.value,
                            "to_status": to_status.value,
                        },
                    )
                    .scalars()
                    .all()
                )
                audit_moves(
                    connection,
                    rows,
                    _STATUS_CHANGED,
                    from_state=source.value,
                    to_state=to_status.value,
                    reason=reason,
                    now=now,
                    run_id=run_id,
                    input_file_id=input_file_id,
                )
                moved += rows
    return moved


def sending_due(connection: Connection, day: dt.date) -> bool:
    """Has the sending run of `day` anything to do (used by `advance` to skip idle days)?"""
    return (
        connection.execute(
            text(
                "SELECT 1 FROM notifications n JOIN waves w ON w.wave_id = n.wave_id"
                " WHERE w.state = :approved AND w.send_date <= :day AND n.status IN (:created, :sending)"
                " LIMIT 1"
            ),
            {
                "day": day,
                "approved": WaveState.APPROVED.value,
                "created": Status.CREATED.value,
                "sending": Status.SENDING.value,
            },
        ).first()
        is not None
    )
