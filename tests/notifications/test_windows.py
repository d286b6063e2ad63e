"""start_windows (the sending hot path) leaves exactly what start_window, called per message, leaves."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from enrolment.dao import start_window, start_windows
from mes_rollout.config import OptOutWindow
from tests.notifications.factories import adult, create_notification, create_wave, family, load_people

NOW = dt.datetime(2022, 2, 1, 8, 0, tzinfo=dt.UTC)


def _state(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        enrolments = sorted(tuple(map(str, row)) for row in connection.execute(text("SELECT * FROM enrolments")))
        audit = sorted(
            tuple(map(str, row))
            for row in connection.execute(
                text("SELECT occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id, details"
                     " FROM audit_trail WHERE action = 'window_started'")
            )
        )
    return {"enrolments": enrolments, "audit": audit}


def test_start_windows_matches_start_window_for_every_message(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    singles = [adult() for _ in range(3)]
    load_people(engine, tmp_path, singles)
    parent, kids = family(tmp_path, engine, children=2)
    wave = create_wave(engine, settings_env)
    ids = [create_notification(engine, settings_env, wave, person) for person in singles]
    ids.append(create_notification(engine, settings_env, wave, parent, [parent, *kids]))
    window = OptOutWindow(months=0, weeks=6)
    with engine.begin() as connection:  # one person already notified: the window starts again
        connection.execute(text("UPDATE enrolments SET state = 'notified' WHERE nir = :nir"), {"nir": singles[0]["nir"]})
        connection.execute(text("UPDATE enrolments SET state = 'opposed' WHERE nir = :nir"), {"nir": singles[1]["nir"]})

    with engine.begin() as connection:
        started = start_windows(connection, ids, dt.date(2022, 1, 31), window, run_id="same", now=NOW)
    batched = _state(engine)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_trail WHERE action = 'window_started'"))
        connection.execute(text("UPDATE enrolments SET state = 'planned', notified_at = NULL, opt_out_deadline = NULL"
                                " WHERE state = 'notified'"))
        connection.execute(text("UPDATE enrolments SET state = 'notified' WHERE nir = :nir"), {"nir": singles[0]["nir"]})
    with engine.begin() as connection:
        one_by_one = sum(
            start_window(connection, i, dt.date(2022, 1, 31), window, run_id="same", now=NOW) for i in ids
        )
    assert started == one_by_one == 5
    assert _state(engine) == batched
