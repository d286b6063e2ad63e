"""DAG register_intake: load one register extract (the file path is a Param)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from mes_rollout.dag_defaults import DEFAULT_TASK_ARGS

with DAG(
    dag_id="register_intake",
    default_args=DEFAULT_TASK_ARGS,
    schedule=None,
    start_date=pendulum.datetime(2021, 7, 1, tz="Europe/Paris"),
    catchup=False,
    tags=["mes-rollout", "register"],
    params={
        "register_file": Param(type="string", minLength=1, description="Path of register.csv (INPUTS.md)"),
    },
    doc_md=__doc__,
) as dag:

    @task(retries=0)  # an unreadable file stays unreadable: the operator re-triggers with a new one
    def load_register(params: dict | None = None, logical_date: pendulum.DateTime | None = None) -> dict:
        from pathlib import Path

        from enrolment.register import load_register as load
        from mes_rollout.db import get_engine

        assert params is not None and logical_date is not None
        summary = load(get_engine(), Path(params["register_file"]), as_of=logical_date.date())
        # XCom carries counts and ids only: no NIR, no name.
        return {"input_file_id": summary.input_file_id, **summary.as_dict()["rows"]}

    load_register()
