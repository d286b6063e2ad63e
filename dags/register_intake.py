"""DAG register_intake: load one register extract (the file path is a Param).

`extracted_on` (Param, YYYY-MM-DD; empty: the run's logical date) is the day the extract was
taken: a person's row is only replaced by a row of an extract as new or newer, so an extract
delivered late cannot undo a newer one (its rows for those people are counted `older_than_held`).
"""

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
        "extracted_on": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Day the extract was taken, YYYY-MM-DD (default: the run's logical date)",
        ),
    },
    doc_md=__doc__,
) as dag:

    @task(retries=0)  # an unreadable file stays unreadable: the operator re-triggers with a new one
    def load_register(params: dict | None = None, logical_date: pendulum.DateTime | None = None) -> dict:
        import datetime as dt
        from pathlib import Path

        from enrolment.register import load_register as load
        from mes_rollout.db import get_engine
        from mes_rollout.runday import run_day

        assert params is not None and logical_date is not None
        extracted_on = dt.date.fromisoformat(params["extracted_on"]) if params.get("extracted_on") else None
        summary = load(
            get_engine(), Path(params["register_file"]), as_of=run_day(logical_date), extracted_on=extracted_on
        ).as_dict()
        # XCom carries counts, dates and ids only: no NIR, no name.
        return {
            "input_file_id": summary["input_file_id"],
            **summary["rows"],
            "extracted_on": summary["extracted_on"],
            "changed_persons": summary["changed_persons"],
            "older_than_held": summary["older_than_held"],
            "already_loaded": summary["already_loaded"],
        }

    load_register()
