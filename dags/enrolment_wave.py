"""DAG enrolment_wave: plan one wave, show the operator its counts, and hand it to sending once approved.

Triggered by an operator (Trigger DAG form: wave id, départements, send date, cap on recipients,
dry run) or by `rollout_calendar`. Steps: register_wave -> select_cohort (set-based routing of
every eligible person) -> plan_shard (mapped: one task per shard of MES_SHARD_SIZE people: codes,
enrolments, notifications) -> summarise -> approval (Airflow human-in-the-loop: the operator
reads the counts and answers Approve or Reject in "Required actions", within 7 days, past which
the wave is rejected; only MES_WAVE_APPROVERS may answer, never the login that triggered the run) ->
approve_wave (the wave becomes 'approved' and the Asset mes-rollout://waves/approved tells the
sending DAG) or reject_wave (messages cancelled, people released for a later wave). A dry run
stops after count_dry_run: nothing is written for the people. Re-running a run changes nothing: a
decided wave skips the approval (already_decided). Every task calls enrolment.tasks.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import DAG, Asset, Param, get_current_context, task
from airflow.sdk.execution_time.hitl import HITLUser

from mes_rollout.constants import WAVE_APPROVED_ASSET
from mes_rollout.dag_defaults import DEFAULT_TASK_ARGS

APPROVE, REJECT = "Approve", "Reject"
# The approval waits for a person, not for the machine: a week to answer; past it the answer is
# Reject (the wave's people are released, nothing is sent). The other tasks keep the shared limit.
APPROVAL_TIMEOUT = dt.timedelta(days=7)


def approval_respondents(approvers: tuple[str, ...], triggered_by: str | None) -> list[HITLUser] | None:
    """The logins that may answer a wave's approval (HITL `assigned_users`): the approvers but the
    one who triggered the run (four eyes); None when no approvers are set (any login with the right
    to answer, and the in-process CLI). An error when nobody but the triggering login is left."""
    if not approvers:
        return None
    others = [name for name in approvers if name != triggered_by]
    if not others:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(
            f"no approver of this wave other than {triggered_by!r}, who triggered it:"
            f" MES_WAVE_APPROVERS={','.join(approvers)} needs a second login"
        )
    return [HITLUser(id=name, name=name) for name in others]


class WaveApproval(HITLOperator):
    """The approval request of a wave, assigned when it is asked to the approvers but the run's
    triggering login: the REST API (and the UI) refuses anybody else's answer (403)."""

    @property
    def task_type(self) -> str:
        return "HITLOperator"  # a human-in-the-loop task to the UI and the tests, as it is

    def execute(self, context: Any) -> Any:
        from mes_rollout.config import load_settings

        triggered_by = context["dag_run"].triggering_user_name
        self.assigned_users = approval_respondents(load_settings().wave_approvers, triggered_by)
        return super().execute(context)


def _run() -> tuple[dt.date, str, dict[str, Any]]:
    """The running task's business day, run id and Params."""
    from mes_rollout.runday import context_day

    context = get_current_context()
    return context_day(context), context["dag_run"].run_id, dict(context["params"])


with DAG(
    dag_id="enrolment_wave",
    schedule=None,
    start_date=pendulum.datetime(2021, 7, 1, tz="Europe/Paris"),
    catchup=False,
    default_args=DEFAULT_TASK_ARGS,
    tags=["mes-rollout", "enrolment"],
    params={
        "wave_id": Param(
            type="string",
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
            title="Wave id",
            description="Unique id of the wave, e.g. 2022-02-01",
        ),
        "departements": Param(
            type="array",
            items={"type": "string", "pattern": r"^(0[1-9]|1[0-9]|2[1-9AB]|[3-8][0-9]|9[0-5]|97[1-6])$"},
            minItems=1,
            title="Départements",
            description="Residence départements of the wave: 01-19, 2A, 2B, 21-95, 971-976",
        ),
        "send_date": Param(
            None, type=["null", "string"], format="date", title="Send date", description="Default: the run's logical date"
        ),
        "recipient_cap": Param(
            2_000_000, type="integer", minimum=1, title="Cap on recipients", description="Messages at most; the rest wait for a later wave"
        ),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Count only: nothing is written for the people"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def register_wave() -> dict:
        from enrolment.tasks import register_wave as run

        day, run_id, params = _run()
        return run(params, day, run_id)

    @task.branch
    def choose_path(registered: Any) -> str:
        return "count_dry_run" if registered["dry_run"] else "select_cohort"

    @task
    def count_dry_run() -> dict:
        from enrolment.tasks import count_dry_run as run

        _, run_id, params = _run()
        return run(params, run_id)

    @task
    def select_cohort() -> list[int]:
        from enrolment.tasks import select_cohort as run

        _, run_id, params = _run()
        return run(params, run_id)

    @task
    def plan_shard(shard: int) -> dict:
        from enrolment.tasks import plan_shard as run

        _, run_id, params = _run()
        return run(params, shard, run_id)

    @task(trigger_rule="none_failed_min_one_success")
    def summarise() -> dict:
        from enrolment.tasks import summarise as run

        _, run_id, params = _run()
        return run(params, run_id)

    @task.branch
    def needs_approval(summary: Any) -> str:
        return "approval" if summary["needs_approval"] else "already_decided"

    approval = WaveApproval(
        task_id="approval",
        subject="Approve wave {{ params.wave_id }}?",
        body="{{ ti.xcom_pull(task_ids='summarise')['body'] }}",
        options=[APPROVE, REJECT],
        defaults=REJECT,  # the answer when nobody answered within APPROVAL_TIMEOUT
        params={
            "comment": Param("", type="string", maxLength=500, title="Comment", description="Why (kept in the audit trail)")
        },
        execution_timeout=APPROVAL_TIMEOUT,
        response_timeout=APPROVAL_TIMEOUT,
        retries=0,  # a person's answer is asked once: clearing the task asks again
    )

    @task.branch
    def route_answer(answer: Any) -> str:
        return "approve_wave" if answer["chosen_options"] == [APPROVE] else "reject_wave"

    @task(outlets=[Asset(WAVE_APPROVED_ASSET)])
    def approve_wave(answer: Any, outlet_events: Any = None) -> dict:
        from enrolment.tasks import approve_wave as run

        _, run_id, params = _run()
        approved = run(params, answer, run_id)
        if outlet_events is not None:
            outlet_events[Asset(WAVE_APPROVED_ASSET)].extra = {"wave_id": approved["wave_id"]}
        return approved

    @task
    def reject_wave(answer: Any) -> dict:
        from enrolment.tasks import reject_wave as run

        _, run_id, params = _run()
        if not answer.get("responded_by_user"):  # the default answer, given when nobody answered
            answer = {
                **answer,
                "responded_by_user": {"id": "timeout", "name": f"no answer within {APPROVAL_TIMEOUT}"},
            }
        return run(params, answer, run_id)

    registered = register_wave()
    path = choose_path(registered)
    shards = select_cohort()
    planned = plan_shard.expand(shard=shards)
    summary = summarise()
    path >> [count_dry_run(), shards]
    planned >> summary
    shards >> summary
    gate = needs_approval(summary)
    gate >> [approval, EmptyOperator(task_id="already_decided")]
    answer = route_answer(approval.output)
    answer >> [approve_wave(approval.output), reject_wave(approval.output)]
