"""The daily DAGs, and `mes-rollout advance`: run them in-process day by day up to a date.

Each day's DAG runs with that day as its logical date, through `console.dagrun.run_dag`
(`dag.test()`), the same path as everywhere else. A DAG may name a due check: a cheap query that
tells that the day has nothing for it, so that the day is recorded 'nothing_due' without starting
Airflow at all. The days done are kept in the table daily_runs: each DAG goes on from the day
after the last one it ran (or from the first wave's send date), unless told where to start. A DAG
that fails stops alone: the others go on, and the failure is reported with its reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, text

from console.commands import CommandFailed
from enrolment.spaces import creation_due
from enrolment.weekly import weekly_wave_due
from mes_rollout.constants import WaveState
from mes_rollout.db import as_date
from migration.run import last_run_of_day, migration_due
from notifications.dao import sending_due

log = logging.getLogger(__name__)

# In this order each day: the weekly wave is planned (on its weekday, after the calendar), messages
# due are sent (their windows start), spaces whose window closed are created, then the DMPs of the
# new spaces are carried over.
DAILY_DAGS: tuple[str, ...] = ("weekly_wave", "notification_sending", "space_creation", "dmp_migration")

DueCheck = Callable[[Connection, dt.date], bool]

# dag_id -> the check telling whether the day has anything for it. A DAG without one runs every day.
DUE_CHECKS: dict[str, DueCheck] = {
    "weekly_wave": weekly_wave_due,
    "notification_sending": sending_due,
    "space_creation": creation_due,
    "dmp_migration": migration_due,
}


def next_days(connection: Connection, dag_ids: tuple[str, ...] = DAILY_DAGS) -> dict[str, dt.date | None]:
    """For each DAG, the day after the last one advanced (whatever its outcome); for a DAG never
    advanced, the first wave's send date (None when there is no wave yet)."""
    first_wave = as_date(
        connection.execute(
            text("SELECT MIN(send_date) FROM waves WHERE state NOT IN (:dry_run, :rejected)"),
            {"dry_run": WaveState.DRY_RUN.value, "rejected": WaveState.REJECTED.value},
        ).scalar()
    )
    days: dict[str, dt.date | None] = {}
    for dag_id in dag_ids:
        last = as_date(
            connection.execute(
                text("SELECT MAX(logical_date) FROM daily_runs WHERE dag_id = :dag_id"), {"dag_id": dag_id}
            ).scalar()
        )
        days[dag_id] = last + dt.timedelta(days=1) if last is not None else first_wave
    return days


def first_pending_day(connection: Connection, dag_ids: tuple[str, ...] = DAILY_DAGS) -> dt.date | None:
    """The earliest day some DAG still has to run."""
    pending = [day for day in next_days(connection, dag_ids).values() if day is not None]
    return min(pending) if pending else None


def _record(engine: Engine, dag_id: str, day: dt.date, outcome: str, run_id: str | None) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO daily_runs (dag_id, logical_date, outcome, run_id, finished_at)"
                " VALUES (:dag_id, :day, :outcome, :run_id, :now)"
                " ON CONFLICT (dag_id, logical_date) DO UPDATE SET outcome = excluded.outcome,"
                " run_id = excluded.run_id, finished_at = excluded.finished_at"
            ),
            {"dag_id": dag_id, "day": day, "outcome": outcome, "run_id": run_id, "now": dt.datetime.now(dt.UTC)},
        )


def _migration_failure(engine: Engine, day: dt.date) -> dict[str, Any]:
    """Why the DMP migration of a day stopped, and where its report is."""
    with engine.connect() as connection:
        run = last_run_of_day(connection, day)
    if run is None:
        return {}
    return {
        "migration_run": run["run_id"],
        "migration_state": run["state"],
        "reason": run["stop_reason"],
        "report": run["report_path"],
    }


class AdvanceFailed(CommandFailed):
    """Some daily DAG failed during an advance; the others went on. `summary` is the whole account."""

    def __init__(self, summary: dict[str, Any]) -> None:
        lines = []
        for failure in summary["failures"]:
            what = failure.get("reason") or "; ".join(
                f"{error['task']}: {error['error']}" for error in failure["errors"]
            )
            lines.append(f"{failure['dag_id']} failed on {failure['day']}: {what}")
            if failure.get("report"):
                lines.append(f"  report: {failure['report']}")
            lines.append(f"  log: {failure['log']}")
            lines.append(f"  it was not run again in this advance; the other daily DAGs went on to {summary['to']}")
        super().__init__("\n".join(lines), summary)


def advance(
    to: dt.date,
    *,
    start: dt.date | None = None,
    engine: Engine | None = None,
    dag_ids: tuple[str, ...] = DAILY_DAGS,
) -> dict[str, Any]:
    """Run the daily DAGs for every day up to `to`: each DAG from `start`, or else from the day after
    the last one it ran. A DAG that fails is reported (its reason, its report, its log) and not run
    again in this advance; the others go on (a stopped migration must not stop sending or the
    creation of spaces). Raises AdvanceFailed, carrying the whole summary, when any DAG failed."""
    from console.dagrun import run_dag
    from mes_rollout.db import get_engine

    engine = engine or get_engine()
    began = time.monotonic()
    with engine.connect() as connection:
        pending = next_days(connection, dag_ids)
    starts = {dag_id: start or pending[dag_id] or to for dag_id in dag_ids}
    first = min(starts.values())
    ran: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    failed: set[str] = set()
    nothing_due = 0
    day = first
    while day <= to:
        for dag_id in dag_ids:
            if dag_id in failed or day < starts[dag_id]:
                continue
            check = DUE_CHECKS.get(dag_id)
            if check is not None:
                with engine.connect() as connection:
                    due = check(connection, day)
                if not due:
                    _record(engine, dag_id, day, "nothing_due", None)
                    nothing_due += 1
                    continue
            result = run_dag(dag_id, day, raise_on_failure=False)
            if result.state != "success":
                _record(engine, dag_id, day, "failed", result.run_id)
                failed.add(dag_id)
                failure: dict[str, Any] = {
                    "day": day.isoformat(),
                    "dag_id": dag_id,
                    "run_id": result.run_id,
                    "errors": [{"task": error.task, "error": error.error} for error in result.errors],
                    "log": str(result.log_path),
                }
                if dag_id == "dmp_migration":
                    failure.update(_migration_failure(engine, day))
                failures.append(failure)
                log.warning("advance: %s failed for %s", dag_id, day)
                continue
            _record(engine, dag_id, day, "ran", result.run_id)
            returns = {task: value for task, value in result.xcom_returns.items() if isinstance(value, dict)}
            ran.append({"day": day.isoformat(), "dag_id": dag_id, "run_id": result.run_id, "results": returns})
            log.info("advance: %s ran for %s", dag_id, day)
        day += dt.timedelta(days=1)
    summary = {
        "from": first.isoformat(),
        "to": to.isoformat(),
        "days": max((to - first).days + 1, 0),
        "runs": ran,
        "nothing_due": nothing_due,
        "failures": failures,
        "seconds": round(time.monotonic() - began, 3),
    }
    if failures:
        raise AdvanceFailed(summary)
    return summary
