"""Every intake fed random bytes and random CSV shapes (on SQLite): each run ends in time, either with an
InputFileError naming the file and nothing written, or with rows that reconcile (read = accepted +
quarantined, in its summary and in input_files, every quarantined row in the quarantine table)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from enrolment.decisions import load_decisions
from enrolment.register import load_register
from mes_rollout.config import load_settings
from mes_rollout.contracts import DMP_COLUMNS, DOCUMENT_COLUMNS, REGISTER_COLUMNS
from mes_rollout.csvfile import InputFileError
from mes_rollout.db import make_engine, upgrade
from migration.intake import load_dmp_extract
from notifications.feedback import load_feedback
from tests.factories import make_nir, person_row
from tests.mes_rollout.test_hostile_bytes import table_counts, within

TIME_LIMIT_SECONDS = 20.0
AS_OF = dt.date(2022, 1, 20)
DECISION_COLUMNS = ("reference", "nir", "event", "received_at", "channel")
FEEDBACK_COLUMNS = ("notification_id", "status", "occurred_at", "detail")


def _sample(columns: tuple[str, ...]) -> dict[str, str]:
    """A valid row of each file: the fuzz starts from it, so that some rows get past the header."""
    nir = make_nir()
    rows = {
        REGISTER_COLUMNS: person_row(),
        DECISION_COLUMNS: {"reference": "R1", "nir": nir, "event": "opposition",
                           "received_at": "2022-01-10T10:00:00+01:00", "channel": "web"},
        FEEDBACK_COLUMNS: {"notification_id": "N1", "status": "delivered",
                           "occurred_at": "2022-02-01T10:00:00+01:00", "detail": "250 OK"},
        DMP_COLUMNS: {"dmp_id": "DMP1", "nir": nir, "date_naissance": "1982-08-15", "sexe": "F",
                      "created_at": "2019-03-04T10:15:00+01:00", "status": "active"},
        DOCUMENT_COLUMNS: {"entry_uuid": "E1", "unique_id": "1.2.3", "dmp_id": "DMP1", "type_code": "11488-4",
                           "class_code": "10", "confidentiality": "N", "creation_time": "2019-03-04T10:15:00+01:00",
                           "service_start_time": "", "author_role": "PS", "mime_type": "application/pdf",
                           "size": "2048", "hash": "0" * 40, "status": "Approved", "replaces": "",
                           "content_path": "content/E1.pdf", "title": "Compte rendu"},
    }  # fmt: skip
    return dict(rows[columns])


# What a field can be: its sample value, nothing, text rich in what troubles a parser or a
# database, or a field longer than the csv module takes (131,072 characters).
_TROUBLE = st.text(alphabet=st.sampled_from(list('a1;,"\n\t éß😀\ufeff\u2028\\<>\'%-:')), max_size=12)
_CONTROL = st.text(alphabet=st.sampled_from(list("a\r\x00\x1b\x7f\x85")), min_size=1, max_size=3)
_FIELD = st.one_of(
    *[st.just("SAMPLE")] * 6, st.just(""), _TROUBLE, _TROUBLE, _CONTROL,
    st.sampled_from(["x" * 40, "é" * 200, "y" * 140_000]),
)


@st.composite
def csv_files(draw: st.DrawFn, columns: tuple[str, ...]) -> bytes:
    """A file of the intake's kind, damaged in a few random ways, or random bytes."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=300))
    header = list(columns)
    how = draw(st.sampled_from(["as is"] * 5 + ["shuffled"] * 3 + ["a column less", "a column more", "a column twice"]))
    if how == "shuffled":
        header = draw(st.permutations(header))
    elif how == "a column less":
        header.remove(draw(st.sampled_from(header)))
    elif how == "a column more":
        header.append(draw(st.sampled_from(["extra", "NIR", "nom naissance", ""])))
    elif how == "a column twice":
        header.append(draw(st.sampled_from(header)))
    separator = draw(st.sampled_from([";"] * 12 + [",", "\t", "|"]))
    terminator = draw(st.sampled_from(["\n"] * 6 + ["\r\n"] * 3 + ["\r"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL] * 4 + [csv.QUOTE_ALL, "raw"]))
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=separator, lineterminator=terminator, quoting=csv.QUOTE_MINIMAL)
    if quoting != "raw":
        writer = csv.writer(out, delimiter=separator, lineterminator=terminator, quoting=quoting)  # type: ignore[arg-type]
    writer.writerow(header)
    sample = _sample(columns)
    for _ in range(draw(st.integers(0, 6))):
        row = [sample.get(name, "x") for name in header]
        if draw(st.integers(0, 2)) == 0:  # a row with fields of every kind
            row = [value if (field := draw(_FIELD)) == "SAMPLE" else field for value in row]
        elif draw(st.booleans()) and row:  # a row with one field changed
            at = draw(st.integers(0, len(row) - 1))
            row[at] = draw(st.one_of(st.just(""), _TROUBLE))
        width = draw(st.sampled_from([len(row)] * 18 + [len(row) - 1, len(row) + 1]))
        row = (row + ["z"])[:width] if width > len(row) else row[:width]
        if quoting == "raw":
            out.write(separator.join(row) + terminator)
        else:
            writer.writerow(row)
    raw = out.getvalue().encode("utf-8")
    if draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw
    if draw(st.integers(0, 5)) == 0:  # truncated
        raw = raw[: draw(st.integers(0, len(raw)))]
    if draw(st.integers(0, 9)) == 0:  # a few stray bytes
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    return raw


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'mes.db'}")
    upgrade(engine)
    return engine


