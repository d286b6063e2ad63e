"""A synthetic approved wave written straight into the tables, for the benchmarks and the crash test.

It fills what the enrolment side's planning leaves behind (persons, an approved wave, planned
enrolments, created notifications with their members) at bulk speed; one in ten messages goes
to a parent and also tells a child. NIRs are valid, names and addresses are made up.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, text

from enrolment.codes import code_hash, provisional_code, wave_key
from enrolment.references import free_references
from mes_rollout.constants import EnrolmentState, FileKind, NotificationStatus, WaveState
from mes_rollout.nir import with_key

_FIRST_NAMES = ("Camille", "Léa", "Hugo", "Zoé", "Jérôme", "Anaïs", "Noé", "Maëlys", "François", "Chloé")
_NAMES = ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau")
_STREETS = ("rue des Lilas", "avenue Jean Jaurès", "chemin de la Fontaine", "place de l'Église", "impasse du Moulin")
_BATCH = 5_000


def _nir(index: int, child: bool) -> str:
    # Sex 1/2, born 1960-1999 (children 2010-2019), in Ain (01053), order numbers 001-999.
    sex = 1 + index % 2
    year = (10 + index % 10) if child else (60 + index % 40)
    month = 1 + index % 12
    commune = 1 + (index // 999) % 999
    number13 = f"{sex}{year:02d}{month:02d}01{commune:03d}{1 + index % 999:03d}"
    return with_key(number13)


def synthetic_wave(
    engine: Engine,
    var_dir: Path,
    count: int,
    *,
    channel: str = "email",
    send_date: dt.date = dt.date(2022, 1, 31),
    shard_size: int = 10_000,
    wave_id: str | None = None,
) -> str:
    """An approved wave of `count` messages of one channel, all 'created'; returns its id."""
    wave_id = wave_id or f"BENCH-{uuid.uuid4().hex[:8]}"
    now = dt.datetime.now(dt.UTC)
    key = wave_key(var_dir, wave_id, create=True)
    with engine.begin() as connection:
        file_id = connection.execute(
            text(
                "INSERT INTO input_files (kind, path, sha256, run_id, loaded_at)"
                " VALUES (:kind, 'synthetic', :sha, 'synthetic', :now) RETURNING id"
            ),
            {"kind": FileKind.REGISTER.value, "sha": uuid.uuid4().hex, "now": now},
        ).scalar_one()
        connection.execute(
            text(
                "INSERT INTO waves (wave_id, departements, send_date, state, created_at, updated_at)"
                " VALUES (:id, '01', :send_date, :approved, :now, :now)"
            ),
            {"id": wave_id, "send_date": send_date, "approved": WaveState.APPROVED.value, "now": now},
        )
        for batch in _batches(count, wave_id, channel, shard_size, key, file_id, now):
            references = free_references(connection, [str(row["notification_id"]) for row in batch["notifications"]])
            for row in batch["notifications"]:
                row["reference"] = references[str(row["notification_id"])]
            for table, rows in batch.items():
                columns = list(rows[0])
                connection.execute(
                    text(
                        f"INSERT INTO {table} ({', '.join(columns)})"  # noqa: S608 - fixed table names
                        f" VALUES ({', '.join(':' + column for column in columns)})"
                    ),
                    rows,
                )
    return wave_id


def _batches(
    count: int, wave_id: str, channel: str, shard_size: int, key: bytes, file_id: int, now: dt.datetime
) -> Iterator[dict[str, list[dict[str, object]]]]:
    taken: set[str] = set()
    serial = 0
    for start in range(0, count, _BATCH):
        batch: dict[str, list[dict[str, object]]] = {
            "persons": [], "notifications": [], "notification_members": [], "enrolments": [],
        }
        for index in range(start, min(count, start + _BATCH)):
            notification_id = str(uuid.UUID(int=uuid.uuid5(uuid.NAMESPACE_URL, f"{wave_id}/{index}").int))
            people = []
            for child in (False, True) if index % 10 == 0 else (False,):
                while True:
                    serial += 1
                    nir = _nir(serial, child)
                    if nir not in taken:
                        taken.add(nir)
                        break
                people.append((nir, child))
            recipient = people[0][0]
            for nir, child in people:
                batch["persons"].append(
                    {
                        "nir": nir,
                        "nom_naissance": _NAMES[serial % len(_NAMES)],
                        "prenom": _FIRST_NAMES[(serial + int(child)) % len(_FIRST_NAMES)],
                        "prenoms": _FIRST_NAMES[(serial + int(child)) % len(_FIRST_NAMES)],
                        "date_naissance": dt.date(2015 if child else 1980, 1 + serial % 12, 1 + serial % 28),
                        "sexe": "M" if nir[0] == "1" else "F",
                        "email": None if child else f"personne.{index}@example.fr",
                        "adresse_ligne4": f"{1 + index % 120} {_STREETS[index % len(_STREETS)]}",
                        "code_postal": "01000",
                        "commune": "Bourg-en-Bresse",
                        "departement": "01",
                        "nir_representant": recipient if child else None,
                        "input_file_id": file_id,
                        "updated_at": now,
                    }
                )
                batch["notification_members"].append({"notification_id": notification_id, "nir": nir})
                batch["enrolments"].append(
                    {
                        "nir": nir,
                        "wave_id": wave_id,
                        "state": EnrolmentState.PLANNED.value,
                        "recipient_nir": recipient,
                        "code_hash": code_hash(nir, provisional_code(key, nir)),
                        "updated_at": now,
                    }
                )
            batch["notifications"].append(
                {
                    "notification_id": notification_id,
                    "wave_id": wave_id,
                    "recipient_nir": recipient,
                    "channel": channel,
                    "status": NotificationStatus.CREATED.value,
                    "shard": index // shard_size,
                    "email": f"personne.{index}@example.fr" if channel == "email" else None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        # Parents before children (the representative must exist), notifications before members.
        yield {
            "persons": batch["persons"],
            "notifications": batch["notifications"],
            "notification_members": batch["notification_members"],
            "enrolments": batch["enrolments"],
        }
