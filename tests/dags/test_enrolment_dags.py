"""The enrolment DAGs under dag.test(): they import, approval and rejection go through Airflow's
human-in-the-loop request, Assets are published only when there is news, the calendar triggers
the day's wave, and the CLI drives the same runs."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from console.airflow_home import DAGS_FOLDER
from console.approval import APPROVE, REJECT, run_wave, wave_outcome
from console.dagrun import run_dag
from console.schedule import DAILY_DAGS
from enrolment.waves import WaveRequest
from mes_rollout.constants import SPACES_CREATED_ASSET, WAVE_APPROVED_ASSET
from mes_rollout.dag_defaults import TASK_TIMEOUT
from mes_rollout.db import get_engine
from tests.enrolment.builders import decision, load_people, send_wave, write_decisions
from tests.factories import person_row

SEND = dt.date(2022, 1, 31)
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _asset_events(uri: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id).where(AssetModel.uri == uri)
        ).scalars()
        return [dict(extra or {}) for extra in rows]


def _approval_request_body(wave_id: str) -> str:
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(HITLDetail.body, DagRun.conf)
            .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
            .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id))
            .where(TaskInstance.dag_id == "enrolment_wave")
        ).all()
    return next(str(body) for body, conf in rows if conf.get("wave_id") == wave_id)


def test_every_dag_file_imports_and_the_enrolment_dags_are_wired(airflow_home: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    files = {path.stem for path in DAGS_FOLDER.glob("*.py") if not path.name.startswith("_")}
    assert files <= set(bag.dag_ids)
    wave = bag.dags["enrolment_wave"]
    assert set(wave.params) == {"wave_id", "departements", "send_date", "recipient_cap", "dry_run"}
    assert wave.task_dict["approval"].task_type == "HITLOperator"
    assert {"select_cohort", "plan_shard", "summarise", "approve_wave", "reject_wave", "count_dry_run"} <= set(wave.task_dict)
    assert [asset.uri for asset in wave.task_dict["approve_wave"].outlets] == [WAVE_APPROVED_ASSET]
    assert [asset.uri for asset in bag.dags["space_creation"].task_dict["publish"].outlets] == [SPACES_CREATED_ASSET]
    assert [asset.uri for asset in bag.dags["decisions_intake"].task_dict["publish"].outlets] == [SPACES_CREATED_ASSET]
    # Every task has the shared owner and time limit; the approval waits a week for a person.
    for dag_id in ("enrolment_wave", "space_creation", "decisions_intake", "rollout_calendar"):
        for task in bag.dags[dag_id].tasks:
            assert task.owner == "mes-rollout", (dag_id, task.task_id)
            expected = dt.timedelta(days=7) if task.task_id == "approval" else TASK_TIMEOUT
            assert task.execution_timeout == expected, (dag_id, task.task_id)
    assert wave.task_dict["approval"].response_timeout == dt.timedelta(days=7)
    calendar = bag.dags["rollout_calendar"]
    assert calendar.catchup and calendar.start_date.in_timezone("Europe/Paris").date() == dt.date(2022, 1, 31)
    assert calendar.end_date is not None and calendar.end_date.in_timezone("Europe/Paris").date() == dt.date(2022, 3, 28)


@sqlite_only
def test_a_rejected_wave_is_answered_through_the_human_in_the_loop_request(
    airflow_home: Path, settings_env: Path, tmp_path: Path
) -> None:
    load_people(get_engine(), [person_row(), person_row(email="")], tmp_path / "register")
    request = WaveRequest.from_params({"wave_id": "W-reject", "departements": ["01"]}, SEND)
    result = run_wave(request, SEND, decision=REJECT, comment="not this week")
    assert result.task_states["reject_wave"] == "success" and result.task_states["approve_wave"] == "skipped"
    outcome = wave_outcome(result)
    assert outcome["state"] == "rejected" and outcome["cancelled_notifications"] == 2 and outcome["released_people"] == 2
    assert "| messages by email | 1 |" in _approval_request_body("W-reject")  # what the operator read
    with get_engine().connect() as connection:
        wave = connection.execute(text("SELECT state, decided_by, decision_comment FROM waves")).one()
        assert wave[0] == "rejected" and wave[1].endswith("(mes-rollout CLI)") and wave[2] == "not this week"
        assert connection.execute(text("SELECT COUNT(*) FROM enrolments")).scalar_one() == 0


@sqlite_only
def test_approval_publishes_the_asset_and_creation_publishes_only_news(
    airflow_home: Path, settings_env: Path, tmp_path: Path
) -> None:
    engine = get_engine()
    load_people(engine, [person_row() for _ in range(3)], tmp_path / "register")
    before = len(_asset_events(WAVE_APPROVED_ASSET))
    request = WaveRequest.from_params({"wave_id": "W-assets", "departements": ["01"]}, SEND)
    assert wave_outcome(run_wave(request, SEND, decision=APPROVE))["state"] == "approved"
    approved = _asset_events(WAVE_APPROVED_ASSET)
    assert len(approved) == before + 1 and approved[-1] == {"wave_id": "W-assets"}
    send_wave(engine, "W-assets", SEND)
    created_before = len(_asset_events(SPACES_CREATED_ASSET))
    quiet = run_dag("space_creation", dt.date(2022, 2, 28))
    assert quiet.task_states["publish"] == "skipped"
    created = run_dag("space_creation", dt.date(2022, 3, 1))
    assert created.xcom_returns["create_spaces"]["spaces_created"] == 3 and created.task_states["publish"] == "success"
    events = _asset_events(SPACES_CREATED_ASSET)
    assert len(events) == created_before + 1 and events[-1] == {"created_on": "2022-03-01", "spaces_created": 3}


@sqlite_only
def test_the_calendar_triggers_the_days_wave(airflow_home: Path, settings_env: Path, tmp_path: Path) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    run_dag("enrolment_wave", dt.date(2022, 1, 31), {"wave_id": "other", "departements": ["01"], "dry_run": True})
    monday = run_dag("rollout_calendar", dt.date(2022, 1, 31))  # an operator's run that day does not clash
    assert monday.task_states == {"todays_wave": "success", "trigger_wave": "success"}
    assert monday.xcom_returns["todays_wave"]["departements"] == ["01", "02", "03", "04"]
    with create_session() as session:
        triggered = session.scalar(
            select(DagRun).where(DagRun.dag_id == "enrolment_wave", DagRun.run_id == "rollout__rollout-2022-01-31")
        )
        assert triggered is not None and triggered.conf["wave_id"] == "rollout-2022-01-31"
        assert triggered.conf["send_date"] == "2022-01-31" and triggered.conf["recipient_cap"] == 2_000_000
    saturday = run_dag("rollout_calendar", dt.date(2022, 2, 5))
    assert saturday.task_states == {"todays_wave": "skipped", "trigger_wave": "skipped"}
    # an operator's edited plan
    edited = tmp_path / "plan.csv"
    edited.write_text("day;wave_id;departements;recipient_cap\n2022-02-05;catch-up-1;01,2A;1000\n", encoding="utf-8")
    catch_up = run_dag("rollout_calendar", dt.date(2022, 2, 5), {"plan_file": str(edited)})
    assert catch_up.xcom_returns["todays_wave"]["departements"] == ["01", "2A"]


@sqlite_only
def test_the_cli_plans_approves_and_advances(
    airflow_home: Path, settings_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from console.cli import main

    engine = get_engine()
    load_people(engine, [person_row(), person_row(departement="02")], tmp_path / "register")

    def cli(*argv: str) -> dict[str, Any]:
        capsys.readouterr()
        assert main([*argv, "--json"]) == 0
        out = capsys.readouterr().out
        return dict(json.loads(out[out.rfind("\n{\n") + 1 if not out.startswith("{\n") else 0 :]))

    dry = cli("wave", "run", "W-cli", "--departements", "01,02", "--date", "2022-01-31", "--dry-run")
    assert dry["state"] == "dry_run" and dry["counts"]["recipients"]["total"] == 2
    ran = cli("wave", "run", "W-cli", "--departements", "01,02", "--date", "2022-01-31", "--approve")
    assert ran["state"] == "approved" and ran["counts"]["people"]["planned"] == 2
    assert cli("wave", "show", "W-cli")["state"] == "approved"
    send_wave(engine, "W-cli", SEND)
    with engine.connect() as connection:
        first = connection.execute(text("SELECT nir FROM persons ORDER BY nir")).scalars().first()
    decisions = write_decisions(tmp_path / "d.csv", [decision("CLI-1", first, "opposition", "2022-02-14T10:00:00+01:00")])
    loaded = cli("load", "decisions", str(decisions), "--date", "2022-02-14")
    assert loaded["outcomes"] == {"opposed": 1} and loaded["rows"] == {"read": 1, "accepted": 1, "quarantined": 0}
    began = time.monotonic()
    quiet = cli("advance", "--to", "2022-02-28")
    assert quiet["days"] == 29 and quiet["runs"] == [] and quiet["nothing_due"] == 29 * len(DAILY_DAGS)
    assert time.monotonic() - began < 10
    busy = cli("advance", "--to", "2022-03-02")
    assert [run["day"] for run in busy["runs"]] == ["2022-03-01"]
    assert busy["runs"][0]["results"]["create_spaces"]["spaces_created"] == 1
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM daily_runs")).scalar_one() == 31 * len(DAILY_DAGS)


@sqlite_only
def _start_wave_run(*argv: str) -> subprocess.Popen[str]:
    """`mes-rollout wave run ... --json` in a process of its own (as an operator's shell runs it)."""
    from mes_rollout.config import PROJECT_ROOT

    command = [sys.executable, "-m", "console.cli", "wave", "run", *argv, "--date", "2022-01-31", "--json"]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ), cwd=PROJECT_ROOT
    )


