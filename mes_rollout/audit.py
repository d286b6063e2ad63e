"""The append-only audit trail: what changed, when, why, and which run or input file caused it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

_INSERT = text(
    "INSERT INTO audit_trail"
    " (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id, input_file_id, details)"
    " VALUES (:occurred_at, :entity, :entity_id, :action, :from_state, :to_state, :reason, :run_id,"
    " :input_file_id, :details)"
)


@dataclass(frozen=True)
class AuditEvent:
    entity: str
    entity_id: str
    action: str
    occurred_at: dt.datetime
    from_state: str | None = None
    to_state: str | None = None
    reason: str | None = None
    run_id: str | None = None
    input_file_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_params(self) -> dict[str, Any]:
        return {
            "occurred_at": self.occurred_at,
            "entity": self.entity,
            "entity_id": self.entity_id,
            "action": self.action,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "reason": self.reason,
            "run_id": self.run_id,
            "input_file_id": self.input_file_id,
            "details": json.dumps(self.details, sort_keys=True, default=str) if self.details else None,
        }


def record(connection: Connection, *events: AuditEvent) -> None:
    record_many(connection, events)


def record_many(connection: Connection, events: Iterable[AuditEvent]) -> None:
    params = [event.as_params() for event in events]
    if params:
        connection.execute(_INSERT, params)
