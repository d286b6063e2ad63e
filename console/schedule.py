"""The daily DAGs, and `mes-rollout advance`: run them in-process day by day up to a date.

Each day's DAG runs with that day as its logical date, through `console.dagrun.run_dag`
(`dag.test()`), the same path as everywhere else. A DAG may name a due check: a cheap query that
tells that the day has nothing for it, so that the day is recorded 'nothing_due' without starting
Airflow at all. The days done are kept in the table daily_runs: `advance` goes on from the day
after the last one (or from the first wave's send date), unless told where to start.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, text

from enrolment.spaces import creation_due
from migration.run import migration_due
from notifications.dao import sending_due

log = logging.getLogger(__name__)

# In this order each day: messages due are sent (their windows start), spaces whose window closed
# are created, then the DMPs of the new spaces are carried over.
DAILY_DAGS: tuple[str, ...] = ("notification_sending", "space_creation", "dmp_migration")

DueCheck = Callable[[Connection, dt.date], bool]

# dag_id -> the check telling whether the day has anything for it. A DAG without one runs every day.
DUE_CHECKS: dict[str, DueCheck] = {
    "notification_sending": sending_due,
    "space_creation": creation_due,
    "dmp_migration": migration_due,
}


def first_pending_day(connection: Connection, dag_ids: tuple[str, ...] = DAILY_DAGS) -> dt.date | None:
    """The day after the last one advanced for every DAG, else the first wave's send date."""
    from mes_rollout.db import as_date

    last_days: list[dt.date] = []
    for dag_id in dag_ids:
        last = connection.execute(
            text("SELECT MAX(logical_date) FROM daily_runs WHERE dag_id = :dag_id"), {"dag_id": dag_id}
        ).scalar()
        if last is None:
            last_days = []
            break
        day = as_date(last)
        assert day is not None
        last_days.append(day)
    if last_days:
        return min(last_days) + dt.timedelta(days=1)
    first_wave = connection.execute(
        text("SELECT MIN(send_date) FROM waves WHERE state NOT IN ('dry_run', 'rejected')")
    ).scalar()
    return as_date(first_wave)


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


def advance(
    to: dt.date,
    *,
    start: dt.date | None = None,
    engine: Engine | None = None,
    dag_ids: tuple[str, ...] = DAILY_DAGS,
) -> dict[str, Any]:
    """Run the daily DAGs for every day from `start` (default: where the last advance stopped) to `to`."""
    from console.dagrun import run_dag
    from mes_rollout.db import get_engine

    engine = engine or get_engine()
    began = time.monotonic()
    if start is None:
        with engine.connect() as connection:
            start = first_pending_day(connection, dag_ids) or to
    ran: list[dict[str, Any]] = []
    nothing_due = 0
    day = start
    while day <= to:
        for dag_id in dag_ids:
            check = DUE_CHECKS.get(dag_id)
            if check is not None:
                with engine.connect() as connection:
                    due = check(connection, day)
                if not due:
                    _record(engine, dag_id, day, "nothing_due", None)
                    nothing_due += 1
                    continue
            result = run_dag(dag_id, day)
            _record(engine, dag_id, day, "ran", result.run_id)
            returns = {task: value for task, value in result.xcom_returns.items() if isinstance(value, dict)}
            ran.append({"day": day.isoformat(), "dag_id": dag_id, "run_id": result.run_id, "results": returns})
            log.info("advance: %s ran for %s", dag_id, day)
        day += dt.timedelta(days=1)
    return {
        "from": start.isoformat(),
        "to": to.isoformat(),
        "days": max((to - start).days + 1, 0),
        "runs": ran,
        "nothing_due": nothing_due,
        "seconds": round(time.monotonic() - began, 3),
    }
