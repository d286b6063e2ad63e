"""DAG dmp_intake: stage one legacy DMP extract folder (dmp.csv, documents.csv; the folder is a Param).

Both files or nothing; rows that cannot be staged are quarantined with a reason, and rows
reconcile per file (read = staged + quarantined). Content files are read by dmp_migration.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

with DAG(
    dag_id="dmp_intake",
    schedule=None,
    start_date=pendulum.datetime(2021, 7, 1, tz="Europe/Paris"),
    catchup=False,
    tags=["mes-rollout", "dmp"],
    params={
        "extract_dir": Param(type="string", minLength=1, description="Folder of the DMP extract (INPUTS.md, dmp/)"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def load_extract(params: dict | None = None, run_id: str | None = None) -> dict:
        from pathlib import Path

        from mes_rollout.db import get_engine
        from migration.intake import load_dmp_extract

        assert params is not None
        summary = load_dmp_extract(get_engine(), Path(params["extract_dir"]), run_id=run_id)
        # XCom carries ids and counts only.
        return {key: value for key, value in summary.as_dict().items() if key != "extract_dir"}

    load_extract()
