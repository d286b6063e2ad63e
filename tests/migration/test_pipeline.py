"""A migration run end to end on small extracts: who is migrated, what arrives, what a re-run does."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from sqlalchemy import Engine, text

from migration.intake import load_dmp_extract
from migration.store import FolderStore
from tests.migration.factories import (
    ExtractBuilder,
    a_person,
    decide_and_commit,
    insert_space,
    load_people,
    outcomes,
)

LOADED = dt.date(2022, 1, 20)
CREATED = dt.date(2022, 3, 1)
RUN = dt.date(2022, 3, 2)


def test_only_active_spaces_are_migrated_and_only_once(engine: Engine, tmp_path: Path) -> None:
    active, opposed, closed, later = a_person(), a_person(), a_person(), a_person()
    load_people(engine, tmp_path, [active, opposed, closed, later], LOADED)
    builder = ExtractBuilder(tmp_path / "dmp")
    documents = {}
    for person in (active, opposed, closed, later):
        documents[person["nir"]] = builder.add_document(builder.add_dmp(person))
    load_dmp_extract(engine, builder.write())
    insert_space(engine, active["nir"], CREATED)
    insert_space(engine, closed["nir"], CREATED, state="closed")
    insert_space(engine, later["nir"], RUN + dt.timedelta(days=1))  # created after the run's date
    # The opposed person has no space at all.
    store = FolderStore(tmp_path / "store")
    decide_and_commit(engine, store, RUN)
    assert set(outcomes(engine)) == {documents[active["nir"]]}
    second = decide_and_commit(engine, store, RUN)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT dmps FROM migration_runs WHERE run_id = :r"), {"r": second}).scalar() == 0
        assert connection.execute(text("SELECT COUNT(*) FROM migrated_documents")).scalar() == 1
    decide_and_commit(engine, store, RUN + dt.timedelta(days=1))
    assert set(outcomes(engine)) == {documents[active["nir"]], documents[later["nir"]]}


def test_chains_confidentiality_and_content_arrive_as_the_rules_say(engine: Engine, tmp_path: Path) -> None:
    person = a_person()
    load_people(engine, tmp_path, [person], LOADED)
    builder = ExtractBuilder(tmp_path / "dmp")
    dmp_id = builder.add_dmp(person)
    v1 = builder.add_document(dmp_id, status="Deprecated")
    v2 = builder.add_document(dmp_id, replaces=v1, status="Deprecated")
    v3 = builder.add_document(dmp_id, replaces=v2)
    c1 = builder.add_document(dmp_id)
    c2 = builder.add_document(dmp_id, replaces=c1)
    builder.documents[-2]["replaces"] = c2  # c1 replaces c2 replaces c1: a cycle
    hidden = builder.add_document(dmp_id, confidentiality="N|INVISIBLE_PATIENT")
    masked = builder.add_document(dmp_id, confidentiality="MASQUE_PS|R|INVISIBLE_REPRESENTANTS_LEGAUX")
    altered = builder.add_document(dmp_id)
    folder = builder.write()
    path = folder / builder.documents[-1]["content_path"]
    content = bytearray(path.read_bytes())
    content[100] ^= 0x01  # one byte altered, same size
    path.write_bytes(bytes(content))
    load_dmp_extract(engine, folder)
    insert_space(engine, person["nir"], CREATED)
    store = FolderStore(tmp_path / "store")
    decide_and_commit(engine, store, RUN)

    decided = outcomes(engine)
    assert decided[v1] == decided[v2] == ("migrated", None, "superseded")
    assert decided[v3] == ("migrated", None, "current")
    assert decided[c1] == decided[c2] == ("held_back", "CHAIN_CYCLE", None)
    assert decided[altered] == ("held_back", "HASH_MISMATCH", None)
    with engine.connect() as connection:
        migrated = {
            row[0]: row[1:]
            for row in connection.execute(
                text("SELECT entry_uuid, confidentiality, chain_head, replaces, store_key, title FROM migrated_documents")
            )
        }
    assert set(migrated) == {v1, v2, v3, hidden, masked}
    assert migrated[hidden][0] == "N|INVISIBLE_PATIENT"
    assert migrated[masked][0] == "MASQUE_PS|R|INVISIBLE_REPRESENTANTS_LEGAUX"  # exactly as written
    assert {migrated[uuid][1] for uuid in (v1, v2, v3)} == {v3}
    assert (migrated[v2][2], migrated[v3][2]) == (v1, v2)
    for entry_uuid, (_, _, _, key, _) in migrated.items():
        source = next(row for row in builder.documents if row["entry_uuid"] == entry_uuid)
        stored = store.path_of(key).read_bytes()
        assert hashlib.sha1(stored).hexdigest() == source["hash"] and len(stored) == int(source["size"])
    assert hashlib.sha256(bytes(content)).hexdigest() not in store.keys()  # the altered bytes were not kept
    with engine.connect() as connection:
        audited: dict[str, str | None] = dict(
            connection.execute(
                text("SELECT entity_id, reason FROM audit_trail WHERE entity = 'dmp_document'")
            ).all()
        )
        transitions = [
            row[0]
            for row in connection.execute(
                text("SELECT to_state FROM audit_trail WHERE entity = 'migration_run' AND action = 'state_change' ORDER BY id")
            )
        ]
    assert audited == {uuid: reason for uuid, (_, reason, _) in decided.items()}  # each decision, once, with why
    assert transitions == ["classified", "committing", "committed", "succeeded"]  # after "planned"
