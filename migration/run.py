"""A migration run step by step, on the engine, settings and store it is given: one function per task
of the dmp_migration DAG, each safe to run again.

`migration.tasks` (what the DAG calls) obtains the engine, settings and store and calls these; the
same functions run in-process for the CLI's benchmark and the crash test (`migrate`), so the path
tested is the path Airflow runs. Tuning comes from the settings given here, never from the
environment: people per batch, copying threads, commit connections, the largest document.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, text

from mes_rollout.config import Settings
from mes_rollout.constants import MigrationRunState, SpaceState
from mes_rollout.db import as_date
from migration import pipeline
from migration.store import DocumentStore
from validation import migration_checks
from validation.migration_checks import ValidationFailed
from validation.report import write_report

log = logging.getLogger(__name__)


class MigrationRunFailed(RuntimeError):
    """The run did not succeed (stopped by the gate or failed a validation); the report says why."""


def start(engine: Engine, settings: Settings, logical_date: dt.date, *, dag_run_id: str | None = None,
          holdback_threshold: float | None = None) -> dict[str, Any]:  # fmt: skip
    threshold = settings.holdback_threshold if holdback_threshold is None else holdback_threshold
    plan = pipeline.plan_run(
        engine, logical_date, threshold=threshold, persons_per_batch=settings.migration_batch_persons,
        dag_run_id=dag_run_id,
    )  # fmt: skip
    return {"run_id": plan.run_id, "resumed": plan.resumed, "dmps": plan.dmps, "batches": plan.batches}


def _logical_date(engine: Engine, run_id: str) -> dt.date:
    with engine.connect() as connection:
        value = connection.execute(
            text("SELECT logical_date FROM migration_runs WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
    day = as_date(value)
    assert day is not None
    return day


def classify(engine: Engine, settings: Settings, store: DocumentStore, run_id: str) -> dict[str, Any]:
    counts = pipeline.classify_run(
        engine, store, run_id, as_of=_logical_date(engine, run_id), workers=settings.migration_content_workers,
        max_document_bytes=settings.max_document_bytes,
    )  # fmt: skip
    return {"run_id": run_id, **counts}


def validate_decisions(engine: Engine, settings: Settings, run_id: str) -> dict[str, Any]:
    with engine.connect() as connection:
        threshold = float(
            connection.execute(
                text("SELECT holdback_threshold FROM migration_runs WHERE run_id = :r"), {"r": run_id}
            ).scalar_one()
        )
    try:
        summary = migration_checks.validate_decisions(engine, settings, run_id, threshold)
    except ValidationFailed as error:
        pipeline.finish_run(engine, run_id, MigrationRunState.FAILED, stop_reason=str(error))
        raise
    return {"run_id": run_id, "passed": summary["passed"], "gx_seconds": summary["gx_seconds"]}


def gate(engine: Engine, run_id: str) -> dict[str, Any]:
    result = pipeline.check_gate(engine, run_id)
    return {"run_id": run_id, "holdback_rate": result.rate, "threshold": result.threshold, "documents": result.documents}


def commit(engine: Engine, settings: Settings, store: DocumentStore, run_id: str) -> dict[str, Any]:
    committed = pipeline.commit_run(engine, store, run_id, connections=settings.migration_commit_connections)
    return {"run_id": run_id, **committed}


def validate_committed(engine: Engine, settings: Settings, store: DocumentStore, run_id: str) -> dict[str, Any]:
    try:
        summary = migration_checks.validate_committed(engine, settings, store, run_id)
    except ValidationFailed as error:
        pipeline.finish_run(engine, run_id, MigrationRunState.FAILED, stop_reason=str(error))
        raise
    pipeline.finish_run(engine, run_id, MigrationRunState.SUCCEEDED)
    return {"run_id": run_id, "passed": summary["passed"], "gx_seconds": summary["gx_seconds"]}


def report(engine: Engine, settings: Settings, run_id: str) -> dict[str, Any]:
    """Write the report whatever happened; then fail if the run did not succeed (visible in Airflow)."""
    path = write_report(engine, settings, run_id)
    with engine.connect() as connection:
        state, reason = connection.execute(
            text("SELECT state, stop_reason FROM migration_runs WHERE run_id = :r"), {"r": run_id}
        ).one()
    if state != MigrationRunState.SUCCEEDED:
        raise MigrationRunFailed(f"migration run {run_id} ended {state}: {reason or 'see the report'} (report: {path})")
    return {"run_id": run_id, "report": str(path)}


@dataclass
class MigrationTimings:
    """Where a whole in-process run spent its time (the benchmark prints it)."""

    phases: dict[str, float] = field(default_factory=dict)
    gx_seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.phases.values())


def migrate(
    engine: Engine,
    settings: Settings,
    store: DocumentStore,
    logical_date: dt.date,
    *,
    holdback_threshold: float | None = None,
    timings: MigrationTimings | None = None,
) -> dict[str, Any]:
    """Every task of the dmp_migration DAG in order, in this process; the report is always written."""
    timings = timings if timings is not None else MigrationTimings()

    def timed(name: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return call()
        finally:
            timings.phases[name] = timings.phases.get(name, 0.0) + time.perf_counter() - started

    plan = timed("plan", lambda: start(engine, settings, logical_date, holdback_threshold=holdback_threshold))
    run_id = plan["run_id"]
    try:
        timed("classify", lambda: classify(engine, settings, store, run_id))
        decided = timed("validate_decisions", lambda: validate_decisions(engine, settings, run_id))
        timings.gx_seconds += decided["gx_seconds"]
        timed("gate", lambda: gate(engine, run_id))
        timed("commit", lambda: commit(engine, settings, store, run_id))
        committed = timed("validate_committed", lambda: validate_committed(engine, settings, store, run_id))
        timings.gx_seconds += committed["gx_seconds"]
    finally:
        timed("report", lambda: write_report(engine, settings, run_id))
    return report(engine, settings, run_id)


def migration_due(connection: Connection, day: dt.date) -> bool:
    """Is there an active space whose person's DMP was never taken on (used by `advance`)?"""
    return (
        connection.execute(
            text(
                "SELECT 1 FROM spaces s JOIN dmp_records d ON d.nir = s.nir"
                " WHERE s.state = :active AND s.created_on <= :day"
                " AND NOT EXISTS (SELECT 1 FROM dmp_migrations m WHERE m.dmp_id = d.dmp_id) LIMIT 1"
            ),
            {"day": day, "active": SpaceState.ACTIVE.value},
        ).first()
        is not None
    )


def last_run_of_day(connection: Connection, day: dt.date) -> dict[str, Any] | None:
    """The latest migration run of a day: its id, state, why it stopped and where its report is."""
    row = connection.execute(
        text(
            "SELECT run_id, state, stop_reason, report_path FROM migration_runs"
            " WHERE logical_date = :day ORDER BY started_at DESC LIMIT 1"
        ),
        {"day": day},
    ).first()
    if row is None:
        return None
    return {"run_id": row[0], "state": row[1], "stop_reason": row[2], "report_path": row[3]}
