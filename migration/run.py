"""A migration run as its DAG tasks see it: one function per task, each safe to run again.

The same functions run in-process for the CLI's benchmark and the crash test (`migrate`), so the
path tested is the path Airflow runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from mes_rollout.config import Settings
from mes_rollout.constants import MigrationRunState
from migration import pipeline
from migration.store import DocumentStore

log = logging.getLogger(__name__)


class MigrationRunFailed(RuntimeError):
    """The run did not succeed (stopped by the gate or failed a validation); the report says why."""


def start(engine: Engine, settings: Settings, logical_date: dt.date, *, dag_run_id: str | None = None,
          holdback_threshold: float | None = None) -> dict[str, Any]:  # fmt: skip
    threshold = settings.holdback_threshold if holdback_threshold is None else holdback_threshold
    plan = pipeline.plan_run(engine, logical_date, threshold=threshold, dag_run_id=dag_run_id)
    return {"run_id": plan.run_id, "resumed": plan.resumed, "dmps": plan.dmps, "batches": plan.batches}


def _logical_date(engine: Engine, run_id: str) -> dt.date:
    from mes_rollout.db import as_date

    with engine.connect() as connection:
        value = connection.execute(
            text("SELECT logical_date FROM migration_runs WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
    day = as_date(value)
    assert day is not None
    return day


def classify(engine: Engine, store: DocumentStore, run_id: str) -> dict[str, Any]:
    counts = pipeline.classify_run(engine, store, run_id, as_of=_logical_date(engine, run_id))
    return {"run_id": run_id, **counts}


def validate_decisions(engine: Engine, settings: Settings, run_id: str) -> dict[str, Any]:
    from validation.migration_checks import ValidationFailed
    from validation.migration_checks import validate_decisions as check

    with engine.connect() as connection:
        threshold = float(
            connection.execute(
                text("SELECT holdback_threshold FROM migration_runs WHERE run_id = :r"), {"r": run_id}
            ).scalar_one()
        )
    try:
        summary = check(engine, settings, run_id, threshold)
    except ValidationFailed as error:
        pipeline.finish_run(engine, run_id, MigrationRunState.FAILED, stop_reason=str(error))
        raise
    return {"run_id": run_id, "passed": summary["passed"], "gx_seconds": summary["gx_seconds"]}


def gate(engine: Engine, run_id: str) -> dict[str, Any]:
    result = pipeline.check_gate(engine, run_id)
    return {"run_id": run_id, "holdback_rate": result.rate, "threshold": result.threshold, "documents": result.documents}


def commit(engine: Engine, store: DocumentStore, run_id: str) -> dict[str, Any]:
    return {"run_id": run_id, **pipeline.commit_run(engine, store, run_id)}


def validate_committed(engine: Engine, settings: Settings, store: DocumentStore, run_id: str) -> dict[str, Any]:
    from validation.migration_checks import ValidationFailed
    from validation.migration_checks import validate_committed as check

    try:
        summary = check(engine, settings, store, run_id)
    except ValidationFailed as error:
        pipeline.finish_run(engine, run_id, MigrationRunState.FAILED, stop_reason=str(error))
        raise
    pipeline.finish_run(engine, run_id, MigrationRunState.SUCCEEDED)
    return {"run_id": run_id, "passed": summary["passed"], "gx_seconds": summary["gx_seconds"]}


def report(engine: Engine, settings: Settings, run_id: str) -> dict[str, Any]:
    """Write the report whatever happened; then fail if the run did not succeed (visible in Airflow)."""
    from validation.report import write_report

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

    def timed(name: str, call: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            timings.phases[name] = timings.phases.get(name, 0.0) + time.perf_counter() - started

    plan = timed("plan", lambda: start(engine, settings, logical_date, holdback_threshold=holdback_threshold))
    run_id = plan["run_id"]
    try:
        timed("classify", classify, engine, store, run_id)
        decided = timed("validate_decisions", validate_decisions, engine, settings, run_id)
        timings.gx_seconds += decided["gx_seconds"]
        timed("gate", gate, engine, run_id)
        timed("commit", commit, engine, store, run_id)
        committed = timed("validate_committed", validate_committed, engine, settings, store, run_id)
        timings.gx_seconds += committed["gx_seconds"]
    finally:
        timed("report", lambda: _report_quietly(engine, settings, run_id))
    return report(engine, settings, run_id)


def _report_quietly(engine: Engine, settings: Settings, run_id: str) -> Path:
    from validation.report import write_report

    return write_report(engine, settings, run_id)


def migration_due(connection: Connection, day: dt.date) -> bool:
    """Is there an active space whose person's DMP was never taken on (used by `advance`)?"""
    return (
        connection.execute(
            text(
                "SELECT 1 FROM spaces s JOIN dmp_records d ON d.nir = s.nir"
                " WHERE s.state = 'active' AND s.created_on <= :day"
                " AND NOT EXISTS (SELECT 1 FROM dmp_migrations m WHERE m.dmp_id = d.dmp_id) LIMIT 1"
            ),
            {"day": day},
        ).first()
        is not None
    )
