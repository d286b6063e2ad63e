"""DAG delivery_feedback: apply one feedback.csv (what became of each message; the path is a Param).

Statuses move as the feedback says (delivered, bounces, returned letters); a bounced email
queues a letter for the next notification_sending run; a returned letter leaves its people
unreachable until the register brings a new address. The same file or line twice changes nothing.
A line dated after the run's logical day (end of that day, Paris time) is quarantined.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task

from mes_rollout.dag_defaults import DEFAULT_TASK_ARGS

with DAG(
    dag_id="delivery_feedback",
    schedule=None,
    start_date=pendulum.datetime(2021, 7, 1, tz="Europe/Paris"),
    catchup=False,
    default_args=DEFAULT_TASK_ARGS,
    tags=["mes-rollout", "notifications"],
    params={"feedback_file": Param(type="string", minLength=1, description="Path of feedback.csv (INPUTS.md)")},
    doc_md=__doc__,
) as dag:

    @task(retries=0)  # an unreadable file stays unreadable: the operator re-triggers with a new one
    def load_feedback() -> dict:
        from mes_rollout.runday import context_day
        from notifications.tasks import feedback_file

        context = get_current_context()
        summary = feedback_file(context["params"]["feedback_file"], context_day(context), context["dag_run"].run_id)
        # XCom carries counts and ids only.
        return {"input_file_id": summary["input_file_id"], **summary["rows"], "applied": summary["applied"]}

    load_feedback()
