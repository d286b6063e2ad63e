"""DMP extract intake: rows staged or quarantined with a reason, reconciled, whole files or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from mes_rollout.csvfile import InputFileError
from migration.intake import load_dmp_extract
from tests.migration.factories import ExtractBuilder, a_person


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())  # noqa: S608


def test_intake_stages_rows_as_written_and_quarantines_what_cannot_be_staged(engine: Engine, tmp_path: Path) -> None:
    builder = ExtractBuilder(tmp_path / "dmp")
    person = a_person()
    dmp_id = builder.add_dmp(person)
    builder.add_dmp(person, dmp_id=dmp_id)  # the same DMP twice: the first line wins
    builder.add_dmp(person, created_at="2019-03-04 10:15")  # no offset
    builder.add_dmp(person, status="frozen")
    kept = builder.add_document(dmp_id, confidentiality="", type_code="XX-DOC", title="Résultat <b>VIH</b>")
    builder.add_document(dmp_id, entry_uuid=kept)  # the same entry twice
    builder.add_document(dmp_id, size="12kB")
    builder.add_document(dmp_id, creation_time="hier")
    builder.add_document(dmp_id, status="Removed")
    builder.add_document(dmp_id, unique_id="")
    builder.add_document("DMP-NOBODY")
    summary = load_dmp_extract(engine, builder.write())
    assert summary.dmps.as_dict() == {
        "read": 4, "accepted": 1, "quarantined": 3,
        "quarantine_reasons": {"BAD_STATUS": 1, "BAD_TIMESTAMP": 1, "DUPLICATE_DMP": 1},
    }  # fmt: skip
    assert summary.documents.as_dict() == {
        "read": 7, "accepted": 1, "quarantined": 6,
        "quarantine_reasons": {
            "BAD_SIZE": 1, "BAD_STATUS": 1, "BAD_TIMESTAMP": 1, "DUPLICATE_ENTRY": 1, "MISSING_FIELD": 1,
            "UNKNOWN_DMP": 1,
        },
    }  # fmt: skip
    with engine.connect() as connection:
        staged = connection.execute(
            text("SELECT confidentiality, type_code, title, extract_dir FROM dmp_documents WHERE entry_uuid = :e"),
            {"e": kept},
        ).one()
        assert tuple(staged) == ("", "XX-DOC", "Résultat <b>VIH</b>", str((tmp_path / "dmp").resolve()))
        keys = {row[0] for row in connection.execute(text("SELECT record_key FROM quarantine"))}
        assert person["nir"] not in keys  # quarantine keys are dmp_id / entry_uuid, never a NIR
        files = connection.execute(
            text("SELECT kind, rows_read, rows_accepted, rows_quarantined FROM input_files ORDER BY id")
        ).all()
    assert [tuple(row) for row in files] == [("dmp", 4, 1, 3), ("dmp_documents", 7, 1, 6)]


def test_the_same_extract_twice_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    builder = ExtractBuilder(tmp_path / "dmp")
    dmp_id = builder.add_dmp(a_person())
    builder.add_document(dmp_id)
    folder = builder.write()
    first = load_dmp_extract(engine, folder)
    again = load_dmp_extract(engine, folder)
    assert again.already_loaded and again.documents.accepted == first.documents.accepted == 1
    assert _count(engine, "input_files") == 2 and _count(engine, "dmp_documents") == 1


def test_a_later_extract_updates_what_an_earlier_said(engine: Engine, tmp_path: Path) -> None:
    person = a_person()
    first = ExtractBuilder(tmp_path / "one")
    dmp_id = first.add_dmp(person)
    entry = first.add_document(dmp_id, class_code="11")
    load_dmp_extract(engine, first.write())
    second = ExtractBuilder(tmp_path / "two")
    second.add_dmp(person, dmp_id=dmp_id)
    second.add_document(dmp_id, entry_uuid=entry, class_code="10")
    load_dmp_extract(engine, second.write())
    with engine.connect() as connection:
        assert connection.execute(text("SELECT class_code, extract_dir FROM dmp_documents")).one()[0] == "10"


@pytest.mark.parametrize(
    ("damage", "line"),
    [
        (lambda text_: text_.replace("entry_uuid;", "entry;", 1), 1),
        (lambda text_: text_ + "only;three;fields\n", 4),
        (lambda text_: text_ + '"open quote;\n', 4),
    ],
)
def test_an_unreadable_file_names_its_line_and_changes_nothing(
    engine: Engine, tmp_path: Path, damage: object, line: int
) -> None:
    builder = ExtractBuilder(tmp_path / "dmp")
    dmp_id = builder.add_dmp(a_person())
    builder.add_document(dmp_id)
    builder.add_document(dmp_id)
    folder = builder.write()
    documents = folder / "documents.csv"
    documents.write_text(damage(documents.read_text(encoding="utf-8")), encoding="utf-8")  # type: ignore[operator]
    with pytest.raises(InputFileError) as raised:
        load_dmp_extract(engine, folder)
    assert raised.value.line == line and "documents.csv" in str(raised.value)
    for table in ("input_files", "quarantine", "dmp_records", "dmp_documents"):
        assert _count(engine, table) == 0


def test_a_missing_file_fails_whole(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "dmp").mkdir()
    with pytest.raises(InputFileError):
        load_dmp_extract(engine, tmp_path / "dmp")
    assert _count(engine, "input_files") == 0
