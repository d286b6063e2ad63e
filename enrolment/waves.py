"""Waves: the operator's request, the wave row and its states, approval and rejection.

planning -> awaiting_approval -> approved | rejected; a dry run is a wave row in state dry_run
(counted only: nothing is written for the people), which a real run of the same id may take over.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from enrolment.register import DEPARTEMENTS
from mes_rollout.audit import AuditEvent, record
from mes_rollout.constants import EnrolmentState, NotificationStatus, WaveState
from mes_rollout.db import as_date

WAVE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
DEFAULT_RECIPIENT_CAP = 2_000_000
_WAVE_ID = re.compile(WAVE_ID_PATTERN)


class WaveRequestError(ValueError):
    """The operator's request cannot be planned as given (the message says why)."""


def departement_order(code: str) -> tuple[int, str]:
    """Numeric order of département codes: 01..19, 2A, 2B, 21..95, 971..976."""
    if code in ("2A", "2B"):
        return (20, code)
    return (int(code), "")


@dataclass(frozen=True)
class WaveRequest:
    """What the operator asks for: validated, départements deduplicated in numeric order."""

    wave_id: str
    departements: tuple[str, ...]
    send_date: dt.date
    recipient_cap: int = DEFAULT_RECIPIENT_CAP
    dry_run: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any], logical_day: dt.date) -> WaveRequest:
        """From the DAG's Params (or the CLI); the send date defaults to the run's logical day."""
        wave_id = str(params.get("wave_id") or "").strip()
        if not _WAVE_ID.match(wave_id):
            raise WaveRequestError(f"wave id {wave_id!r} must match {WAVE_ID_PATTERN}")
        raw = params.get("departements") or []
        if isinstance(raw, str):
            raw = raw.split(",")
        departements = {str(code).strip().upper() for code in raw if str(code).strip()}
        departements = {code.zfill(2) if code.isdigit() and len(code) == 1 else code for code in departements}
        unknown = sorted(departements - DEPARTEMENTS)
        if unknown:
            raise WaveRequestError(f"unknown département(s): {', '.join(unknown)}")
        if not departements:
            raise WaveRequestError("a wave needs at least one département")
        send = params.get("send_date")
        try:
            send_date = dt.date.fromisoformat(str(send)) if send else logical_day
        except ValueError:
            raise WaveRequestError(f"send date {send!r} is not YYYY-MM-DD") from None
        cap = params.get("recipient_cap")
        recipient_cap = DEFAULT_RECIPIENT_CAP if cap in (None, "") else int(cap)
        if recipient_cap < 1:
            raise WaveRequestError("the cap on recipients must be at least 1")
        return cls(
            wave_id,
            tuple(sorted(departements, key=departement_order)),
            send_date,
            recipient_cap,
            bool(params.get("dry_run", False)),
        )

    def as_conf(self) -> dict[str, Any]:
        """The DAG run conf that asks for this wave."""
        return {
            "wave_id": self.wave_id,
            "departements": list(self.departements),
            "send_date": self.send_date.isoformat(),
            "recipient_cap": self.recipient_cap,
            "dry_run": self.dry_run,
        }


@dataclass(frozen=True)
class Wave:
    wave_id: str
    departements: tuple[str, ...]
    send_date: dt.date
    recipient_cap: int
    dry_run: bool
    state: WaveState
    counts: dict[str, Any]
    decided_by: str | None


