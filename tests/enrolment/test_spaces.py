"""Space creation on both databases: the day after the deadline, never for the opposed, the
unreachable, the planned or the dead; deaths recorded during the window cancel the enrolment."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Engine, text

from enrolment.decisions import load_decisions
from enrolment.spaces import create_due_spaces, creation_due
from mes_rollout.config import OptOutWindow
from mes_rollout.db import as_date
from tests.enrolment.builders import (
    decision,
    load_people,
    plan_wave,
    send_wave,
    spaces,
    states,
    write_decisions,
)
from tests.factories import person_row

SEND = dt.date(2022, 1, 31)
NOW = dt.datetime(2022, 3, 1, 5, tzinfo=dt.UTC)


def _create(engine: Engine, day: dt.date) -> dict:
    return create_due_spaces(engine, day, run_id=f"creation-{day}", now=NOW)


def test_spaces_are_created_the_day_after_the_deadline_for_those_who_did_not_oppose(engine: Engine, tmp_path: Path) -> None:
    told = [person_row() for _ in range(4)]
    nowhere = person_row(email="", adresse_ligne4="", code_postal="", commune="")
    load_people(engine, [*told, nowhere], tmp_path / "register")
    plan_wave(engine, tmp_path / "var", "W1", ["01"], SEND)
    never_sent = told[3]["nir"]
    with engine.begin() as connection:  # one message is never sent: its person stays planned
        connection.execute(
            text("UPDATE notifications SET status = 'sending' WHERE notification_id IN"
                 " (SELECT notification_id FROM notification_members WHERE nir = :n)"),
            {"n": never_sent},
        )
    send_wave(engine, "W1", SEND)
    opposing = told[0]["nir"]
    load_decisions(
        engine,
        write_decisions(tmp_path / "d.csv", [decision("O1", opposing, "opposition", "2022-02-27T10:00:00+01:00")]),
        as_of=dt.date(2022, 2, 27),
    )
    with engine.connect() as connection:
        assert not creation_due(connection, dt.date(2022, 2, 28))
        assert creation_due(connection, dt.date(2022, 3, 1))
    assert _create(engine, dt.date(2022, 2, 28))["spaces_created"] == 0
    assert _create(engine, dt.date(2022, 3, 1))["spaces_created"] == 2
    assert _create(engine, dt.date(2022, 3, 1))["spaces_created"] == 0  # the same run again
    assert _create(engine, dt.date(2022, 3, 2))["spaces_created"] == 0
    assert set(spaces(engine)) == {told[1]["nir"], told[2]["nir"]}
    assert states(engine) == {
        opposing: "opposed",
        told[1]["nir"]: "created",
        told[2]["nir"]: "created",
        never_sent: "planned",
        nowhere["nir"]: "unreachable",
    }
    with engine.connect() as connection:
        created_on = {as_date(day) for day in connection.execute(text("SELECT created_on FROM spaces")).scalars()}
        audited = connection.execute(
            text("SELECT entity, action, COUNT(*) FROM audit_trail WHERE run_id LIKE 'creation-%' GROUP BY entity, action ORDER BY 1")
        ).all()
        assert not creation_due(connection, dt.date(2022, 3, 2))
    assert created_on == {dt.date(2022, 3, 1)}
    assert [tuple(row) for row in audited] == [("enrolment", "space_created", 2), ("space", "created", 2)]


def test_a_death_recorded_before_creation_cancels_the_enrolment(engine: Engine, tmp_path: Path) -> None:
    alone, parent = person_row(), person_row()
    child = person_row(date_naissance="2012-02-02", nir_representant=parent["nir"])
    load_people(engine, [alone, parent, child], tmp_path / "register")
    plan_wave(engine, tmp_path / "var", "W1", ["01"], SEND)
    # the register reports two deaths before anything is sent
    load_people(
        engine,
        [{**alone, "date_deces": "2022-02-01"}, {**child, "date_deces": "2022-02-01"}],
        tmp_path / "register",
        as_of=dt.date(2022, 2, 2),
    )
    with engine.connect() as connection:
        assert creation_due(connection, dt.date(2022, 2, 2))
    result = _create(engine, dt.date(2022, 2, 2))
    assert result == {"day": "2022-02-02", "spaces_created": 0, "cancelled_deceased": 2, "cancelled_notifications": 1}
    with engine.connect() as connection:
        statuses = dict(connection.execute(text("SELECT recipient_nir, status FROM notifications")).all())
    assert statuses == {alone["nir"]: "cancelled", parent["nir"]: "created"}  # the parent is still told
    send_wave(engine, "W1", SEND)
    assert _create(engine, dt.date(2022, 3, 1))["spaces_created"] == 1
    assert states(engine) == {alone["nir"]: "cancelled_deceased", child["nir"]: "cancelled_deceased", parent["nir"]: "created"}


def test_a_six_week_window_moves_creation(engine: Engine, tmp_path: Path) -> None:
    load_people(engine, [person_row()], tmp_path / "register")
    plan_wave(engine, tmp_path / "var", "W1", ["01"], SEND)
    send_wave(engine, "W1", SEND, OptOutWindow.parse("P6W"))
    assert _create(engine, dt.date(2022, 3, 14))["spaces_created"] == 0
    assert _create(engine, dt.date(2022, 3, 15))["spaces_created"] == 1
