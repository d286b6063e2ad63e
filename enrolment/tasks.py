"""What the enrolment DAGs' tasks do, testable without a scheduler: each function takes the run's
values (its day, run id, Params, the operator's answer) and returns counts and ids only (they go
to XCom: no NIR, name or address). The engine, the settings and the moment `now` are taken here,
when the task runs, and nowhere else; the wave id of a run's Params is cleaned here, once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from enrolment import dao, planning, spaces, weekly
from enrolment.decisions import load_decisions as load
from enrolment.plan import DEFAULT_PLAN, wave_of_day
from enrolment.waves import WaveRequest, clean_wave_id, load_wave
from enrolment.window import window_line
from mes_rollout.config import load_settings
from mes_rollout.constants import WaveState
from mes_rollout.db import get_engine
from mes_rollout.rollout_summary import refresh as refresh_summary


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def register_wave(params: Mapping[str, Any], day: dt.date, run_id: str) -> dict[str, Any]:
    """The operator's request (the run's Params; the send date defaults to the run's day), recorded."""
    request = WaveRequest.from_params(params, day)
    with get_engine().begin() as connection:
        wave = dao.register_wave(connection, request, run_id=run_id, now=_now())
    return {"wave_id": wave.wave_id, "dry_run": request.dry_run, "state": wave.state.value}


def count_dry_run(params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """A dry run's counts (written in the wave row only)."""
    engine = get_engine()
    with engine.connect() as connection:
        wave = load_wave(connection, clean_wave_id(params.get("wave_id")))
    if wave is None:
        raise LookupError(f"no wave {params.get('wave_id')!r}")
    counts = planning.dry_run_counts(engine, wave, shard_size=load_settings().shard_size, run_id=run_id, now=_now())
    refresh_summary(engine, source="enrolment_wave", run_id=run_id)
    return counts


def select_cohort(params: Mapping[str, Any], run_id: str) -> list[int]:
    """The wave's cohort, selected and routed once; the shard numbers to plan."""
    settings = load_settings()
    return planning.select_cohort(
        get_engine(), clean_wave_id(params.get("wave_id")), var_dir=settings.var_dir, shard_size=settings.shard_size,
        run_id=run_id, now=_now(),
    )  # fmt: skip


def plan_shard(params: Mapping[str, Any], shard: int, run_id: str) -> dict[str, int]:
    """One shard planned: codes, enrolments, notifications. Counts only."""
    return planning.plan_shard(
        get_engine(), clean_wave_id(params.get("wave_id")), int(shard), var_dir=load_settings().var_dir,
        run_id=run_id, now=_now(),
    )  # fmt: skip


def summarise(params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """The counts the operator approves on, and whether the wave still waits for an answer
    (`needs_approval`: False when a re-run finds it already approved or rejected)."""
    engine = get_engine()
    wave_id = clean_wave_id(params.get("wave_id"))
    counts = planning.summarise(engine, wave_id, run_id=run_id, now=_now())
    with engine.connect() as connection:
        wave = load_wave(connection, wave_id)
    assert wave is not None
    refresh_summary(engine, source="enrolment_wave", run_id=run_id)
    return {
        "state": wave.state.value,
        "needs_approval": wave.state == WaveState.AWAITING_APPROVAL,
        "counts": counts,
        "body": planning.approval_body(counts) + "\n\n" + window_line(wave.send_date, load_settings().opt_out_window),
    }


def answer_author(answer: Mapping[str, Any]) -> tuple[str, str]:
    """Who answered the approval request (Airflow's human-in-the-loop answer), and their comment."""
    user = answer.get("responded_by_user") or {}
    by = str(user.get("name") or user.get("id") or "unknown")
    return by, str((answer.get("params_input") or {}).get("comment") or "")


def approve_wave(params: Mapping[str, Any], answer: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    wave_id = clean_wave_id(params.get("wave_id"))
    by, comment = answer_author(answer)
    with get_engine().begin() as connection:
        dao.approve_wave(connection, wave_id, by=by, comment=comment, run_id=run_id, now=_now())
    refresh_summary(get_engine(), source="enrolment_wave", run_id=run_id)
    return {"wave_id": wave_id, "state": WaveState.APPROVED.value, "by": by}


def reject_wave(params: Mapping[str, Any], answer: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    wave_id = clean_wave_id(params.get("wave_id"))
    by, comment = answer_author(answer)
    with get_engine().begin() as connection:
        released = dao.reject_wave(connection, wave_id, by=by, comment=comment, run_id=run_id, now=_now())
    refresh_summary(get_engine(), source="enrolment_wave", run_id=run_id)
    return {"wave_id": wave_id, "state": WaveState.REJECTED.value, "by": by, **released}


def register_weekly_wave(params: Mapping[str, Any], day: dt.date, run_id: str) -> dict[str, Any]:
    """The week's wave (enrolment/weekly.py), recorded; its run conf, which the next steps take as Params."""
    plan_file = Path(params.get("plan_file") or DEFAULT_PLAN)
    request = weekly.weekly_request(day, params, plan_file)
    with get_engine().begin() as connection:
        dao.register_wave(connection, request, run_id=run_id, now=_now())
    return request.as_conf()


def settle_weekly_wave(params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """A planned weekly wave of at most MES_WEEKLY_AUTO_APPROVE_CAP messages is approved here; a
    larger one is left awaiting approval for enrolment_wave's approval step. `route` names what
    follows: approved (now: publish), ask_operator, or already_decided (a re-run)."""
    wave_id = clean_wave_id(params.get("wave_id"))
    cap = load_settings().weekly_auto_approve_cap
    with get_engine().begin() as connection:
        wave = load_wave(connection, wave_id)
        if wave is None:
            raise LookupError(f"no wave {wave_id}")
        messages = weekly.messages_of(wave)
        if weekly.auto_approvable(wave, cap):
            comment = f"{messages} messages, at most {cap} approved without an operator"
            dao.approve_wave(connection, wave_id, by=weekly.AUTO_APPROVER, comment=comment, run_id=run_id, now=_now())
            route = "approved"
        elif wave.state == WaveState.AWAITING_APPROVAL:
            route = "ask_operator"
        else:
            route = "already_decided"
        settled = load_wave(connection, wave_id)
    assert settled is not None
    return {"wave_id": wave_id, "state": settled.state.value, "messages": messages, "auto_approve_cap": cap, "route": route}


def create_spaces(day: dt.date, run_id: str) -> dict[str, Any]:
    """The daily creation run of `day`: counts (deaths cancelled, spaces created)."""
    created = spaces.create_due_spaces(get_engine(), day, run_id=run_id, now=_now())
    refresh_summary(get_engine(), source="space_creation", run_id=run_id)
    return created


def load_decisions(decisions_file: str, day: dt.date, run_id: str) -> dict[str, Any]:
    """One decisions.csv loaded as of `day`: its counts and reasons, and the day (for the Asset)."""
    summary = load(get_engine(), Path(decisions_file), as_of=day, run_id=run_id, now=_now())
    refresh_summary(get_engine(), source="decisions_intake", run_id=run_id)
    return {**summary.as_dict(), "day": day.isoformat()}


def todays_wave(day: dt.date, plan_file: str | None) -> dict[str, Any] | None:
    """The run conf of the day's wave in the rollout plan, or None on a day without one."""
    wave = wave_of_day(day, Path(plan_file or DEFAULT_PLAN))
    return wave.as_conf() if wave is not None else None
