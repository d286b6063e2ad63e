"""DAG rollout_calendar: every day of the rollout, trigger that day's wave from the plan.

The plan is enrolment/data/rollout_plan.csv (working days from 2022-01-31 to 2022-03-28,
départements in numeric order, at most 2 million messages a day; operators edit it or regenerate
it with `python -m enrolment.plan`; Param `plan_file` points a run at another file). A day without
a row (weekend, holiday) skips. The triggered enrolment_wave run has the day as send date (in its
conf) and run id `rollout__<wave id>`: a re-run of the day does not trigger the wave twice. Each wave still
waits for an operator's approval before anything is sent.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param, get_current_context, task

from mes_rollout.dag_defaults import DEFAULT_TASK_ARGS

with DAG(
    dag_id="rollout_calendar",
    schedule="@daily",
    start_date=pendulum.datetime(2022, 1, 31, tz="Europe/Paris"),
    end_date=pendulum.datetime(2022, 3, 28, 23, 59, tz="Europe/Paris"),
    catchup=True,
    max_active_runs=1,
    default_args=DEFAULT_TASK_ARGS,
    tags=["mes-rollout", "enrolment", "calendar"],
    params={
        "plan_file": Param("", type="string", description="Rollout plan CSV (empty: enrolment/data/rollout_plan.csv)"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def todays_wave() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from enrolment.tasks import todays_wave as run
        from mes_rollout.runday import context_day

        context = get_current_context()
        day = context_day(context)
        wave = run(day, context["params"].get("plan_file"))
        if wave is None:
            raise AirflowSkipException(f"no wave planned on {day}")
        return wave

    todays = todays_wave()
    TriggerDagRunOperator(
        task_id="trigger_wave",
        trigger_dag_id="enrolment_wave",
        conf=todays,  # type: ignore[arg-type]
        trigger_run_id="rollout__{{ ti.xcom_pull(task_ids='todays_wave')['wave_id'] }}",
        skip_when_already_exists=True,
        openlineage_inject_parent_info=False,
    )
