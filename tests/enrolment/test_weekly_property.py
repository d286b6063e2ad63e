"""Property: whatever the sequence of register extracts, oppositions, returned letters and weekly
waves (real planning on SQLite), a weekly wave tells only people in no enrolment yet or left
unreachable, alive on its send date, each at most once: never someone planned or notified (told
twice within one enrolment), opposed, created or deceased."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from enrolment.dao import approve_wave, register_wave
from enrolment.decisions import load_decisions
from enrolment.planning import plan_shard, select_cohort, summarise
from enrolment.register import load_register
from enrolment.spaces import create_due_spaces
from enrolment.weekly import weekly_request
from mes_rollout.db import as_date, make_engine, upgrade
from notifications.fallback import letter_returned
from tests.enrolment.builders import NOW, decision, send_wave, write_decisions
from tests.factories import person_row, write_csv

SLOTS = 5  # slot 0 an adult who may represent slot 4, a minor
FIRST_MONDAY = dt.date(2022, 4, 4)

variant = st.tuples(st.booleans(), st.booleans(), st.sampled_from(["01", "02"]), st.booleans(), st.booleans())
action = st.one_of(
    st.tuples(st.just("extract"), st.dictionaries(st.integers(0, SLOTS - 1), variant, min_size=1)),
    st.tuples(st.just("oppose"), st.integers(0, SLOTS - 1)),
    st.tuples(st.just("return"), st.integers(0, SLOTS - 1)),
    st.tuples(st.just("week"), st.just(0)),
)


def _row(base: dict[str, str], shape: tuple[bool, bool, str, bool, bool], slot: int, death: dt.date, serial: int) -> dict[str, str]:
    has_email, has_address, departement, dead, represented = shape
    row = {
        **base,
        "email": f"p{slot}.{serial}@example.fr" if has_email else "",
        "adresse_ligne4": f"{serial} rue des Lilas" if has_address else "",
        "code_postal": "01000" if has_address else "",
        "commune": "Bourg-en-Bresse" if has_address else "",
        "departement": departement,
    }
    if dead:
        row["date_deces"] = death.isoformat()
    if slot == SLOTS - 1:
        row["nir_representant"] = base["representative"] if represented else ""
    row.pop("representative", None)
    return row


def _members(engine: Engine, wave_id: str) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT m.nir FROM notification_members m JOIN notifications n"
                    " ON n.notification_id = m.notification_id WHERE n.wave_id = :w"
                ),
                {"w": wave_id},
            ).scalars()
        )


def _run(folder: Path, actions: list[tuple[str, Any]]) -> None:
    engine = make_engine(f"sqlite:///{folder / 'mes.db'}")
    upgrade(engine)
    parent = person_row()
    people = [parent] + [person_row() for _ in range(SLOTS - 2)]
    people.append({**person_row(date_naissance="2015-05-05", sexe="M"), "representative": parent["nir"]})
    loaded: set[int] = set()
    day, serial = FIRST_MONDAY, 0
    try:
        for kind, argument in [*actions, ("week", 0)]:
            serial += 1
            if kind == "extract":
                shapes = dict(argument)
                if SLOTS - 1 in shapes and shapes[SLOTS - 1][4] and 0 not in loaded | set(shapes):
                    shapes[0] = (True, True, "01", False, False)  # the representative comes first
                rows = [_row(people[slot], shape, slot, day - dt.timedelta(days=2), serial) for slot, shape in sorted(shapes.items())]
                if SLOTS - 1 in shapes and shapes[SLOTS - 1][4] and shapes.get(0, (0, 0, 0, False))[3]:
                    rows = [row for row in rows if row["nir"] != people[SLOTS - 1]["nir"]]  # a dead representative
                path = write_csv(folder / f"register-{serial}.csv", rows)
                load_register(engine, path, as_of=day - dt.timedelta(days=1))
                loaded |= {slot for slot in shapes if any(row["nir"] == people[slot]["nir"] for row in rows)}
            elif kind == "oppose" and argument in loaded:
                nir = people[argument]["nir"]
                path = write_decisions(folder / f"decisions-{serial}.csv", [decision(f"R{serial}", nir, "opposition", f"{day}T09:00:00+02:00")])
                load_decisions(engine, path, as_of=day, run_id="prop", now=NOW)
            elif kind == "return" and argument in loaded:
                nir = people[argument]["nir"]
                with engine.begin() as connection:
                    letters = connection.execute(
                        text("SELECT notification_id FROM notifications WHERE recipient_nir = :n AND channel = 'letter'"),
                        {"n": nir},
                    ).scalars().all()
                    for letter in letters:
                        letter_returned(connection, letter, nir, run_id="prop", now=NOW)
            elif kind == "week":
                _weekly(engine, folder, day)
                day += dt.timedelta(weeks=1)
    finally:
        engine.dispose()


def _weekly(engine: Engine, var_dir: Path, day: dt.date) -> None:
    with engine.connect() as connection:
        before = dict(connection.execute(text("SELECT nir, state FROM enrolments")).all())
        deaths = {nir: as_date(death) for nir, death in connection.execute(text("SELECT nir, date_deces FROM persons"))}
    request = weekly_request(day, {})
    with engine.begin() as connection:
        register_wave(connection, request, run_id="prop", now=NOW)
    for shard in select_cohort(engine, request.wave_id, var_dir=var_dir, shard_size=2, run_id="prop", now=NOW):
        plan_shard(engine, request.wave_id, shard, var_dir=var_dir, run_id="prop", now=NOW)
    summarise(engine, request.wave_id, run_id="prop", now=NOW)
    with engine.begin() as connection:
        approve_wave(connection, request.wave_id, by="prop", comment="", run_id="prop", now=NOW)
    told = _members(engine, request.wave_id)
    assert len(told) == len(set(told)), "someone is in two messages of one wave"
    for nir in told:
        assert before.get(nir) in (None, "unreachable"), f"told again while {before.get(nir)}"
        death = deaths.get(nir)
        assert death is None or death > day, "a deceased person was told"
    send_wave(engine, request.wave_id, day)
    create_due_spaces(engine, day, run_id="prop", now=NOW)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=8))
def test_no_sequence_of_extracts_decisions_and_weekly_waves_tells_someone_twice_or_wrongly(
    actions: list[tuple[str, Any]],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        _run(Path(folder), actions)
