"""The rollout summary tables (sql/schema/0011): refreshed set-based, read by the Rollout pages.

The pages in Airflow's UI and `mes-rollout report` never count the live tables (tens of millions
of rows, counted again on every page view): the daily DAGs call `refresh` at the end of their run,
which rebuilds the summary in one transaction from a handful of GROUP BY queries
(sql/queries/rollout_summary_*.sql). It is plumbing: the rules are in the queries, every state and
code bound from mes_rollout.constants.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import Connection, Engine, text

from mes_rollout.constants import (
    Channel,
    EnrolmentState,
    FileKind,
    NotificationStatus,
    SpaceCause,
)
from mes_rollout.db import load_query

SUMMARY_TABLES = (
    "rollout_summary_waves",
    "rollout_summary_departements",
    "rollout_summary_days",
    "rollout_summary_reasons",
    "rollout_summary_totals",
)
QUERIES = (
    "rollout_summary_waves.sql",
    "rollout_summary_departements.sql",
    "rollout_summary_days.sql",
    "rollout_summary_reasons.sql",
    "rollout_summary_totals.sql",
)
# What rollout_summary_reasons.kind says.
KIND_EXCLUSION = "exclusion"
KIND_UNREACHABLE = "unreachable"
NO_REASON = "UNKNOWN"
# enrolment.waves.CohortOutcome's values (wave_cohort.outcome): the plumbing floor cannot import
# the enrolment floor, so they are repeated here; tests/ui check that they match.
COHORT_NOTIFY, COHORT_UNREACHABLE, COHORT_EXCLUDED = "notify", "unreachable", "excluded"
_ADVISORY_LOCK_KEY = 7_413_220_11  # refreshes queue one behind the other on PostgreSQL
_PARAMETER = re.compile(r"(?<!:):([a-z_]+)")

Status = NotificationStatus


def _parameters(now: dt.datetime) -> dict[str, Any]:
    return {
        "now": now,
        "email": Channel.EMAIL.value,
        "letter": Channel.LETTER.value,
        "outcome_notify": COHORT_NOTIFY,
        "outcome_unreachable": COHORT_UNREACHABLE,
        "outcome_excluded": COHORT_EXCLUDED,
        "created": Status.CREATED.value,
        "sending": Status.SENDING.value,
        "delivered": Status.DELIVERED.value,
        "temporary_failure": Status.TEMPORARY_FAILURE.value,
        "permanent_failure": Status.PERMANENT_FAILURE.value,
        "technical_failure": Status.TECHNICAL_FAILURE.value,
        "posted": Status.POSTED.value,
        "returned": Status.RETURNED.value,
        "cancelled": Status.CANCELLED.value,
        "planned": EnrolmentState.PLANNED.value,
        "notified": EnrolmentState.NOTIFIED.value,
        "unreachable": EnrolmentState.UNREACHABLE.value,
        "opposed": EnrolmentState.OPPOSED.value,
        "late_opposed": EnrolmentState.LATE_OPPOSED.value,
        "created_state": EnrolmentState.CREATED.value,
        "closed": EnrolmentState.CLOSED.value,
        "deceased": EnrolmentState.CANCELLED_DECEASED.value,
        "activation": SpaceCause.ACTIVATION.value,
        "automatic": SpaceCause.AUTOMATIC.value,
        "kind_exclusion": KIND_EXCLUSION,
        "kind_unreachable": KIND_UNREACHABLE,
        "no_reason": NO_REASON,
        "register_kind": FileKind.REGISTER.value,
    }


def refresh_in(connection: Connection, *, source: str, run_id: str | None, now: dt.datetime) -> None:
    """Rebuild every summary table inside the caller's transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    for table in SUMMARY_TABLES:
        connection.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - a fixed table name
    parameters = _parameters(now)
    for name in QUERIES:
        sql = load_query(name)
        used = {key: parameters[key] for key in _PARAMETER.findall(sql)}
        connection.execute(text(sql), used)
    connection.execute(
        text(
            "INSERT INTO rollout_summary_refresh (singleton, refreshed_at, run_id, source)"
            " VALUES (1, :now, :run_id, :source)"
            " ON CONFLICT (singleton) DO UPDATE SET refreshed_at = excluded.refreshed_at,"
            " run_id = excluded.run_id, source = excluded.source"
        ),
        {"now": now, "run_id": run_id, "source": source},
    )


def refresh(engine: Engine, *, source: str, run_id: str | None = None, now: dt.datetime | None = None) -> None:
    """Rebuild the summary in one transaction (called at the end of a DAG run's work)."""
    with engine.begin() as connection:
        refresh_in(connection, source=source, run_id=run_id, now=now or dt.datetime.now(dt.UTC))
