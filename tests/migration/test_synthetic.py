"""A synthetic extract with every fault kind (`synth --dirty`): each document lands in the bucket its
rule says, with its reason; what is migrated arrives exactly; the run reconciles and is reported."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from console.synth import generate
from console.synth.faults import DMP_FAULTS
from enrolment.register import load_register
from mes_rollout.config import load_settings
from mes_rollout.constants import HoldBackReason, SkipReason
from migration.intake import load_dmp_extract
from migration.pipeline import QualityGateStopped
from migration.run import migrate
from migration.store import FolderStore, open_store
from tests.migration.factories import insert_space, outcomes

CREATED = dt.date(2022, 3, 1)
RUN = dt.date(2022, 3, 2)
SKIP_CODES = {reason.value for reason in SkipReason}


def _prepare(engine: Engine, folder: Path, *, persons: int, dirty: float, seed: int) -> dict[str, str]:
    """Generate, load the register and the extract, give every living person a space; returns the
    expected code of each faulty document (faults.csv, documents.csv rows, key = entry_uuid)."""
    generate(persons, seed, folder, dirty=dirty)
    load_register(engine, folder / "register.csv", as_of=dt.date(2022, 1, 20))
    with engine.connect() as connection:
        living = [row[0] for row in connection.execute(text("SELECT nir FROM persons WHERE date_deces IS NULL"))]
    for nir in living:
        insert_space(engine, nir, CREATED)
    load_dmp_extract(engine, folder / "dmp")
    with (folder / "faults.csv").open(encoding="utf-8", newline="") as stream:
        return {row["key"]: row["expected"] for row in csv.DictReader(stream, delimiter=";") if row["file"] == "documents.csv"}


def _in_scope(engine: Engine) -> dict[str, str]:
    """entry_uuid -> source confidentiality of every staged document whose person has an active space."""
    with engine.connect() as connection:
        return {
            row[0]: row[1]
            for row in connection.execute(
                text(
                    "SELECT d.entry_uuid, d.confidentiality FROM dmp_documents d"
                    " JOIN dmp_records r ON r.dmp_id = d.dmp_id JOIN spaces s ON s.nir = r.nir"
                    " WHERE s.state = 'active'"
                )
            )
        }


@pytest.mark.slow
def test_every_document_lands_in_the_bucket_its_rule_says(engine: Engine, settings_env: Path, tmp_path: Path) -> None:
    expected = _prepare(engine, tmp_path / "synth", persons=1000, dirty=0.02, seed=11)
    settings = load_settings()
    store = open_store(settings)
    assert isinstance(store, FolderStore)
    summary = migrate(engine, settings, store, RUN, holdback_threshold=1.0)

    scope = _in_scope(engine)
    decided = outcomes(engine)
    assert set(decided) == set(scope)  # every source document of the run has exactly one outcome
    planted = {uuid: code for uuid, code in expected.items() if uuid in scope}
    assert {code for code in planted.values()} >= set(DMP_FAULTS) | SKIP_CODES  # every kind is exercised
    wrong = {}
    for entry_uuid, (outcome, reason, _role) in decided.items():
        code = planted.get(entry_uuid)
        want = ("migrated", None) if code is None else ("skipped" if code in SKIP_CODES else "held_back", code)
        if (outcome, reason) != want:
            wrong[entry_uuid] = {"got": (outcome, reason), "want": want}
    assert wrong == {}
    assert all(reason in set(HoldBackReason) | SKIP_CODES for _, reason, _ in decided.values() if reason)

    with engine.connect() as connection:
        migrated = connection.execute(
            text(
                "SELECT m.entry_uuid, m.confidentiality, m.store_key, m.sha1, m.size, m.chain_head, m.version_role"
                " FROM migrated_documents m"
            )
        ).all()
        per_dmp = connection.execute(
            text(
                "SELECT m.dmp_id, m.documents, m.migrated + m.held_back + m.skipped,"
                " (SELECT COUNT(*) FROM dmp_documents d WHERE d.dmp_id = m.dmp_id) FROM dmp_migrations m"
            )
        ).all()
    # Confidentiality exactly as the source wrote it; hidden and masked documents among them.
    assert all(row.confidentiality == scope[row.entry_uuid] for row in migrated)
    carried = Counter(code for row in migrated for code in row.confidentiality.split("|"))
    assert carried["INVISIBLE_PATIENT"] > 0 and carried["MASQUE_PS"] > 0
    # Content stored under its SHA-256, matching the DMP's SHA-1 and size.
    for row in migrated:
        content = store.path_of(row.store_key).read_bytes()
        assert hashlib.sha256(content).hexdigest() == row.store_key
        assert hashlib.sha1(content).hexdigest() == row.sha1 and len(content) == row.size
    # Chains arrive whole: one current version per chain, the head of each being that version.
    heads = Counter(row.chain_head for row in migrated)
    currents = {row.entry_uuid for row in migrated if row.version_role == "current"}
    assert set(heads) == currents and max(heads.values()) >= 2
    # Reconciliation per DMP and in total.
    assert per_dmp and all(documents == accounted == source for _, documents, accounted, source in per_dmp)

    report = json.loads(Path(summary["report"]).read_text(encoding="utf-8"))
    assert report["run"]["state"] == "succeeded"
    assert report["documents"]["source"] == len(scope) == sum(report["documents"][k] for k in ("migrated", "held_back", "skipped"))
    assert report["validation"]["committed"]["passed"] and report["validation"]["decisions"]["passed"]
    assert (Path(summary["report"]).parent / report["data_docs"]).is_file()


@pytest.mark.slow
def test_five_percent_faulty_documents_stop_the_run_before_anything_is_committed(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    _prepare(engine, tmp_path / "synth", persons=1000, dirty=0.05, seed=5)
    settings = load_settings()
    store = open_store(settings)
    with pytest.raises(QualityGateStopped) as stopped:
        migrate(engine, settings, store, RUN)
    assert "above the threshold 1.00%" in str(stopped.value)
    with engine.connect() as connection:
        for table in ("dmp_document_outcomes", "migrated_documents", "dmp_migrations"):
            assert connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() == 0  # noqa: S608
        run_id, state, reason, report_path = connection.execute(
            text("SELECT run_id, state, stop_reason, report_path FROM migration_runs")
        ).one()
    assert state == "stopped" and "hold-back rate" in reason
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    assert report["quality_gate"]["passed"] is False and report["documents"]["committed"] == 0
    held = report["reasons"]["held_back"]
    assert {"HASH_MISMATCH", "CHAIN_CYCLE", "IDENTITY_MISMATCH", "BAD_CONFIDENTIALITY"} <= set(held)
    assert report["quality_gate"]["holdback_rate"] > 0.05
    html = (Path(report_path).parent / "report.html").read_text(encoding="utf-8")
    assert "dépassé : l'exécution est arrêtée, rien n'est appliqué" in html and "HASH_MISMATCH" in html and run_id in html
    # The DMPs stay pending: a later run with a threshold the operator accepts migrates them.
    summary = migrate(engine, settings, store, RUN, holdback_threshold=0.5)
    assert summary["run_id"] != run_id
    with engine.connect() as connection:
        assert (connection.execute(text("SELECT COUNT(*) FROM migrated_documents")).scalar() or 0) > 0
