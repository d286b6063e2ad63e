"""Builders for enrolment tests: people in the register, a planned wave, sent messages, decisions files."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from enrolment.dao import approve_wave, register_wave, start_window
from enrolment.planning import plan_shard, select_cohort, summarise
from enrolment.register import load_register
from enrolment.waves import WaveRequest
from mes_rollout.config import OptOutWindow
from tests.factories import write_csv

DECISION_COLUMNS = ("reference", "nir", "event", "received_at", "channel")
NOW = dt.datetime(2022, 1, 31, 8, 0, tzinfo=dt.UTC)


def load_people(engine: Engine, rows: Iterable[Mapping[str, str]], folder: Path, as_of: dt.date = dt.date(2022, 1, 28)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = write_csv(folder / f"register-{len(list(folder.iterdir()))}.csv", rows)
    summary = load_register(engine, path, as_of=as_of)
    assert summary.quarantined == 0, summary.as_dict()


def plan_wave(
    engine: Engine,
    var_dir: Path,
    wave_id: str,
    departements: Iterable[str],
    send_date: dt.date,
    *,
    cap: int | None = None,
    shard_size: int = 10_000,
    decide: bool = True,
) -> dict[str, Any]:
    """Plan a wave through the same functions as the DAG's tasks, and approve it."""
    request = WaveRequest.from_params(
        {"wave_id": wave_id, "departements": list(departements), "recipient_cap": cap}, send_date
    )
    with engine.begin() as connection:
        register_wave(connection, request, run_id="test", now=NOW)
    shards = select_cohort(engine, wave_id, var_dir=var_dir, shard_size=shard_size, run_id="test", now=NOW)
    for shard in shards:
        plan_shard(engine, wave_id, shard, var_dir=var_dir, run_id="test", now=NOW)
    counts = summarise(engine, wave_id, run_id="test", now=NOW)
    if decide:
        with engine.begin() as connection:
            approve_wave(connection, wave_id, by="tester", comment="", run_id="test", now=NOW)
    return counts


def send_wave(engine: Engine, wave_id: str, send_date: dt.date, window: OptOutWindow | None = None) -> int:
    """Stands in for the notifications package: every created message of the wave is sent on
    send_date, and the sender calls start_window for it (exactly what the sending DAG does)."""
    started = 0
    with engine.begin() as connection:
        ids = connection.execute(
            text("SELECT notification_id FROM notifications WHERE wave_id = :w AND status = 'created' ORDER BY 1"),
            {"w": wave_id},
        ).scalars().all()
        for notification_id in ids:
            started += start_window(
                connection, notification_id, send_date, window or OptOutWindow(), run_id="test-sender", now=NOW
            )
        # As the sender records it, so that the daily sending run finds nothing left to send.
        connection.execute(
            text("UPDATE notifications SET status = 'sent', sent_at = :now WHERE wave_id = :w AND status = 'created'"),
            {"w": wave_id, "now": NOW},
        )
    return started


def decision(reference: str, nir: str, event: str, received_at: str, channel: str = "web") -> dict[str, str]:
    return {"reference": reference, "nir": nir, "event": event, "received_at": received_at, "channel": channel}


def write_decisions(path: Path, rows: Iterable[Mapping[str, str]]) -> Path:
    return write_csv(path, rows, DECISION_COLUMNS)


def states(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT nir, state FROM enrolments")).all())  # type: ignore[arg-type]


def spaces(engine: Engine) -> dict[str, tuple[str, str]]:
    with engine.connect() as connection:
        return {
            nir: (state, cause)
            for nir, state, cause in connection.execute(text("SELECT nir, state, creation_cause FROM spaces"))
        }
