"""Running a DAG in-process with `dag.test()`: the one path the CLI and the tests use."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from console.airflow_home import DAGS_FOLDER, prepare
from mes_rollout.config import load_settings


class DagRunFailed(RuntimeError):
    """The DAG run ended in failure; `failed_tasks` names the task ids that failed."""

    def __init__(self, dag_id: str, state: str, failed_tasks: list[str]) -> None:
        super().__init__(f"DAG {dag_id} ended {state}; failed tasks: {', '.join(failed_tasks) or 'none'}")
        self.dag_id = dag_id
        self.failed_tasks = failed_tasks


@dataclass(frozen=True)
class DagRunResult:
    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str]
    xcom_returns: dict[str, Any]


def ensure_airflow_home() -> Path:
    """The Airflow home of in-process runs: $AIRFLOW_HOME when the caller set one, else var/airflow."""
    home = Path(os.environ.get("AIRFLOW_HOME") or load_settings().var_dir / "airflow")
    prepare(home)
    return home


def run_dag(
    dag_id: str, logical_date: dt.date | dt.datetime, conf: dict[str, Any] | None = None, *, raise_on_failure: bool = True
) -> DagRunResult:
    """Run one DAG to its end in this process for the logical date, and report its task states."""
    ensure_airflow_home()
    import pendulum
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / f"{dag_id}.py"))
    if dag_id not in bag.dags:
        errors = "; ".join(f"{path}: {error}" for path, error in bag.import_errors.items())
        raise LookupError(f"DAG {dag_id} not found in {DAGS_FOLDER}" + (f" ({errors})" if errors else ""))
    dag = bag.dags[dag_id]
    if isinstance(logical_date, dt.datetime):
        when = pendulum.instance(logical_date)
    else:
        when = pendulum.datetime(logical_date.year, logical_date.month, logical_date.day, tz="UTC")
    run = dag.test(logical_date=when, run_conf=conf or {})
    task_states: dict[str, str] = {}
    xcoms: dict[str, Any] = {}
    for instance in run.get_task_instances():
        key = instance.task_id if instance.map_index < 0 else f"{instance.task_id}[{instance.map_index}]"
        task_states[key] = str(instance.state)
        if instance.state == "success" and instance.map_index < 0:
            xcoms[instance.task_id] = instance.xcom_pull(task_ids=instance.task_id, key="return_value")
    result = DagRunResult(dag_id, run.run_id, str(run.state), task_states, xcoms)
    if raise_on_failure and result.state != "success":
        failed = [task for task, state in task_states.items() if state in ("failed", "upstream_failed")]
        raise DagRunFailed(dag_id, result.state, failed)
    return result
