"""DAG decisions_intake: load one decisions.csv (oppositions, activations, closures, deletions).

The file path is a Param; the run's logical date is "today" (a decision received after it is
quarantined). A reference seen before is ignored when the row is the same, quarantined
(REFERENCE_CONFLICT) when it differs; an unknown NIR, an impossible sequence or an opposition or
activation received before the person's message was sent is quarantined with a reason; the rest goes through the enrolment state machine (opposition on or
before the deadline -> opposed, activation -> space created at once, opposition after creation
-> closure, deletion -> purge within 3 months). When activations created spaces, `publish` emits
the Asset mes-rollout://spaces/created for the DMP migration.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, get_current_context, task

from mes_rollout.constants import SPACES_CREATED_ASSET
from mes_rollout.dag_defaults import DEFAULT_TASK_ARGS

with DAG(
    dag_id="decisions_intake",
    schedule=None,
    start_date=pendulum.datetime(2022, 1, 31, tz="Europe/Paris"),
    catchup=False,
    default_args=DEFAULT_TASK_ARGS,
    tags=["mes-rollout", "enrolment", "decisions"],
    params={
        "decisions_file": Param(type="string", minLength=1, description="Path of decisions.csv (INPUTS.md)"),
    },
    doc_md=__doc__,
) as dag:

    @task(retries=0)  # an unreadable file stays unreadable: the operator re-triggers with a new one
    def load_decisions() -> dict:
        from enrolment.tasks import load_decisions as run
        from mes_rollout.runday import context_day

        context = get_current_context()
        # XCom carries counts and ids only: no NIR.
        return run(context["params"]["decisions_file"], context_day(context), context["dag_run"].run_id)

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
