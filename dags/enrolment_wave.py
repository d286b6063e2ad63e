"""DAG enrolment_wave: plan one wave, show the operator its counts, and hand it to sending once approved.

Triggered by an operator (Trigger DAG form: wave id, départements, send date, cap on recipients,
dry run) or by `rollout_calendar`. Steps: register_wave -> select_cohort (set-based routing of
every eligible person) -> plan_shard (mapped: one task per shard of MES_SHARD_SIZE people: codes,
enrolments, notifications) -> summarise -> approval (Airflow human-in-the-loop: the operator
reads the counts and answers Approve or Reject in "Required actions") -> approve_wave (the wave
becomes 'approved' and the Asset mes-rollout://waves/approved tells the sending DAG) or
reject_wave (messages cancelled, people released for a later wave). A dry run stops after
count_dry_run: nothing is written for the people. Re-running a run changes nothing: a decided
wave skips the approval (already_decided).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import DAG, Asset, Param, task

from mes_rollout.constants import WAVE_APPROVED_ASSET

APPROVE, REJECT = "Approve", "Reject"

with DAG(
    dag_id="enrolment_wave",
    schedule=None,
    start_date=pendulum.datetime(2021, 7, 1, tz="Europe/Paris"),
    catchup=False,
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

    def _day(logical_date: Any, dag_run: Any) -> Any:
        from mes_rollout.runday import business_day

        return business_day(logical_date or dag_run.run_after)

    @task
    def register_wave(params: dict | None = None, logical_date: Any = None, dag_run: Any = None) -> dict:
        import datetime as dt

        from enrolment.waves import WaveRequest, register_wave
        from mes_rollout.db import get_engine

        assert params is not None and dag_run is not None
        request = WaveRequest.from_params(params, _day(logical_date, dag_run))
        with get_engine().begin() as connection:
            wave = register_wave(connection, request, run_id=dag_run.run_id, now=dt.datetime.now(dt.UTC))
        return {"wave_id": wave.wave_id, "dry_run": request.dry_run, "state": wave.state.value}

    @task.branch
    def choose_path(registered: Any) -> str:
        return "count_dry_run" if registered["dry_run"] else "select_cohort"

    @task
    def count_dry_run(params: dict | None = None, dag_run: Any = None) -> dict:
        import datetime as dt

        from enrolment.planning import dry_run_counts
        from enrolment.waves import load_wave
        from mes_rollout.config import load_settings
        from mes_rollout.db import get_engine

        assert params is not None and dag_run is not None
        engine = get_engine()
        with engine.connect() as connection:
            wave = load_wave(connection, params["wave_id"].strip())
        assert wave is not None
        return dry_run_counts(
            engine, wave, shard_size=load_settings().shard_size, run_id=dag_run.run_id, now=dt.datetime.now(dt.UTC)
        )

    @task
    def select_cohort(params: dict | None = None, dag_run: Any = None) -> list[int]:
        import datetime as dt

        from enrolment.planning import select_cohort as select
        from mes_rollout.config import load_settings
        from mes_rollout.db import get_engine

        assert params is not None and dag_run is not None
        settings = load_settings()
        return select(
            get_engine(), params["wave_id"].strip(), var_dir=settings.var_dir, shard_size=settings.shard_size,
            run_id=dag_run.run_id, now=dt.datetime.now(dt.UTC),
        )  # fmt: skip

    @task
    def plan_shard(shard: Any, params: dict | None = None, dag_run: Any = None) -> dict:
        import datetime as dt

        from enrolment.planning import plan_shard as plan
        from mes_rollout.config import load_settings
        from mes_rollout.db import get_engine

        assert params is not None and dag_run is not None
        return plan(
            get_engine(), params["wave_id"].strip(), shard, var_dir=load_settings().var_dir,
            run_id=dag_run.run_id, now=dt.datetime.now(dt.UTC),
        )  # fmt: skip

    @task(trigger_rule="none_failed_min_one_success")
    def summarise(params: dict | None = None, dag_run: Any = None) -> dict:
        import datetime as dt

        from enrolment.planning import approval_body
        from enrolment.planning import summarise as count
        from enrolment.waves import load_wave
        from mes_rollout.db import get_engine

        assert params is not None and dag_run is not None
        engine = get_engine()
        wave_id = params["wave_id"].strip()
        counts = count(engine, wave_id, run_id=dag_run.run_id, now=dt.datetime.now(dt.UTC))
        with engine.connect() as connection:
            wave = load_wave(connection, wave_id)
        assert wave is not None
        return {"state": wave.state.value, "counts": counts, "body": approval_body(counts)}

    @task.branch
    def needs_approval(summary: Any) -> str:
        return "approval" if summary["state"] == "awaiting_approval" else "already_decided"

    approval = HITLOperator(
        task_id="approval",
        subject="Approve wave {{ params.wave_id }}?",
        body="{{ ti.xcom_pull(task_ids='summarise')['body'] }}",
        options=[APPROVE, REJECT],
        params={
            "comment": Param("", type="string", maxLength=500, title="Comment", description="Why (kept in the audit trail)")
        },
    )

    @task.branch
    def route_answer(answer: Any) -> str:
        return "approve_wave" if answer["chosen_options"] == [APPROVE] else "reject_wave"

    def _who(answer: dict) -> tuple[str, str]:
        user = answer.get("responded_by_user") or {}
        by = str(user.get("name") or user.get("id") or "unknown")
        return by, str((answer.get("params_input") or {}).get("comment") or "")

    @task(outlets=[Asset(WAVE_APPROVED_ASSET)])
    def approve_wave(answer: Any, params: dict | None = None, dag_run: Any = None, outlet_events: Any = None) -> dict:
        import datetime as dt

        from enrolment.waves import approve
        from mes_rollout.db import get_engine

        assert params is not None and dag_run is not None
        wave_id = params["wave_id"].strip()
        by, comment = _who(answer)
        with get_engine().begin() as connection:
            approve(connection, wave_id, by=by, comment=comment, run_id=dag_run.run_id, now=dt.datetime.now(dt.UTC))
        if outlet_events is not None:
            outlet_events[Asset(WAVE_APPROVED_ASSET)].extra = {"wave_id": wave_id}
        return {"wave_id": wave_id, "state": "approved", "by": by}

    @task
    def reject_wave(answer: Any, params: dict | None = None, dag_run: Any = None) -> dict:
        import datetime as dt

        from enrolment.waves import reject
        from mes_rollout.db import get_engine

        assert params is not None and dag_run is not None
        wave_id = params["wave_id"].strip()
        by, comment = _who(answer)
        with get_engine().begin() as connection:
            released = reject(connection, wave_id, by=by, comment=comment, run_id=dag_run.run_id, now=dt.datetime.now(dt.UTC))
        return {"wave_id": wave_id, "state": "rejected", "by": by, **released}

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
