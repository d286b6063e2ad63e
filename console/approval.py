"""Answering a wave's approval request without the Airflow UI: `mes-rollout wave run --approve`,
`wave approve` and `wave reject`.

The `approval` task of enrolment_wave is an Airflow human-in-the-loop task (HITLOperator). It
parks in the state `awaiting_input` with a request in Airflow's `hitl_detail` table; in production
the operator answers it in the UI ("Required actions") or through the REST API
(PATCH .../taskInstances/approval/-1/hitlDetails). `dag.test()`, which the CLI runs in-process,
waits for such an answer too. `answer()` records it exactly as the REST endpoint does (the same
Airflow models: the response on the request, then `handle_event_submit` to resume the task), into
the Airflow metadata database of this machine; `run_wave` does so from a thread while the DAG runs
in the main thread, so that one command plans and approves.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import threading
from typing import Any

from console.dagrun import DagRunResult, ensure_airflow_home, run_dag
from enrolment.waves import WaveRequest

log = logging.getLogger(__name__)

DAG_ID = "enrolment_wave"
TASK_ID = "approval"
APPROVE, REJECT = "Approve", "Reject"
CLI_NAME = "mes-rollout CLI"
_POLL_SECONDS = 0.1
# How old a request must be before the in-process responder answers it, and how long an answered
# request may still show its task awaiting input before the answer is sent again: `dag.test()`
# writes the task instance it parked a moment after the request appears, and on SQLite (no row
# locks) that write could undo an answer given in between, leaving the run waiting for ever. While
# the task awaits input, `dag.test()` looks again every second: an answer within that second
# resumes the run at its next look (a settle of a second made each wave wait two).
_SETTLE = dt.timedelta(seconds=0.25)


def answer(
    wave_id: str,
    option: str,
    *,
    user: dict[str, str] | None = None,
    comment: str = "",
    asked_after: dt.datetime | None = None,
    settle: dt.timedelta | None = None,
) -> bool:
    """Answer the pending approval request of the wave (Approve or Reject); False if none is pending.

    With `settle` (the in-process responder): only a request at least that old, and an answered
    request whose task still awaits input that long after the answer is resumed again."""
    if option not in (APPROVE, REJECT):
        raise ValueError(f"an approval is answered {APPROVE} or {REJECT}, not {option!r}")
    ensure_airflow_home()
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail, HITLUser
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    # Who answered, for the audit trail: the account that ran the command.
    who = user or {"id": f"cli:{getpass.getuser()}", "name": f"{getpass.getuser()} ({CLI_NAME})"}
    with create_session() as session:
        candidates = session.execute(
            select(TaskInstance.id, DagRun.conf, HITLDetail.created_at, HITLDetail.responded_at)
            .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id))
            .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
            .where(
                TaskInstance.dag_id == DAG_ID,
                TaskInstance.task_id == TASK_ID,
                TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
            )
            .order_by(HITLDetail.created_at.desc())
        ).all()
        now = dt.datetime.now(dt.UTC)
        for ti_id, conf, created_at, responded_at in candidates:
            if str((conf or {}).get("wave_id", "")).strip() != wave_id:
                continue
            if asked_after is not None and created_at < asked_after:
                continue  # a request left by an earlier, interrupted run
            answered = responded_at is not None
            if answered and settle is None:
                continue  # answered already: nothing pending
            if settle is not None and now - (responded_at or created_at) < settle:
                continue
            # The order of the REST endpoint: the task instance first, then its request.
            task_instance = session.get(TaskInstance, ti_id, with_for_update=True)
            detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti_id).with_for_update())
            if task_instance is None or detail is None or (detail.responded_at is not None) != answered:
                continue
            if answered:
                # Answered, yet the task still awaits input: the answer's resume was lost.
                if task_instance.state != TaskInstanceState.AWAITING_INPUT:
                    continue
                log.info("wave %s: the answer's resume was lost; sending it again", wave_id)
            else:
                detail.responded_by = HITLUser(id=who["id"], name=who["name"])
                detail.responded_at = dt.datetime.now(dt.UTC)
                detail.chosen_options = [option]
                detail.params_input = {"comment": comment}
                session.add(detail)
                log.info("wave %s: answered %s as %s", wave_id, option, who["name"])
            if task_instance.state == TaskInstanceState.AWAITING_INPUT:
                handle_event_submit(
                    TriggerEvent(detail.as_resume_event_payload()), task_instance=task_instance, session=session
                )
            return True
    return False


def _answer_when_asked(
    wave_id: str, option: str, comment: str, asked_after: dt.datetime, stop: threading.Event
) -> None:
    # Until the run ends: an answer's resume lost to the run's own write is sent again.
    while not stop.is_set():
        try:
            answer(wave_id, option, comment=comment, asked_after=asked_after, settle=_SETTLE)
        except Exception as error:  # noqa: BLE001 - the metadata DB is busy with the run: try again
            log.debug("answering the approval of wave %s failed (%s); retrying", wave_id, type(error).__name__)
        stop.wait(_POLL_SECONDS)


def _import_airflow() -> None:
    """Import what `answer` and `run_dag` use, in the calling (main) thread, before the responder
    thread starts: two threads importing Airflow (and configuring its ORM mappers) at the same time
    deadlock on the import locks."""
    ensure_airflow_home()
    import airflow.dag_processing.dagbag  # noqa: F401
    import airflow.models.dagrun  # noqa: F401
    import airflow.models.hitl  # noqa: F401
    import airflow.models.taskinstance  # noqa: F401
    import airflow.models.trigger  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    configure_mappers()


def run_wave(
    request: WaveRequest, logical_day: dt.date, *, decision: str | None = None, comment: str = ""
) -> DagRunResult:
    """Run enrolment_wave in this process; with `decision`, answer its approval request as well.

    Without a decision (and not a dry run) the run waits for the answer: from the UI of an Airflow
    sharing this metadata database, or from `mes-rollout wave approve|reject WAVE_ID` in another shell.
    """
    stop = threading.Event()
    responder = None
    if decision is not None and not request.dry_run:
        _import_airflow()
        asked_after = dt.datetime.now(dt.UTC)
        responder = threading.Thread(
            target=_answer_when_asked,
            args=(request.wave_id, decision, comment, asked_after, stop),
            name=f"approval-{request.wave_id}",
            daemon=True,
        )
        responder.start()
    elif not request.dry_run:
        log.info(
            "wave %s: the run will wait for approval (Airflow 'Required actions', or"
            " `mes-rollout wave approve %s` / `wave reject %s` in another shell)",
            request.wave_id,
            request.wave_id,
            request.wave_id,
        )
    try:
        return run_dag(DAG_ID, logical_day, request.as_conf())
    finally:
        stop.set()
        if responder is not None:
            responder.join(timeout=5)


def wave_outcome(result: DagRunResult) -> dict[str, Any]:
    """What a wave run says to the operator: counts and the decision, from the run's XComs."""
    summary = result.xcom_returns.get("summarise") or {}
    outcome: dict[str, Any] = {"run_id": result.run_id, "dag_run_state": result.state}
    if "count_dry_run" in result.xcom_returns:
        outcome.update(state="dry_run", counts=result.xcom_returns["count_dry_run"])
        return outcome
    outcome["counts"] = summary.get("counts")
    for task_id in ("approve_wave", "reject_wave"):
        if task_id in result.xcom_returns:
            outcome.update(result.xcom_returns[task_id])
    outcome.setdefault("state", summary.get("state"))
    return outcome