def _outcome(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    return dict(json.loads(out[out.rfind("\n{\n") + 1 if not out.startswith("{\n") else 0 :]))


def _while_waiting(process: subprocess.Popen[str], attempt: Callable[[], bool]) -> None:
    """Try `attempt` every half second until it succeeds; meanwhile the run must be waiting."""
    give_up = time.monotonic() + 120
    while True:
        assert process.poll() is None and time.monotonic() < give_up, "the run did not wait for approval"
        time.sleep(0.5)
        if attempt():
            return


def test_the_cli_approves_in_a_fresh_process_or_waits_for_an_answer_from_another_shell(
    airflow_home: Path, settings_env: Path, tmp_path: Path
) -> None:
    from console.approval import answer

    load_people(get_engine(), [person_row(), person_row(departement="02")], tmp_path / "register")
    # --approve in a process that has not imported Airflow yet (the answer comes from a thread)
    assert _outcome(_start_wave_run("W-fresh", "--departements", "01", "--approve"))["state"] == "approved"
    # without --approve the run waits; another shell answers (here: this test, as `wave approve` does)
    waiting = _start_wave_run("W-wait", "--departements", "02")

    def answer_from_the_other_shell() -> bool:
        try:
            return answer("W-wait", APPROVE, comment="from the other shell")
        except Exception:  # noqa: BLE001 - the metadata database is busy with the run: ask again
            return False

    try:
        _while_waiting(waiting, answer_from_the_other_shell)
        assert _outcome(waiting)["state"] == "approved"
    finally:
        if waiting.poll() is None:
            waiting.kill()
    with get_engine().connect() as connection:
        comments = dict(connection.execute(text("SELECT wave_id, decision_comment FROM waves")).all())
    assert comments == {"W-fresh": "", "W-wait": "from the other shell"}


def test_an_answer_whose_resume_was_lost_is_sent_again(airflow_home: Path, settings_env: Path, tmp_path: Path) -> None:
    # On SQLite the run's own write of the deferred task can undo an answer given a moment after
    # the request appeared: the request shows a response, the task still awaits input, and the run
    # would wait for ever. Here the response is recorded without its resume (that lost state); the
    # in-process responder's call (settle given) sees it and sends the resume again.
    from airflow.models.hitl import HITLDetail, HITLUser
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    from console.approval import answer

    load_people(get_engine(), [person_row(departement="03")], tmp_path / "register")
    asked_after = dt.datetime.now(dt.UTC)
    waiting = _start_wave_run("W-lost", "--departements", "03")

    def record_the_response_without_its_resume() -> bool:
        with create_session() as session:
            detail = session.scalar(
                select(HITLDetail)
                .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
                .where(TaskInstance.task_id == "approval", TaskInstance.state == TaskInstanceState.AWAITING_INPUT)
                .where(HITLDetail.created_at >= asked_after, HITLDetail.responded_at.is_(None))
            )
            if detail is None:
                return False
            detail.responded_by = HITLUser(id="test", name="test")
            detail.responded_at = dt.datetime.now(dt.UTC)
            detail.chosen_options = [APPROVE]
            detail.params_input = {"comment": "resume lost"}
            session.add(detail)
            return True

    try:
        _while_waiting(waiting, record_the_response_without_its_resume)
        time.sleep(1.5)
        assert waiting.poll() is None  # the lost state: answered, yet the run still waits
        assert not answer("W-lost", APPROVE, asked_after=asked_after)  # a plain answer finds nothing pending
        assert answer("W-lost", APPROVE, asked_after=asked_after, settle=dt.timedelta(seconds=1))
        assert _outcome(waiting)["state"] == "approved"
    finally:
        if waiting.poll() is None:
            waiting.kill()
