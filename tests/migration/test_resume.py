"""A migration run killed midway (SIGKILL, in a subprocess) and run again: it resumes where it stopped,
the counts reconcile, nothing is there twice, and no half-written content is visible as a document."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from console.synth import generate
from mes_rollout.config import PROJECT_ROOT, load_settings
from migration.intake import load_dmp_extract
from migration.run import migrate
from migration.store import FolderStore, open_store
from tests.migration.factories import insert_space

RUN = dt.date(2022, 3, 2)
MIGRATE_IN_A_PROCESS = """
import datetime as dt
from mes_rollout.config import load_settings
from mes_rollout.db import get_engine
from migration.run import migrate
from migration.store import open_store
settings = load_settings()
migrate(get_engine(), settings, open_store(settings), dt.date(2022, 3, 2), holdback_threshold=1.0)
"""


def _scalar(engine: Engine, sql: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(sql)).scalar() or 0)


def _progress(engine: Engine, state: str) -> tuple[int, int]:
    """`_batches` for the polling loop. On SQLite every transaction of the engine starts with BEGIN
    IMMEDIATE (the write lock), so a poller through it queues behind the migration's commits and may
    only see the run once it is over; a plain autocommit reader does not wait (WAL)."""
    if engine.dialect.name != "sqlite":
        return _batches(engine, state) if _scalar(engine, "SELECT COUNT(*) FROM migration_runs") else (0, 0)
    reader = sqlite3.connect(str(engine.url.database), isolation_level=None, timeout=60)
    try:
        row = reader.execute(
            "SELECT SUM(CASE WHEN state = ? THEN 1 ELSE 0 END), COUNT(*) FROM migration_batches", (state,)
        ).fetchone()
    except sqlite3.OperationalError:  # the run has not created its tables' rows yet
        return 0, 0
    finally:
        reader.close()
    return int(row[0] or 0), int(row[1] or 0)


def _batches(engine: Engine, state: str) -> tuple[int, int]:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT SUM(CASE WHEN state = :s THEN 1 ELSE 0 END), COUNT(*) FROM migration_batches"), {"s": state}
        ).one()
    return int(row[0] or 0), int(row[1] or 0)


@pytest.mark.slow
@pytest.mark.parametrize("killed_while", ["classified", "committed"])
def test_a_killed_run_resumes_and_reconciles(
    engine: Engine, settings_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed_while: str
) -> None:
    generate(1500, 21, tmp_path / "synth", dirty=0.0)
    from enrolment.register import load_register

    load_register(engine, tmp_path / "synth" / "register.csv", as_of=dt.date(2022, 1, 20))
    with engine.connect() as connection:
        living = [row[0] for row in connection.execute(text("SELECT nir FROM persons WHERE date_deces IS NULL"))]
    for nir in living:
        insert_space(engine, nir, dt.date(2022, 3, 1))
    load_dmp_extract(engine, tmp_path / "synth" / "dmp")
    source = _scalar(
        engine,
        "SELECT COUNT(*) FROM dmp_documents d JOIN dmp_records r ON r.dmp_id = d.dmp_id"
        " JOIN spaces s ON s.nir = r.nir WHERE s.state = 'active'",
    )

    monkeypatch.setenv("MES_MIGRATION_BATCH_PERSONS", "1")  # many small batches: a kill lands midway
    process = subprocess.Popen([sys.executable, "-c", MIGRATE_IN_A_PROCESS], cwd=PROJECT_ROOT, env=dict(os.environ))
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            done, total = _progress(engine, killed_while)
            if done >= 3:
                break
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    done, total = _batches(engine, killed_while)
    assert 3 <= done < total, f"the kill did not land midway ({done} of {total} batches {killed_while})"

    settings = load_settings()
    store = open_store(settings)
    assert isinstance(store, FolderStore)
    summary = migrate(engine, settings, store, RUN, holdback_threshold=1.0)

    with engine.connect() as connection:
        runs = connection.execute(text("SELECT run_id, state FROM migration_runs")).all()
        assert [tuple(run) for run in runs] == [(summary["run_id"], "succeeded")]  # resumed, not started anew
        counts = connection.execute(
            text("SELECT COUNT(*), SUM(documents), SUM(migrated + held_back + skipped) FROM dmp_migrations")
        ).one()
        assert counts[1] == counts[2] == source
        assert connection.execute(text("SELECT COUNT(*) FROM dmp_document_outcomes")).scalar() == source
        twice = connection.execute(
            text(
                "SELECT entity_id FROM audit_trail WHERE entity = 'dmp_document'"
                " GROUP BY entity_id HAVING COUNT(*) > 1"
            )
        ).all()
        assert twice == []
        assert connection.execute(
            text("SELECT COUNT(*) - COUNT(DISTINCT nir || '/' || unique_id) FROM migrated_documents")
        ).scalar() == 0
        keys = [row[0] for row in connection.execute(text("SELECT store_key FROM migrated_documents"))]
    assert keys
    for key in keys:
        assert hashlib.sha256(store.path_of(key).read_bytes()).hexdigest() == key
    # Every file visible as a document is whole: named by the hash of what it holds.
    for path in store.root.rglob("*"):
        if path.is_file() and ".tmp" not in path.parts:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def test_a_run_interrupted_after_commit_is_validated_and_reported_on_the_next_run(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    from tests.migration.factories import ExtractBuilder, a_person, decide_and_commit, load_people

    person = a_person()
    load_people(engine, tmp_path, [person], dt.date(2022, 1, 20))
    builder = ExtractBuilder(tmp_path / "dmp")
    dmp_id = builder.add_dmp(person)
    builder.add_document(dmp_id)
    load_dmp_extract(engine, builder.write())
    insert_space(engine, person["nir"], dt.date(2022, 3, 1))
    settings = load_settings()
    store = open_store(settings)
    run_id = decide_and_commit(engine, store, RUN, finish=False)  # the process died before validating
    summary = migrate(engine, settings, store, RUN + dt.timedelta(days=1))
    assert summary["run_id"] == run_id
    with engine.connect() as connection:
        assert connection.execute(text("SELECT state FROM migration_runs")).scalar_one() == "succeeded"
        assert connection.execute(text("SELECT COUNT(*) FROM dmp_document_outcomes")).scalar_one() == 1
