"""DAG space_creation: every day, create the spaces whose opt-out window has closed.

For the run's logical date D (in Paris): a death recorded on or before D cancels the enrolments
still waiting; then everyone reached by a message whose deadline passed before D, without
opposition, gets an active space created on D (cause 'automatic'). Opposed, unreachable and
deceased people never get one. When spaces were created, `publish` emits the Asset
mes-rollout://spaces/created, which the DMP migration follows (extra: the day and the count).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, get_current_context, task

from mes_rollout.constants import SPACES_CREATED_ASSET
from mes_rollout.dag_defaults import DEFAULT_TASK_ARGS

with DAG(
    dag_id="space_creation",
    schedule="@daily",
    start_date=pendulum.datetime(2022, 1, 31, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_TASK_ARGS,
    tags=["mes-rollout", "enrolment", "spaces"],
    doc_md=__doc__,
) as dag:

    @task
    def create_spaces() -> dict:
        from enrolment.tasks import create_spaces as run
        from mes_rollout.runday import context_day

        context = get_current_context()
        return run(context_day(context), context["dag_run"].run_id)

    @task(outlets=[Asset(SPACES_CREATED_ASSET)])
    def publish(created: Any, outlet_events: Any = None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        if not created["spaces_created"]:
            raise AirflowSkipException("no space created: nothing for the DMP migration")
        outlet_events[Asset(SPACES_CREATED_ASSET)].extra = {
            "created_on": created["day"],
            "spaces_created": created["spaces_created"],
        }
        return created

    publish(create_spaces())
