"""Counts of the whole pipeline for `mes-rollout status`: a small fixed set of GROUP BY queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from mes_rollout.constants import DocumentOutcome


def _grouped(connection: Connection, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in connection.execute(text(sql))]


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