def _files_reconcile(engine: Engine, since_id: int) -> None:
    """Every input_files row written by the run reconciles, and its quarantined rows are there."""
    with engine.connect() as connection:
        files = connection.execute(
            text("SELECT id, rows_read, rows_accepted, rows_quarantined FROM input_files WHERE id > :id"),
            {"id": since_id},
        ).all()
        for file_id, read, accepted, quarantined in files:
            assert read == accepted + quarantined
            in_quarantine = connection.execute(
                text("SELECT COUNT(*) FROM quarantine WHERE input_file_id = :id"), {"id": file_id}
            ).scalar_one()
            assert in_quarantine == quarantined


def _last_file_id(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT COALESCE(MAX(id), 0) FROM input_files")).scalar_one())


def _run(engine: Engine, load: Callable[[], Any], files: list[Path]) -> None:
    """One intake run: an InputFileError naming one of its files and nothing written, or rows that
    reconcile."""
    before, last_id = table_counts(engine), _last_file_id(engine)
    try:
        summary = within(TIME_LIMIT_SECONDS, load)
    except InputFileError as error:
        assert error.path in {str(path) for path in files}
        assert str(error).startswith(error.path)
        assert table_counts(engine) == before
        event(f"the file failed: {error.problem[:25]}")
        return
    parts = [summary.dmps, summary.documents] if hasattr(summary, "dmps") else [summary]
    for part in parts:
        assert part.read == part.accepted + part.quarantined
    _files_reconcile(engine, last_id)
    event("rows quarantined" if any(part.quarantined for part in parts) else "loaded")


_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@_SETTINGS
@given(content=csv_files(REGISTER_COLUMNS))
def test_register_intake(sqlite_engine: Engine, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "register.csv"
    path.write_bytes(content)
    _run(sqlite_engine, lambda: load_register(sqlite_engine, path, as_of=AS_OF), [path])


@_SETTINGS
@given(content=csv_files(DECISION_COLUMNS))
def test_decisions_intake(sqlite_engine: Engine, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "decisions.csv"
    path.write_bytes(content)
    _run(sqlite_engine, lambda: load_decisions(sqlite_engine, path, as_of=AS_OF), [path])


@_SETTINGS
@given(content=csv_files(FEEDBACK_COLUMNS))
def test_feedback_intake(sqlite_engine: Engine, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "feedback.csv"
    path.write_bytes(content)
    window = load_settings().opt_out_window
    _run(
        sqlite_engine,
        lambda: load_feedback(sqlite_engine, path, window=window, as_of=dt.date(2022, 2, 7)),
        [path],
    )


@_SETTINGS
@given(dmp=csv_files(DMP_COLUMNS), documents=csv_files(DOCUMENT_COLUMNS))
def test_dmp_intake(sqlite_engine: Engine, tmp_path: Path, dmp: bytes, documents: bytes) -> None:
    folder = (tmp_path / "dmp").resolve()
    folder.mkdir(exist_ok=True)
    (folder / "dmp.csv").write_bytes(dmp)
    (folder / "documents.csv").write_bytes(documents)
    _run(sqlite_engine, lambda: load_dmp_extract(sqlite_engine, folder), [folder / "dmp.csv", folder / "documents.csv"])
