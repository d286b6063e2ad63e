"""The weekly wave after the rollout calendar: its id, scope and weekday; who it tells (the people
never told, the unreachable whose recipient the register gave a new channel, nobody else); and
the approval: automatic up to MES_WEEKLY_AUTO_APPROVE_CAP messages, the operator's above it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from console.approval import APPROVE, run_wave
from console.dagrun import run_dag
from enrolment.planning import plan_shard, select_cohort, summarise
from enrolment.waves import WaveRequest
from enrolment.weekly import past_departements, weekly_request, weekly_wave_due, weekly_wave_id
from mes_rollout.db import get_engine
from notifications.fallback import letter_returned
from tests.enrolment.builders import NOW, load_people, plan_wave, send_wave, states
from tests.factories import person_row

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_the_weekly_wave_is_named_after_its_week_and_covers_the_departements_whose_wave_is_past() -> None:
    assert weekly_wave_id(dt.date(2022, 4, 4)) == "weekly-2022-W14"
    assert weekly_wave_id(dt.date(2022, 4, 10)) == "weekly-2022-W14"  # Sunday: the same ISO week
    assert weekly_wave_id(dt.date(2023, 1, 1)) == "weekly-2022-W52"  # ISO year, not calendar year
    # 1 February 2022: 01-03 were told on 31 January; 04 is cut over 31 January and 1 February and
    # waits for its second day; the pilots (enrolled in 2021) are past from the start.
    assert past_departements(dt.date(2022, 2, 1)) == ("01", "02", "03", "31", "44", "80")
    after = past_departements(dt.date(2022, 3, 29))
    # 96 metropolitan départements (2A and 2B, no 20) and 971-976
    assert len(after) == 102 and after[:3] == ("01", "02", "03") and after[-1] == "976"
    assert past_departements(dt.date(2022, 3, 28))[-1] == "971"  # 972-976 are told that day
    request = weekly_request(dt.date(2022, 4, 4), {"recipient_cap": 500})
    assert (request.wave_id, request.send_date, request.recipient_cap) == ("weekly-2022-W14", dt.date(2022, 4, 4), 500)


def test_the_weekly_wave_is_due_on_mondays_after_the_calendars_last_wave() -> None:
    assert not weekly_wave_due(None, dt.date(2022, 3, 28))  # type: ignore[arg-type]  # the last calendar wave
    assert not weekly_wave_due(None, dt.date(2022, 3, 21))  # type: ignore[arg-type]
    assert weekly_wave_due(None, dt.date(2022, 4, 4))  # type: ignore[arg-type]
    assert not weekly_wave_due(None, dt.date(2022, 4, 5))  # type: ignore[arg-type]
    assert weekly_wave_due(None, dt.date(2023, 1, 2))  # type: ignore[arg-type]


def _plan_weekly(engine: Engine, var_dir: Path, day: dt.date) -> dict[str, int]:
    request = weekly_request(day, {})
    from enrolment.dao import approve_wave, register_wave

    with engine.begin() as connection:
        register_wave(connection, request, run_id="test", now=NOW)
    for shard in select_cohort(engine, request.wave_id, var_dir=var_dir, shard_size=10_000, run_id="test", now=NOW):
        plan_shard(engine, request.wave_id, shard, var_dir=var_dir, run_id="test", now=NOW)
    counts = summarise(engine, request.wave_id, run_id="test", now=NOW)
    with engine.begin() as connection:
        approve_wave(connection, request.wave_id, by="tester", comment="", run_id="test", now=NOW)
    return {"planned": counts["people"]["planned"], "unreachable": counts["people"]["unreachable"]}


def _told(engine: Engine, wave_id: str) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT m.nir, n.recipient_nir FROM notification_members m"
                " JOIN notifications n ON n.notification_id = m.notification_id WHERE n.wave_id = :w"
            ),
            {"w": wave_id},
        ).all()
    return {nir: recipient for nir, recipient in rows}


def test_the_weekly_wave_tells_the_new_people_and_the_reachable_again_and_nobody_else(
    engine: Engine, tmp_path: Path
) -> None:
    var = tmp_path / "var"
    parent = person_row(email="parent@example.fr")
    told = person_row(email="told@example.fr")
    npai = person_row(email="")
    quiet = person_row(email="q@example.fr")
    load_people(engine, [parent, told, npai, quiet], tmp_path / "register", as_of=dt.date(2022, 1, 28))
    plan_wave(engine, var, "W-01", ["01"], dt.date(2022, 1, 31))
    send_wave(engine, "W-01", dt.date(2022, 1, 31))
    with engine.begin() as connection:
        npai_letter = connection.execute(
            text("SELECT notification_id FROM notifications WHERE recipient_nir = :n"), {"n": npai["nir"]}
        ).scalar_one()
        assert letter_returned(connection, npai_letter, npai["nir"], run_id="t", now=NOW) == 1

    # April: a newborn (told through the parent), a newly insured person in 02, the NPAI person's
    # new address; the person told in January moves to 02; nobody else changes.
    baby = person_row(date_naissance="2022-03-20", sexe="M", email="", nir_representant=parent["nir"])
    newcomer = person_row(departement="02", email="new@example.fr")
    moved = {**told, "departement": "02", "code_postal": "02000", "commune": "Laon"}
    readdressed = {**npai, "adresse_ligne4": "3 place Neuve"}
    load_people(engine, [parent, moved, readdressed, quiet, baby, newcomer], tmp_path / "register", as_of=dt.date(2022, 4, 1))
    assert _plan_weekly(engine, var, dt.date(2022, 4, 4)) == {"planned": 3, "unreachable": 0}
    assert _told(engine, "weekly-2022-W14") == {
        baby["nir"]: parent["nir"],
        newcomer["nir"]: newcomer["nir"],
        npai["nir"]: npai["nir"],
    }
    # The next week, nothing new: nobody is told twice.
    assert _plan_weekly(engine, var, dt.date(2022, 4, 11)) == {"planned": 0, "unreachable": 0}
    assert states(engine)[npai["nir"]] == "planned"


@sqlite_only
def test_a_weekly_wave_above_the_cap_waits_for_the_operator_and_one_below_is_approved_alone(
    airflow_home: Path, settings_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    engine = get_engine()
    monkeypatch.setenv("MES_WEEKLY_AUTO_APPROVE_CAP", "1")
    monkeypatch.setenv("MES_OPT_OUT_WINDOW", "P1M;2022-04-01=P6W")
    load_people(engine, [person_row(email="a@example.fr"), person_row(departement="2A", email="b@example.fr")], tmp_path / "r")
    day = dt.date(2022, 5, 9)  # weekly-2022-W19
    weekly = run_dag("weekly_wave", day)
    assert weekly.xcom_returns["settle"]["route"] == "ask_operator" and weekly.xcom_returns["settle"]["messages"] == 2
    assert weekly.task_states["ask_operator"] == "success" and weekly.task_states["publish_approved"] == "skipped"
    body = weekly.xcom_returns["summarise"]["body"]
    assert "| messages by email | 2 |" in body
    assert "Opt-out window P6W (setting P1M;2022-04-01=P6W) for messages sent on 2022-05-09: last day to oppose 2022-06-20." in body
    with create_session() as session:
        triggered = session.scalar(select(DagRun).where(DagRun.run_id == "weekly__weekly-2022-W19"))
        assert triggered is not None and triggered.dag_id == "enrolment_wave"
        assert triggered.conf["departements"][:2] == ["01", "02"] and triggered.conf["send_date"] == "2022-05-09"
    with engine.connect() as connection:
        assert connection.execute(text("SELECT state FROM waves WHERE wave_id = 'weekly-2022-W19'")).scalar_one() == "awaiting_approval"
    # The operator's answer, through enrolment_wave's approval step (the triggered run's conf).
    approved = run_wave(WaveRequest.from_params(triggered.conf, day), day, decision=APPROVE)
    assert approved.task_states["approve_wave"] == "success"
    # Under the cap: approved by the weekly run itself; a re-run of the week decides nothing again.
    monkeypatch.setenv("MES_WEEKLY_AUTO_APPROVE_CAP", "5")
    load_people(engine, [person_row(email="c@example.fr")], tmp_path / "r", as_of=dt.date(2022, 5, 12))
    alone = run_dag("weekly_wave", dt.date(2022, 5, 16))
    assert alone.xcom_returns["settle"] == {
        "wave_id": "weekly-2022-W20", "state": "approved", "messages": 1, "auto_approve_cap": 5, "route": "approved",
    }  # fmt: skip
    assert alone.task_states["publish_approved"] == "success" and alone.task_states["ask_operator"] == "skipped"
    again = run_dag("weekly_wave", dt.date(2022, 5, 16))
    assert again.xcom_returns["settle"]["route"] == "already_decided"
    with engine.connect() as connection:
        decided = dict(connection.execute(text("SELECT wave_id, decided_by FROM waves")).all())
    assert decided["weekly-2022-W20"] == "auto-approval (MES_WEEKLY_AUTO_APPROVE_CAP)"
    assert decided["weekly-2022-W19"].endswith("(mes-rollout CLI)")
