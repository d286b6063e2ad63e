"""The console's read functions: counts of the whole pipeline (`mes-rollout status`), of one sending
run, of the waves, and the demo's funnel; each a small fixed set of GROUP BY queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from mes_rollout.constants import Channel, DocumentOutcome, NotificationStatus
from mes_rollout.db import as_date


def _grouped(connection: Connection, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in connection.execute(text(sql), params)]


def pipeline_status(connection: Connection) -> dict[str, Any]:
    persons = connection.execute(text("SELECT COUNT(*) FROM persons")).scalar_one()
    quarantined = connection.execute(
        text("SELECT COUNT(*) FROM quarantine WHERE file_kind = 'register'")
    ).scalar_one()
    enrolments = dict(_grouped(connection, "SELECT state, COUNT(*) FROM enrolments GROUP BY state ORDER BY state"))
    notifications: dict[str, dict[str, int]] = {}
    for channel, status, count in _grouped(
        connection, "SELECT channel, status, COUNT(*) FROM notifications GROUP BY channel, status ORDER BY 1, 2"
    ):
        notifications.setdefault(channel, {})[status] = count
    spaces = dict(_grouped(connection, "SELECT state, COUNT(*) FROM spaces GROUP BY state ORDER BY state"))
    outcomes = dict(_grouped(connection, "SELECT outcome, COUNT(*) FROM dmp_document_outcomes GROUP BY outcome"))
    return {
        "persons": {"total": persons, "quarantined_rows": quarantined},
        "enrolments": enrolments,
        "notifications": notifications,
        "spaces": spaces,
        "dmp_documents": {outcome.value: outcomes.get(outcome.value, 0) for outcome in DocumentOutcome},
    }


def send_report(connection: Connection, run_id: str, xcom_returns: dict[str, Any]) -> dict[str, Any]:
    """What one notification_sending run did: its attempts by outcome (sending_attempts keeps the run
    id), the emails still waiting, and the letters its print task printed and posted."""
    attempts = dict(
        _grouped(
            connection,
            "SELECT outcome, COUNT(*) FROM sending_attempts WHERE run_id = :run GROUP BY outcome",
            run=run_id,
        )
    )
    left = connection.execute(
        text(
            "SELECT COUNT(*) FROM notifications WHERE channel = 'email'"
            " AND status IN ('created', 'sending', 'temporary_failure')"
        )
    ).scalar_one()
    letters = xcom_returns.get("print_and_post_letters") or {}
    return {
        "emails_sent": attempts.get(NotificationStatus.SENT.value, 0),
        "emails_bounced": attempts.get(NotificationStatus.PERMANENT_FAILURE.value, 0),
        "emails_failed": attempts.get(NotificationStatus.TECHNICAL_FAILURE.value, 0),
        "emails_deferred": attempts.get(NotificationStatus.TEMPORARY_FAILURE.value, 0),
        "emails_left": left,
        "letters_printed": letters.get("letters_printed", 0),
        "letters_not_printable": letters.get("not_printable", 0),
        "letters_not_needed": letters.get("not_needed", 0),
        "batches_posted": letters.get("posted_batches", []),
    }


def wave_list(connection: Connection) -> list[dict[str, Any]]:
    """Every wave: state, send date, départements, people planned and its messages by channel."""
    messages: dict[str, dict[str, int]] = {}
    for wave_id, channel, status, count in _grouped(
        connection,
        "SELECT wave_id, channel, status, COUNT(*) FROM notifications GROUP BY wave_id, channel, status",
    ):
        counts = messages.setdefault(wave_id, {})
        counts[channel] = counts.get(channel, 0) + count
        counts[status] = counts.get(status, 0) + count
    people = dict(_grouped(connection, "SELECT wave_id, COUNT(*) FROM enrolments GROUP BY wave_id"))
    waves = []
    for wave_id, departements, send_date, state in _grouped(
        connection, "SELECT wave_id, departements, send_date, state FROM waves ORDER BY send_date, wave_id"
    ):
        counts = messages.get(wave_id, {})
        waves.append(
            {
                "wave_id": wave_id,
                "state": state,
                "send_date": str(as_date(send_date)),
                "departements": [code for code in departements.split(",") if code],
                "people": people.get(wave_id, 0),
                "emails": counts.get(Channel.EMAIL.value, 0),
                "letters": counts.get(Channel.LETTER.value, 0),
                "sent": counts.get(NotificationStatus.SENT.value, 0) + counts.get(NotificationStatus.DELIVERED.value, 0),
                "posted": counts.get(NotificationStatus.POSTED.value, 0),
            }
        )
    return waves


def funnel(connection: Connection, wave_id: str) -> dict[str, int]:
    """The path of one wave's people, as the demo's summary tells it: eligible, told by email or
    letter, reached or bounced, opposed, activated, spaces created, DMP documents carried over."""

    def count(sql: str, **params: Any) -> int:
        return int(connection.execute(text(sql), {"wave": wave_id, **params}).scalar() or 0)

    by_channel = dict(
        _grouped(connection, "SELECT channel, COUNT(*) FROM notifications WHERE wave_id = :wave GROUP BY channel",
                 wave=wave_id)
    )
    outcomes = dict(_grouped(connection, "SELECT outcome, COUNT(*) FROM dmp_document_outcomes GROUP BY outcome"))
    return {
        "persons": count("SELECT COUNT(*) FROM persons"),
        "eligible": count("SELECT COUNT(*) FROM enrolments WHERE wave_id = :wave"),
        "emails": by_channel.get(Channel.EMAIL.value, 0),
        "letters": by_channel.get(Channel.LETTER.value, 0),
        "emails_sent": count(
            "SELECT COUNT(*) FROM notifications WHERE wave_id = :wave AND channel = 'email'"
            " AND status IN ('sent', 'delivered')"
        ),
        "emails_bounced": count(
            "SELECT COUNT(*) FROM notifications WHERE wave_id = :wave AND channel = 'email'"
            " AND status IN ('permanent_failure', 'technical_failure')"
        ),
        "letters_posted": count(
            "SELECT COUNT(*) FROM notifications WHERE wave_id = :wave AND channel = 'letter' AND status = 'posted'"
        ),
        "notified": count("SELECT COUNT(*) FROM enrolments WHERE wave_id = :wave AND notified_at IS NOT NULL"),
        "opposed": count(
            "SELECT COUNT(*) FROM enrolments WHERE wave_id = :wave AND state IN ('opposed', 'late_opposed')"
        ),
        "activated": count(
            "SELECT COUNT(*) FROM spaces s JOIN enrolments e ON e.nir = s.nir"
            " WHERE e.wave_id = :wave AND s.creation_cause = 'activation'"
        ),
        "spaces_created": count(
            "SELECT COUNT(*) FROM spaces s JOIN enrolments e ON e.nir = s.nir WHERE e.wave_id = :wave"
        ),
        "documents_migrated": outcomes.get(DocumentOutcome.MIGRATED.value, 0),
        "documents_held_back": outcomes.get(DocumentOutcome.HELD_BACK.value, 0),
        "documents_skipped": outcomes.get(DocumentOutcome.SKIPPED.value, 0),
    }
