"""enrolment/dao.py on both databases: a transition applies only from the states it may come from,
and a write that finds its row moved leaves nothing behind, audit rows included."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from enrolment import dao
from mes_rollout.audit import AuditEvent
from mes_rollout.constants import EnrolmentState, SpaceCause, SpaceState
from tests.enrolment.builders import NOW, load_people, plan_wave, states
from tests.factories import person_row

SEND = dt.date(2022, 1, 31)


def _audit(engine: Engine, entity: str) -> list[tuple[str, str | None, str | None]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT action, from_state, to_state FROM audit_trail WHERE entity = :entity ORDER BY id"),
            {"entity": entity},
        ).all()
    return [(action, from_state, to_state) for action, from_state, to_state in rows]


def test_a_wave_is_decided_once(engine: Engine, tmp_path: Path) -> None:
    load_people(engine, [person_row()], tmp_path / "register")
    plan_wave(engine, tmp_path / "var", "W1", ["01"], SEND, decide=False)
    with engine.begin() as connection:
        assert dao.approve_wave(connection, "W1", by="op", comment="", run_id="r1", now=NOW)
        assert not dao.approve_wave(connection, "W1", by="op", comment="again", run_id="r2", now=NOW)
        assert dao.reject_wave(connection, "W1", by="other", comment="", run_id="r3", now=NOW) == {
            "cancelled_notifications": 0,
            "released_people": 0,
        }
    with engine.connect() as connection:
        wave = connection.execute(text("SELECT state, decided_by, decision_comment FROM waves")).one()
    assert tuple(wave) == ("approved", "op", "")
    assert [row for row in _audit(engine, "wave") if row[0] in ("approved", "rejected")] == [
        ("approved", "awaiting_approval", "approved")
    ]
    assert set(states(engine).values()) == {"planned"}


def test_decisions_written_over_a_moved_row_leave_nothing(engine: Engine, tmp_path: Path) -> None:
    person = person_row()
    load_people(engine, [person], tmp_path / "register")
    plan_wave(engine, tmp_path / "var", "W1", ["01"], SEND)
    nir = person["nir"]
    received = dt.datetime(2022, 2, 10, 9, tzinfo=dt.UTC)
    decided = dao.AppliedDecision("R1", nir, "opposition", received, "web", "opposed", 1)
    event = AuditEvent("enrolment", nir, "opposed", NOW, "notified", "opposed", "opposition in time", "r")
    # The person is planned, not notified as the batch believed: nothing of the batch is kept.
    with pytest.raises(dao.StaleState, match="1 of 1 enrolments"), engine.begin() as connection:
        dao.apply_decisions(
            connection,
            decisions=[decided],
            moves=[dao.EnrolmentMove(nir, EnrolmentState.NOTIFIED, EnrolmentState.OPPOSED, "opposition in time", received)],
            spaces=[],
            events=[event],
            run_id="r",
            now=NOW,
        )
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM decisions")).scalar_one() == 0
    assert states(engine) == {nir: "planned"}
    assert [row for row in _audit(engine, "enrolment") if row[0] == "opposed"] == []

    # A space written as new while one exists is refused the same way.
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO spaces (nir, state, created_on, creation_cause, updated_at)"
                " VALUES (:nir, 'active', :day, 'automatic', :now)"
            ),
            {"nir": nir, "day": dt.date(2022, 3, 1), "now": NOW},
        )
    activation = dao.SpaceRecord(SpaceState.ACTIVE, dt.date(2022, 3, 2), SpaceCause.ACTIVATION)
    with pytest.raises(dao.StaleState, match="1 of 1 spaces"), engine.begin() as connection:
        dao.apply_decisions(
            connection, decisions=[], moves=[], spaces=[dao.SpaceWrite(nir, None, activation)], events=[], run_id="r", now=NOW
        )
    with engine.connect() as connection:
        space = connection.execute(text("SELECT state, creation_cause FROM spaces")).one()
    assert tuple(space) == ("active", "automatic")
