"""DAG dmp_intake: stage one legacy DMP extract folder (dmp.csv, documents.csv; the folder is a Param).

Both files or nothing; rows that cannot be staged are quarantined with a reason, and rows
reconcile per file (read = staged + quarantined). Content files are read by dmp_migration.
The task calls `migration.tasks`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from mes_rollout.dag_defaults import DEFAULT_TASK_ARGS

with DAG(
    dag_id="dmp_intake",
    schedule=None,
    start_date=pendulum.datetime(2021, 7, 1, tz="Europe/Paris"),
    catchup=False,
    default_args=DEFAULT_TASK_ARGS,
    tags=["mes-rollout", "dmp"],
    params={
        "extract_dir": Param(type="string", minLength=1, description="Folder of the DMP extract (INPUTS.md, dmp/)"),
    },
    doc_md=__doc__,
) as dag:

    @task(retries=0)  # an unreadable extract stays unreadable: the operator re-triggers with a new one
    def load_extract(params: dict | None = None, run_id: str | None = None) -> dict:
        from migration import tasks

        assert params is not None
        return tasks.load_extract(params["extract_dir"], run_id)  # XCom: ids and counts only

    load_extract()
