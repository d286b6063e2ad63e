"""What a message reference read out on the 3422 line points at: the message, its people's
states and its audit trail, with no name, address, email or full NIR (NIRs masked)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from enrolment.references import grouped, parse
from mes_rollout.db import as_date, as_datetime
from mes_rollout.nir import mask

_MESSAGE = text(
    "SELECT notification_id, wave_id, channel, status, send_date, sent_at, print_batch, replaces_notification_id,"
    " created_at FROM notifications WHERE reference = :reference"
)
_REPLACED_BY = text(
    "SELECT reference, channel, status FROM notifications WHERE replaces_notification_id = :id ORDER BY created_at"
)
_PEOPLE = text(
    "SELECT m.nir, e.state, e.opt_out_deadline FROM notification_members m LEFT JOIN enrolments e ON e.nir = m.nir"
    " WHERE m.notification_id = :id ORDER BY m.nir"
)
_EVENTS = text(
    "SELECT occurred_at, action, from_state, to_state, reason FROM audit_trail"
    " WHERE entity = 'notification' AND entity_id = :id ORDER BY occurred_at, id"
)


def find_message(connection: Connection, typed: str) -> dict[str, Any]:
    """The message a reference names ('K7QX-M4RT-9', 'k7qx m4rt 9'...). A reference whose check
    fails raises `BadReference` (a symbol misheard or two swapped: ask the caller again); one that
    checks but names no message comes back with found = False."""
    reference = parse(typed)
    message = connection.execute(_MESSAGE, {"reference": reference}).first()
    if message is None:
        return {"reference": grouped(reference), "found": False}
    message_id = message.notification_id
    return {
        "reference": grouped(reference),
        "found": True,
        "notification_id": message_id,
        "wave_id": message.wave_id,
        "channel": message.channel,
        "status": message.status,
        "send_date": _iso(as_date(message.send_date)),
        "sent_at": _iso(as_datetime(message.sent_at)),
        "print_batch": message.print_batch,
        "replaces": message.replaces_notification_id,
        "replaced_by": [
            {"reference": grouped(row.reference) if row.reference else None, "channel": row.channel,
             "status": row.status}
            for row in connection.execute(_REPLACED_BY, {"id": message_id})
        ],
        "people": [
            {"nir": mask(row.nir), "state": row.state, "opt_out_deadline": _iso(as_datetime(row.opt_out_deadline))}
            for row in connection.execute(_PEOPLE, {"id": message_id})
        ],
        "events": [
            {"at": _iso(as_datetime(row.occurred_at)), "action": row.action, "from": row.from_state,
             "to": row.to_state, "reason": row.reason}
            for row in connection.execute(_EVENTS, {"id": message_id})
        ],
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
