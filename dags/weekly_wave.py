"""DAG weekly_wave: after the rollout calendar, every Monday, tell the people who arrived since.

The week's wave (enrolment/weekly.py) is an ordinary wave: id `weekly-<ISO year>-W<week>`, scope
every département whose calendar wave is past, send date the run's day. It takes everyone eligible
never told (newborns and minors through their representative, the newly insured, people who moved
into a département after its wave, minors whose representative the register fixed) and the people
left unreachable whose recipient the register gave a new email or address (told again, new code,
new window once sent); nobody already told. Steps: register_weekly_wave -> select_cohort ->
plan_shard (mapped) -> summarise, the same enrolment.tasks functions as enrolment_wave -> settle:
at most MES_WEEKLY_AUTO_APPROVE_CAP messages, the wave is approved here (publish_approved tells the
sending DAG through the Asset); more, ask_operator triggers enrolment_wave for it (run id
`weekly__<wave id>`), whose approval step asks the operator as for any wave. A re-run of the week
changes nothing (already_decided).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Asset, CronTriggerTimetable, Param, get_current_context, task

from mes_rollout.constants import WAVE_APPROVED_ASSET
from mes_rollout.dag_defaults import DEFAULT_TASK_ARGS


def _run() -> tuple[dt.date, str, dict[str, Any]]:
    """The running task's business day, run id and Params."""
    from mes_rollout.runday import context_day

    context = get_current_context()
    return context_day(context), context["dag_run"].run_id, dict(context["params"])


with DAG(
    dag_id="weekly_wave",
    schedule=CronTriggerTimetable("0 6 * * 1", timezone="Europe/Paris"),
    start_date=pendulum.datetime(2022, 3, 29, tz="Europe/Paris"),  # the day after the calendar's last wave
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_TASK_ARGS,
    tags=["mes-rollout", "enrolment", "calendar"],
    params={
        "recipient_cap": Param(
            2_000_000, type="integer", minimum=1, title="Cap on recipients", description="Messages at most; the rest wait for next week"
        ),
        "plan_file": Param("", type="string", description="Rollout plan CSV (empty: enrolment/data/rollout_plan.csv)"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def register_weekly_wave() -> dict:
        from enrolment.tasks import register_weekly_wave as run

        day, run_id, params = _run()
        return run(params, day, run_id)

    @task
    def select_cohort(conf: Any) -> list[int]:
        from enrolment.tasks import select_cohort as run

        return run(conf, _run()[1])

    @task
    def plan_shard(conf: Any, shard: int) -> dict:
        from enrolment.tasks import plan_shard as run

        return run(conf, shard, _run()[1])

    @task(trigger_rule="none_failed_min_one_success")
    def summarise(conf: Any) -> dict:
        from enrolment.tasks import summarise as run

        return run(conf, _run()[1])

    @task
    def settle(conf: Any) -> dict:
        from enrolment.tasks import settle_weekly_wave as run

        return run(conf, _run()[1])

    @task.branch
    def route(settled: Any) -> str:
        return {"approved": "publish_approved", "ask_operator": "ask_operator"}.get(settled["route"], "already_decided")

    @task(outlets=[Asset(WAVE_APPROVED_ASSET)])
    def publish_approved(settled: Any, outlet_events: Any = None) -> dict:
        if outlet_events is not None:
            outlet_events[Asset(WAVE_APPROVED_ASSET)].extra = {"wave_id": settled["wave_id"]}
        return dict(settled)

    conf = register_weekly_wave()
    shards = select_cohort(conf)
    planned = plan_shard.partial(conf=conf).expand(shard=shards)
    summary = summarise(conf)
    planned >> summary
    shards >> summary
    settled = settle(conf)
    summary >> settled
    route(settled) >> [
        publish_approved(settled),
        TriggerDagRunOperator(
            task_id="ask_operator",
            trigger_dag_id="enrolment_wave",
            conf=conf,  # type: ignore[arg-type]
            trigger_run_id="weekly__{{ ti.xcom_pull(task_ids='register_weekly_wave')['wave_id'] }}",
            skip_when_already_exists=True,
            openlineage_inject_parent_info=False,
        ),
        EmptyOperator(task_id="already_decided"),
    ]
