"""DAG decisions_intake: load one decisions.csv (oppositions, activations, closures, deletions).

The file path is a Param; the run's logical date is "today" (a decision received after it is
quarantined). A reference seen before is ignored; an unknown NIR or an impossible sequence is
quarantined with a reason; the rest goes through the enrolment state machine (opposition on or
before the deadline -> opposed, activation -> space created at once, opposition after creation
-> closure, deletion -> purge within 3 months). When activations created spaces, `publish` emits
the Asset mes-rollout://spaces/created for the DMP migration.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, task

from mes_rollout.constants import SPACES_CREATED_ASSET

with DAG(
    dag_id="decisions_intake",
    schedule=None,
    start_date=pendulum.datetime(2022, 1, 31, tz="Europe/Paris"),
    catchup=False,
    tags=["mes-rollout", "enrolment", "decisions"],
    params={
        "decisions_file": Param(type="string", minLength=1, description="Path of decisions.csv (INPUTS.md)"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def load_decisions(params: dict | None = None, logical_date: Any = None, dag_run: Any = None) -> dict:
        import datetime as dt
        from pathlib import Path

        from enrolment.decisions import load_decisions as load
        from mes_rollout.db import get_engine
        from mes_rollout.runday import business_day

        assert params is not None and dag_run is not None
        summary = load(
            get_engine(), Path(params["decisions_file"]), as_of=business_day(logical_date or dag_run.run_after),
            run_id=dag_run.run_id, now=dt.datetime.now(dt.UTC),
        )  # fmt: skip
        # XCom carries counts and ids only: no NIR.
        result = summary.as_dict()
        result["day"] = business_day(logical_date or dag_run.run_after).isoformat()
        return result

    @task(outlets=[Asset(SPACES_CREATED_ASSET)])
    def publish(loaded: Any, outlet_events: Any = None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        if not loaded["spaces_created"]:
            raise AirflowSkipException("no space created by activation")
        outlet_events[Asset(SPACES_CREATED_ASSET)].extra = {
            "created_on": loaded["day"],
            "spaces_created": loaded["spaces_created"],
        }
        return {"spaces_created": loaded["spaces_created"]}

    publish(load_decisions())
