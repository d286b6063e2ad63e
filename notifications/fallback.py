"""What follows a message that did not reach its people: a letter instead of a failed email, and
the unreachable state after a returned letter (the weekly wave tells them again once the register
brings a channel: enrolment/weekly.py).

The enrolment side owns the window and every enrolment write (enrolment.dao); this module only calls it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, text

from enrolment import dao as enrolment_dao
from enrolment.references import free_references
from mes_rollout import audit as audit_trail
from mes_rollout.constants import (
    Channel,
    EnrolmentState,
    NotificationStatus,
    UnreachableReason,
)
from mes_rollout.postal_address import PostalAddress
from notifications import dao

# Ids of the messages this module creates are derived from what caused them, so that a re-run
# creates the same row (and finds it already there) instead of a second one. None can be traced
# back to a NIR without the wave's key: a fallback letter's id comes from the (keyed) email id.
_IDS = uuid.UUID("1f0c2a52-7a43-4f43-9d0e-6d6573726f6c")


@dataclass
class FallbackSummary:
    letters_queued: int = 0
    unreachable_messages: int = 0


def fallback_letter_id(email_notification_id: str) -> str:
    return str(uuid.uuid5(_IDS, f"fallback-letter:{email_notification_id}"))


def address_of(row: Any) -> PostalAddress:
    """The postal address of a persons row (or any row carrying its address columns)."""
    return PostalAddress.from_register(
        row.adresse_ligne2, row.adresse_ligne3, row.adresse_ligne4, row.adresse_ligne5, row.code_postal, row.commune
    )


def printable_address(row: Any) -> bool:
    """Whether the person's address can carry a letter: printable by the AFNOR rules, not returned."""
    return not row.address_returned and address_of(row).is_printable


_RECIPIENTS = text(
    "SELECT n.notification_id, n.wave_id, n.recipient_nir, n.shard, n.email, r.email_bounced, r.address_returned,"
    " r.adresse_ligne2, r.adresse_ligne3, r.adresse_ligne4, r.adresse_ligne5, r.code_postal, r.commune,"
    " r.date_deces"
    " FROM notifications n JOIN persons r ON r.nir = n.recipient_nir WHERE n.notification_id IN :ids"
).bindparams(bindparam("ids", expanding=True))


def email_failed(
    connection: Connection,
    notification_ids: Sequence[str],
    *,
    bounced: bool,
    reason: str,
    run_id: str,
    now: dt.datetime,
    input_file_id: int | None = None,
) -> FallbackSummary:
    """Emails that will not reach their people: the window stops (if it ran), and a letter goes
    instead where the recipient's address is printable; otherwise the people are unreachable.
    `bounced`: the relay refused the address for good, so it is not used again."""
    summary = FallbackSummary()
    if not notification_ids:
        return summary
    recipients: list[Any] = []
    for part in dao.chunked(list(notification_ids)):
        recipients += connection.execute(_RECIPIENTS, {"ids": list(part)}).all()
    if bounced:
        # Only the address that bounced: the register may have brought a new one since.
        bounced_pairs = sorted({(row.recipient_nir, row.email) for row in recipients if row.email})
        nirs = []
        for nir, email in bounced_pairs:
            changed = connection.execute(
                text(
                    "UPDATE persons SET email_bounced = TRUE"
                    " WHERE nir = :nir AND email = :email AND email_bounced = FALSE"
                ),
                {"nir": nir, "email": email},
            ).rowcount
            if changed:
                nirs.append(nir)
        audit_trail.record_many(
            connection,
            (
                audit_trail.AuditEvent(
                    "person", nir, "email_bounced", now, reason=reason, run_id=run_id, input_file_id=input_file_id
                )
                for nir in nirs
            ),
        )
    for row in recipients:
        enrolment_dao.suspend_window(connection, row.notification_id, reason, run_id=run_id, now=now)
        if row.date_deces is None and printable_address(row):
            if queue_letter(connection, row, replaces=row.notification_id, run_id=run_id, now=now):
                summary.letters_queued += 1
        else:
            enrolment_dao.mark_unreachable(
                connection, row.notification_id, UnreachableReason.EMAIL_FAILED_NO_ADDRESS, run_id=run_id, now=now
            )
            summary.unreachable_messages += 1
    return summary


def queue_letter(connection: Connection, failed: Any, *, replaces: str, run_id: str, now: dt.datetime) -> bool:
    """A letter in the same wave for the people of a failed email who still wait for a message."""
    letter_id = fallback_letter_id(replaces)
    people = connection.execute(
        text(
            "SELECT m.nir FROM notification_members m JOIN enrolments e ON e.nir = m.nir"
            " WHERE m.notification_id = :id AND e.state = :planned ORDER BY m.nir"
        ),
        {"id": replaces, "planned": EnrolmentState.PLANNED.value},
    ).scalars().all()
    if not people:
        return False
    created = connection.execute(
        text(
            "INSERT INTO notifications (notification_id, wave_id, recipient_nir, channel, status, shard,"
            " replaces_notification_id, reference, created_at, updated_at)"
            " VALUES (:id, :wave_id, :recipient, :letter, :created, :shard, :replaces, :reference, :now, :now)"
            " ON CONFLICT (notification_id) DO NOTHING"
        ),
        {
            "id": letter_id,
            "wave_id": failed.wave_id,
            "recipient": failed.recipient_nir,
            "letter": Channel.LETTER.value,
            "created": NotificationStatus.CREATED.value,
            "shard": failed.shard,
            "replaces": replaces,
            "reference": free_references(connection, [letter_id])[letter_id],
            "now": now,
        },
    ).rowcount
    if not created:
        return False
    connection.execute(
        text("INSERT INTO notification_members (notification_id, nir) VALUES (:id, :nir)"),
        [{"id": letter_id, "nir": nir} for nir in people],
    )
    enrolment_dao.point_at_letter(connection, letter_id, people)
    audit_trail.record(
        connection,
        audit_trail.AuditEvent(
            "notification", letter_id, "fallback_letter_queued", now, to_state=NotificationStatus.CREATED.value,
            reason=f"fallback for {replaces}", run_id=run_id,
        ),
    )
    return True


def letter_returned(
    connection: Connection, notification_id: str, recipient_nir: str, *, run_id: str, now: dt.datetime,
    input_file_id: int | None = None,
) -> int:
    """NPAI: the address is invalid until the register brings a new one; the people are unreachable."""
    connection.execute(
        text("UPDATE persons SET address_returned = TRUE WHERE nir = :nir AND address_returned = FALSE"),
        {"nir": recipient_nir},
    )
    audit_trail.record(
        connection,
        audit_trail.AuditEvent(
            "person", recipient_nir, "address_returned", now, reason=f"letter {notification_id} returned",
            run_id=run_id, input_file_id=input_file_id,
        ),
    )
    return enrolment_dao.mark_unreachable(
        connection, notification_id, UnreachableReason.LETTER_RETURNED, run_id=run_id, now=now
    )