def _counts(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    return dict(json.loads(value))


def load_wave(connection: Connection, wave_id: str) -> Wave | None:
    row = connection.execute(
        text(
            "SELECT wave_id, departements, send_date, recipient_cap, dry_run, state, counts, decided_by"
            " FROM waves WHERE wave_id = :wave_id"
        ),
        {"wave_id": wave_id},
    ).first()
    if row is None:
        return None
    send_date = as_date(row.send_date)
    assert send_date is not None
    return Wave(
        row.wave_id,
        tuple(code for code in row.departements.split(",") if code),
        send_date,
        int(row.recipient_cap) if row.recipient_cap is not None else DEFAULT_RECIPIENT_CAP,
        bool(row.dry_run),
        WaveState(row.state),
        _counts(row.counts),
        row.decided_by,
    )


def register_wave(connection: Connection, request: WaveRequest, *, run_id: str, now: dt.datetime) -> Wave:
    """Record the wave (or find it again on a re-run). A wave id is unique: a real wave cannot be
    asked for again with other parameters; a dry run's id can be taken over by the real run."""
    existing = load_wave(connection, request.wave_id)
    params = {
        "wave_id": request.wave_id,
        "departements": ",".join(request.departements),
        "send_date": request.send_date,
        "cap": request.recipient_cap,
        "dry_run": request.dry_run,
        "state": (WaveState.DRY_RUN if request.dry_run else WaveState.PLANNING).value,
        "run_id": run_id,
        "now": now,
    }
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
        connection.execute(
            text(
                "UPDATE waves SET departements = :departements, send_date = :send_date, recipient_cap = :cap,"
                " dry_run = :dry_run, state = :state, run_id = :run_id, counts = NULL, updated_at = :now"
                " WHERE wave_id = :wave_id AND state = 'dry_run'"
            ),
            params,
        )
    connection.execute(text("DELETE FROM wave_departements WHERE wave_id = :wave_id"), params)
    connection.execute(
        text("INSERT INTO wave_departements (wave_id, departement) VALUES (:wave_id, :departement)"),
        [{"wave_id": request.wave_id, "departement": code} for code in request.departements],
    )
    record(
        connection,
        AuditEvent(
            "wave",
            request.wave_id,
            "dry_run_requested" if request.dry_run else "planning_started",
            now,
            existing.state.value if existing else None,
            str(params["state"]),
            f"départements {params['departements']}, send date {request.send_date}, cap {request.recipient_cap}",
            run_id,
        ),
    )
    wave = load_wave(connection, request.wave_id)
    assert wave is not None
    return wave


def store_counts(
    connection: Connection, wave_id: str, counts: dict[str, Any], *, state: WaveState | None = None, now: dt.datetime
) -> None:
    connection.execute(
        text(
            "UPDATE waves SET counts = :counts, state = COALESCE(:state, state), updated_at = :now"
            " WHERE wave_id = :wave_id"
        ),
        {
            "counts": json.dumps(counts, sort_keys=True),
            "state": state.value if state else None,
            "now": now,
            "wave_id": wave_id,
        },
    )


def approve(
    connection: Connection, wave_id: str, *, by: str, comment: str, run_id: str, now: dt.datetime
) -> bool:
    """awaiting_approval -> approved: the sending DAG takes the wave's created notifications."""
    moved = connection.execute(
        text(
            "UPDATE waves SET state = 'approved', decided_by = :by, decided_at = :now, decision_comment = :comment,"
            " updated_at = :now WHERE wave_id = :wave_id AND state = 'awaiting_approval'"
        ),
        {"wave_id": wave_id, "by": by, "comment": comment, "now": now},
    ).rowcount
    if moved:
        record(
            connection,
            AuditEvent(
                "wave", wave_id, "approved", now, WaveState.AWAITING_APPROVAL.value, WaveState.APPROVED.value,
                f"approved by {by}" + (f": {comment}" if comment else ""), run_id,
            ),
        )
    return bool(moved)


def reject(
    connection: Connection, wave_id: str, *, by: str, comment: str, run_id: str, now: dt.datetime
) -> dict[str, int]:
    """awaiting_approval -> rejected: its messages are cancelled and its people released (their
    enrolment rows deleted, audited), so that a later wave can take them."""
    moved = connection.execute(
        text(
            "UPDATE waves SET state = 'rejected', decided_by = :by, decided_at = :now, decision_comment = :comment,"
            " updated_at = :now WHERE wave_id = :wave_id AND state = 'awaiting_approval'"
        ),
        {"wave_id": wave_id, "by": by, "comment": comment, "now": now},
    ).rowcount
    if not moved:
        return {"cancelled_notifications": 0, "released_people": 0}
    params = {
        "wave_id": wave_id,
        "now": now,
        "run_id": run_id,
        "reason": f"wave {wave_id} rejected by {by}",
        "created": NotificationStatus.CREATED.value,
        "cancelled": NotificationStatus.CANCELLED.value,
        "planned": EnrolmentState.PLANNED.value,
        "unreachable": EnrolmentState.UNREACHABLE.value,
    }
    connection.execute(
        text(
            "INSERT INTO audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id)"
            " SELECT :now, 'notification', notification_id, 'cancelled', status, :cancelled, :reason, :run_id"
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
    )
    return {"cancelled_notifications": max(cancelled, 0), "released_people": max(released, 0)}
