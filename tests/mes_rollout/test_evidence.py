"""Evidence files: written once (same bytes accepted, other bytes refused), recorded with their
SHA-256 and provenance, and kept apart per database: a second database making the same run and
batch ids next to the first one never touches the first one's reports or print batches."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from mes_rollout import evidence
from mes_rollout.config import Settings, load_settings
from mes_rollout.db import make_engine, upgrade
from migration import run
from migration.intake import load_dmp_extract
from migration.store import open_store
from notifications.letters import print_letters
from tests.migration import factories as dmp
from tests.notifications import factories as letters

RUN_DAY = dt.date(2022, 3, 2)
PRINT_DAY = dt.date(2022, 1, 31)


def _write(engine: Engine, settings: Settings, path: Path, content: bytes, **extra: Any) -> evidence.EvidenceFile:
    with engine.begin() as connection:
        return evidence.write_once(
            path, content, kind=evidence.EvidenceKind.MIGRATION_REPORT_JSON, run_id="dmp-20220301-001",
            provenance={"origin": "test", **extra}, connection=connection, settings=settings,
        )  # fmt: skip


def test_a_file_is_written_once_recorded_and_never_overwritten(engine: Engine, settings_env: Path) -> None:
    settings = load_settings()
    path = settings.reports_dir / "r" / "report.json"
    old_umask = os.umask(0o022)
    try:
        first = _write(engine, settings, path, b'{"migrated": 268}')
    finally:
        os.umask(old_umask)

    assert first.written and path.read_bytes() == b'{"migrated": 268}'
    assert oct(stat.S_IMODE(path.stat().st_mode)) == "0o600"
    assert oct(stat.S_IMODE(path.parent.stat().st_mode)) == "0o700"
    again = _write(engine, settings, path, b'{"migrated": 268}')  # a re-run: the same bytes
    assert not again.written and again.sha256 == first.sha256
    with pytest.raises(evidence.EvidenceConflict, match="another SHA-256"):
        _write(engine, settings, path, b'{"migrated": 0}')
    assert path.read_bytes() == b'{"migrated": 268}'
    stranger = path.with_name("report.html")  # a file nobody recorded (written by another process)
    stranger.write_bytes(b"<p>migrated 268</p>")
    with pytest.raises(evidence.EvidenceConflict, match="not overwritten"):
        _write(engine, settings, stranger, b"<p>migrated 0</p>")
    assert stranger.read_bytes() == b"<p>migrated 268</p>"
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT path, kind, sha256, size, run_id, provenance FROM evidence_files")).all()
    assert [(row.path, row.kind, row.sha256, row.size, row.run_id) for row in rows] == [
        (str(path), "migration_report_json", "6234348d535f6595da4aaf8d58b5772e482857597c41c5783fa20d98ce697678", 17,
         "dmp-20220301-001"),
    ]
    provenance = rows[0].provenance
    assert (json.loads(provenance) if isinstance(provenance, str) else provenance) == {"origin": "test"}
    # Deleted, then other bytes offered in its place: the record says what was there; refused.
    path.unlink()
    with pytest.raises(evidence.EvidenceConflict, match="another SHA-256"):
        _write(engine, settings, path, b'{"migrated": 0}')
    assert not path.exists()
    assert [name for name in os.listdir(path.parent) if name.endswith(".tmp")] == []


def test_the_rollout_id_is_made_once_per_database(engine: Engine, tmp_path: Path) -> None:
    with engine.begin() as connection:
        first = evidence.rollout_id(connection)
    with engine.begin() as connection:
        assert evidence.rollout_id(connection) == first
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(other)
    with other.begin() as connection:
        assert evidence.rollout_id(connection) != first
    assert first.startswith("rollout-") and len(first) == len("rollout-") + 12


def test_the_database_url_is_recorded_without_its_password() -> None:
    public = evidence.public_database_url("postgresql+psycopg://mes:s3cret@db.example:5432/mes?sslpassword=x")
    assert public == "postgresql+psycopg://mes@db.example:5432/mes"
    assert evidence.public_database_url("sqlite:///var/mes-rollout.db") == "sqlite:///var/mes-rollout.db"


def one_rollout(engine: Engine, settings: Settings, folder: Path) -> dict[str, Any]:
    """A print batch (20220131-0001) and a migration run (dmp-20220302-001) on this database."""
    recipient = letters.adult(email="")
    letters.load_people(engine, folder, [recipient])
    wave = letters.create_wave(engine, settings.var_dir)
    letters.create_notification(engine, settings.var_dir, wave, recipient, channel="letter")
    printed = print_letters(engine, settings, logical_date=PRINT_DAY, run_id="print-1")
    person = dmp.a_person()
    dmp.load_people(engine, folder, [person], dt.date(2022, 1, 20))
    builder = dmp.ExtractBuilder(folder / "dmp")
    dmp_id = builder.add_dmp(person)
    for _ in range(3):
        builder.add_document(dmp_id)
    builder.add_document(dmp_id, type_code="XX-DOC")  # held back: a reason code in the report
    load_dmp_extract(engine, builder.write())
    dmp.insert_space(engine, person["nir"], dt.date(2022, 3, 1))
    migrated = run.migrate(engine, settings, open_store(settings), RUN_DAY, holdback_threshold=0.5)
    with engine.connect() as connection:
        batch = connection.execute(text("SELECT pdf_path, manifest_path, pdf_sha256 FROM print_batches")).one()
    return {"batches": printed.batches, "run_id": migrated["run_id"], "report": Path(migrated["report"]),
            "pdf": Path(batch.pdf_path), "manifest": Path(batch.manifest_path), "pdf_sha256": batch.pdf_sha256}  # fmt: skip


def _evidence_bytes(engine: Engine) -> dict[str, bytes]:
    with engine.connect() as connection:
        paths = connection.execute(text("SELECT path FROM evidence_files")).scalars().all()
    return {path: Path(path).read_bytes() for path in paths}


@pytest.mark.slow
def test_a_second_database_with_the_same_run_ids_cannot_overwrite_the_first_ones_evidence(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    shared = load_settings()  # one MES_VAR_DIR, reports and print folders for both databases
    first_settings = dataclasses.replace(shared, document_store_dir=tmp_path / "store-1")
    first = one_rollout(engine, first_settings, tmp_path / "first")
    kept = _evidence_bytes(engine)
    second_url = f"sqlite:///{tmp_path / 'second.db'}"
    second_engine = make_engine(second_url)
    upgrade(second_engine)
    second_settings = dataclasses.replace(shared, database_url=second_url, document_store_dir=tmp_path / "store-2")

    second = one_rollout(second_engine, second_settings, tmp_path / "second")

    # Same ids in both databases...
    assert first["batches"] == second["batches"] == ["20220131-0001"]
    assert first["run_id"] == second["run_id"] == "dmp-20220302-001"
    with engine.begin() as connection:
        first_rollout = evidence.rollout_id(connection)
    with second_engine.begin() as connection:
        second_rollout = evidence.rollout_id(connection)
    assert first_rollout != second_rollout
    # ...side by side, each under its own rollout's folder...
    for found, rollout in ((first, first_rollout), (second, second_rollout)):
        assert found["report"] == shared.reports_dir / rollout / "migration" / "dmp-20220302-001" / "report.json"
        assert found["pdf"] == shared.print_dir / rollout / "20220131-0001" / "20220131-0001.pdf"
        assert found["report"].with_name("report.html").is_file() and found["manifest"].is_file()
        assert (found["report"].parent / "data_docs" / "committed" / "index.html").is_file()
    assert first["pdf"].read_bytes() != second["pdf"].read_bytes()  # different people: would have collided
    # ...and the first database's files are byte for byte what it recorded.
    assert kept and _evidence_bytes(engine) == kept
    assert len([path for path in kept if path.endswith(".pdf")]) == 1
    assert evidence.sha256_of(first["pdf"]) == first["pdf_sha256"]
    for each_engine in (engine, second_engine):
        with each_engine.connect() as connection:
            checked = evidence.verify(connection)
        assert checked.ok and checked.checked == checked.intact > 10  # reports, Data Docs, print files
    # Each report names its own database (no password) and the inputs it was made from.
    first_report = json.loads(first["report"].read_text(encoding="utf-8"))
    second_report = json.loads(second["report"].read_text(encoding="utf-8"))
    assert second_report["provenance"]["database"] == second_url
    assert first_report["provenance"]["database"] == evidence.public_database_url(str(shared.database_url))
    assert first_report["provenance"]["rollout_id"] == first_rollout
    assert {item["kind"] for item in second_report["provenance"]["inputs"]} == {"register", "dmp", "dmp_documents"}
    assert all(len(item["sha256"]) == 64 for item in second_report["provenance"]["inputs"])
    second_engine.dispose()
