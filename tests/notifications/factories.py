"""Rows for notification tests, built straight in the tables the wave planning fills.

People come in through the real register intake; a wave, its enrolments, notifications and
members are inserted as the enrolment side's planning leaves them (status created, wave approved).
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from enrolment.codes import code_hash, provisional_code, wave_key
from enrolment.references import free_references
from enrolment.register import load_register
from tests.factories import person_row, write_csv

SEND_DATE = dt.date(2022, 1, 31)
NOW = dt.datetime(2022, 1, 31, 6, 0, tzinfo=dt.UTC)
_files = itertools.count(1)


def load_people(engine: Engine, folder: Path, rows: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Load register rows through the real intake (each call is a new extract)."""
    path = write_csv(folder / f"register-{next(_files)}.csv", rows)
    summary = load_register(engine, path, as_of=dt.date(2022, 1, 20), now=NOW)
    assert summary.quarantined == 0, summary.as_dict()
    return list(rows)


def create_wave(
    engine: Engine,
    var_dir: Path,
    *,
    wave_id: str | None = None,
    send_date: dt.date = SEND_DATE,
    state: str = "approved",
    departements: str = "01",
) -> str:
    wave_id = wave_id or f"W-{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO waves (wave_id, departements, send_date, state, created_at, updated_at)"
                " VALUES (:id, :deps, :send_date, :state, :now, :now)"
            ),
            {"id": wave_id, "deps": departements, "send_date": send_date, "state": state, "now": NOW},
        )
    wave_key(var_dir, wave_id, create=True)
    return wave_id


def create_notification(
    engine: Engine,
    var_dir: Path,
    wave_id: str,
    recipient: dict[str, str],
    members: Sequence[dict[str, str]] | None = None,
    *,
    channel: str = "email",
    email: str | None = None,
    shard: int = 0,
    status: str = "created",
    notification_id: str | None = None,
) -> str:
    """A message to `recipient` telling `members` (default: the recipient), each member enrolled
    'planned' in the wave, as the planning leaves them."""
    notification_id = notification_id or str(uuid.uuid4())
    members = list(members) if members is not None else [recipient]
    key = wave_key(var_dir, wave_id)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO notifications (notification_id, wave_id, recipient_nir, channel, status, shard, email,"
                " reference, created_at, updated_at)"
                " VALUES (:id, :wave, :recipient, :channel, :status, :shard, :email, :reference, :now, :now)"
            ),
            {
                "id": notification_id,
                "wave": wave_id,
                "recipient": recipient["nir"],
                "channel": channel,
                "status": status,
                "shard": shard,
                "email": (email or recipient["email"] or None) if channel == "email" else None,
                "reference": free_references(connection, [notification_id])[notification_id],
                "now": NOW,
            },
        )
        for member in members:
            connection.execute(
                text("INSERT INTO notification_members (notification_id, nir) VALUES (:id, :nir)"),
                {"id": notification_id, "nir": member["nir"]},
            )
            connection.execute(
                text(
                    "INSERT INTO enrolments (nir, wave_id, state, recipient_nir, code_hash, notification_id, updated_at)"
                    " VALUES (:nir, :wave, 'planned', :recipient, :hash, :id, :now)"
                    " ON CONFLICT (nir) DO NOTHING"
                ),
                {
                    "id": notification_id,
                    "nir": member["nir"],
                    "wave": wave_id,
                    "recipient": recipient["nir"],
                    "hash": code_hash(member["nir"], provisional_code(key, member["nir"])),
                    "now": NOW,
                },
            )
    return notification_id


def adult(**overrides: Any) -> dict[str, str]:
    return person_row(**overrides)


def family(folder: Path, engine: Engine, children: int = 2, **parent_overrides: Any) -> tuple[dict[str, str], list[dict[str, str]]]:
    """A parent and their minor children (who have no email), loaded through the register."""
    parent = person_row(date_naissance="1980-03-03", **parent_overrides)
    kids = [
        person_row(date_naissance=f"201{index}-05-0{index + 1}", prenoms=f"Enfant{index} Test", email="",
                   nir_representant=parent["nir"])
        for index in range(children)
    ]
    load_people(engine, folder, [parent, *kids])
    return parent, kids


def fetch(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(text(sql), params))


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar_one()
