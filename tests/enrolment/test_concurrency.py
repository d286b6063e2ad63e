"""On PostgreSQL, decisions intake and space creation in two processes at the same time: nobody who
opposed in time gets a space, and nobody's space is created twice, whichever commits first."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from enrolment.decisions import load_decisions
from enrolment.spaces import create_due_spaces
from enrolment.window import opt_out_deadline
from mes_rollout.config import OptOutWindow
from mes_rollout.db import make_engine, upgrade
from tests.enrolment.builders import decision, load_people, plan_wave, write_decisions
from tests.factories import person_row

pytestmark = pytest.mark.postgres

PEOPLE_PER_ROUND = 1500


def _intake(url: str, path: str, day: dt.date, start: float, delay: float) -> None:
    engine = make_engine(url)
    time.sleep(max(start + delay - time.time(), 0))
    load_decisions(engine, Path(path), as_of=day, run_id=f"intake-{day}")
    engine.dispose()


def _creation(url: str, day: dt.date, start: float, delay: float) -> None:
    engine = make_engine(url)
    time.sleep(max(start + delay - time.time(), 0))
    create_due_spaces(engine, day, run_id=f"creation-{day}", now=dt.datetime.now(dt.UTC))
    engine.dispose()


def _round(engine: Engine, url: str, folder: Path, index: int, send: dt.date, intake_delay: float, creation_delay: float) -> dict[str, set[str]]:
    people = [
        person_row(date_naissance=f"{1940 + i % 60}-{1 + (i // 60) % 12:02d}-{10 + index:02d}", departement=f"0{index}")
        for i in range(PEOPLE_PER_ROUND)
    ]
    load_people(engine, people, folder / "register")
    plan_wave(engine, folder / "var", f"W{index}", [f"0{index}"], send)
    deadline = opt_out_deadline(send, OptOutWindow())
    with engine.begin() as connection:  # every message of the wave was sent on `send` (set-based, for speed)
        connection.execute(
            text("UPDATE enrolments SET state = 'notified', opt_out_deadline = :d WHERE wave_id = :w"),
            {"d": deadline, "w": f"W{index}"},
        )
    nirs = [person["nir"] for person in people]
    groups = {"in_time": set(nirs[0::3]), "late": set(nirs[1::6]), "activated": set(nirs[2::12])}
    rows = []
    for n, nir in enumerate(sorted(groups["in_time"])):
        received = deadline - dt.timedelta(minutes=n % 600)
        rows.append(decision(f"O{index}-{n}", nir, "opposition", received.isoformat()))
    for n, nir in enumerate(sorted(groups["late"])):
        rows.append(decision(f"L{index}-{n}", nir, "opposition", (deadline + dt.timedelta(hours=1)).isoformat()))
    for n, nir in enumerate(sorted(groups["activated"])):
        rows.append(decision(f"A{index}-{n}", nir, "activation", (deadline - dt.timedelta(days=3)).isoformat()))
    path = write_decisions(folder / f"decisions-{index}.csv", rows)
    creation_day = deadline.date() + dt.timedelta(days=1)
    context = multiprocessing.get_context("spawn")
    start = time.time() + 3  # both processes are up by then
    workers = [
        context.Process(target=_intake, args=(url, str(path), creation_day, start, intake_delay)),
        context.Process(target=_creation, args=(url, creation_day, start, creation_delay)),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    groups["all"] = set(nirs)
    return groups


def test_decisions_and_creation_running_at_once_never_give_a_space_to_an_opposer(postgres_url: str, tmp_path: Path) -> None:
    engine = make_engine(postgres_url)
    upgrade(engine)
    rounds = [
        _round(engine, postgres_url, tmp_path, 1, dt.date(2022, 1, 31), 0.0, 0.0),  # together
        _round(engine, postgres_url, tmp_path, 2, dt.date(2022, 2, 1), 0.3, 0.0),  # creation first
        _round(engine, postgres_url, tmp_path, 3, dt.date(2022, 2, 2), 0.0, 0.3),  # intake first
    ]
    with engine.connect() as connection:
        enrolled = dict(connection.execute(text("SELECT nir, state FROM enrolments")).all())
        found = {nir: (state, cause) for nir, state, cause in connection.execute(text("SELECT nir, state, creation_cause FROM spaces"))}
        created_events = Counter(
            connection.execute(text("SELECT entity_id FROM audit_trail WHERE entity = 'space' AND action IN ('created', 'create')")).scalars()
        )
        withdrawn = connection.execute(text("SELECT COUNT(*) FROM decisions WHERE outcome = 'withdrawn'")).scalar_one()
    engine.dispose()
    for groups in rounds:
        for nir in groups["in_time"]:
            assert enrolled[nir] == "opposed"
            assert found.get(nir, ("none",))[0] in ("none", "deleted"), "an opposer in time has a space"
        for nir in groups["late"] - groups["in_time"]:
            assert found.get(nir, ("none",))[0] != "active"
        for nir in groups["activated"]:  # activated by them, or created by the run that committed first
            assert found[nir][0] == "active" and enrolled[nir] == "created"
        for nir in groups["all"] - groups["in_time"] - groups["late"] - groups["activated"]:
            assert found[nir] == ("active", "automatic") and enrolled[nir] == "created"
    assert max(created_events.values()) == 1, "a space was created twice"
    print(f"oppositions in time applied after the automatic creation (withdrawn): {withdrawn}")
