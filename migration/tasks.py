"""What the DMP DAGs' tasks do, testable without a scheduler: each function takes the run's values
(its day or params, its run id, the triggering Asset events' extras as plain dicts) and returns
counts, ids and paths only (they go to XCom). The engine, the settings and the document store are
obtained here and nowhere else; the work itself is `migration.run` and `migration.intake`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from mes_rollout.config import Settings, load_settings
from mes_rollout.db import get_engine
from mes_rollout.rollout_summary import refresh as refresh_summary
from mes_rollout.runday import run_day
from migration import run
from migration.intake import load_dmp_extract
from migration.store import DocumentStore, open_store


@dataclass(frozen=True)
class _Resources:
    engine: Engine
    settings: Settings

    def store(self) -> DocumentStore:
        return open_store(self.settings)


def _resources() -> _Resources:
    """The one place a task gets its engine, settings and store (read when the task starts)."""
    return _Resources(get_engine(), load_settings())


# --- dmp_intake ---------------------------------------------------------------------------------


def load_extract(extract_dir: str, run_id: str | None) -> dict[str, Any]:
    """Stage one extract folder; the counts per file (the folder's path stays out of XCom)."""
    summary = load_dmp_extract(_resources().engine, Path(extract_dir), run_id=run_id)
    return {key: value for key, value in summary.as_dict().items() if key != "extract_dir"}


# --- dmp_migration ------------------------------------------------------------------------------


def migration_day(
    date_param: str | None,
    logical_date: dt.datetime | None,
    run_after: dt.datetime | None,
    asset_extras: Iterable[Mapping[str, Any]] = (),
) -> dt.date:
    """The day a migration run works for: the `date` Param when given; else the run's day in Paris
    (an Asset-triggered run has no logical date: the day it was due to run), and never before the
    latest day space_creation says it created spaces on (`created_on` in its Asset events' extras),
    whatever the clock says."""
    if date_param:
        return dt.date.fromisoformat(date_param)
    day = run_day(logical_date, run_after)
    for extra in asset_extras:
        created_on = extra.get("created_on")
        if created_on:
            day = max(day, dt.date.fromisoformat(str(created_on)[:10]))
    return day


def plan(
    params: Mapping[str, Any],
    *,
    logical_date: dt.datetime | None,
    run_after: dt.datetime | None,
    dag_run_id: str | None,
    asset_extras: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Plan the run of the day (or resume the one interrupted): its id and how many DMPs and batches."""
    day = migration_day(params.get("date"), logical_date, run_after, asset_extras)
    threshold = params.get("holdback_threshold")
    resources = _resources()
    return run.start(
        resources.engine, resources.settings, day, dag_run_id=dag_run_id,
        holdback_threshold=None if threshold is None else float(threshold),
    )  # fmt: skip


def classify(run_id: str) -> dict[str, Any]:
    resources = _resources()
    return run.classify(resources.engine, resources.settings, resources.store(), run_id)


def validate_decisions(run_id: str) -> dict[str, Any]:
    resources = _resources()
    return run.validate_decisions(resources.engine, resources.settings, run_id)


def quality_gate(run_id: str) -> dict[str, Any]:
    return run.gate(_resources().engine, run_id)


def commit(run_id: str) -> dict[str, Any]:
    resources = _resources()
    return run.commit(resources.engine, resources.settings, resources.store(), run_id)


def validate_migration(run_id: str) -> dict[str, Any]:
    resources = _resources()
    return run.validate_committed(resources.engine, resources.settings, resources.store(), run_id)


def report(run_id: str) -> dict[str, Any]:
    """Write the run's report; fails when the run did not succeed (a stopped run is visible)."""
    resources = _resources()
    try:
        return run.report(resources.engine, resources.settings, run_id)
    finally:  # a stopped run's figures count too
        refresh_summary(resources.engine, source="dmp_migration", run_id=run_id)
