"""DMP extract intake: dmp.csv and documents.csv of one extract folder, checked and staged in one transaction.

Rows stream in chunks (never the whole file in memory), are typed in Python, appended to temporary
tables, checked again as a set (duplicates, documents of an unknown DMP), then upserted into
dmp_records and dmp_documents. Intake quarantines only what cannot be staged (a missing id, a
timestamp that is not a timestamp, a status INPUTS.md does not list); a row that breaks a migration
rule is staged as it is and held back by the migration with its reason. A file that cannot be read
changes nothing. Rows reconcile per file: read = accepted + quarantined. Content files are not read
here: the migration copies and verifies them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from mes_rollout import inputs
from mes_rollout.bulk import insert_rows
from mes_rollout.constants import DmpIntakeReason, DmpStatus, DocumentStatus, FileKind
from mes_rollout.contracts import DMP_COLUMNS, DOCUMENT_COLUMNS
from mes_rollout.csvfile import Row, chunks, file_sha256, read_rows
from mes_rollout.db import analyze, load_query
from mes_rollout.inputs import RowRejected
from mes_rollout.nir import normalise

log = logging.getLogger(__name__)

DMP_FILE = "dmp.csv"
DOCUMENTS_FILE = "documents.csv"
# Values without which a row cannot be staged. Empty type, class, confidentiality, hash or content
# path are staged and held back by the rule they break (UNKNOWN_TYPE_CODE, BAD_CONFIDENTIALITY...).
DMP_REQUIRED_VALUES = ("dmp_id", "nir", "created_at", "status")
DOCUMENT_REQUIRED_VALUES = ("entry_uuid", "unique_id", "dmp_id", "author_role", "mime_type", "size", "status")
STAGED_DMP = ("line_no", "dmp_id", "nir", "date_naissance", "sexe", "created_at", "status")
STAGED_DOCUMENT = ("line_no", *DOCUMENT_COLUMNS)
CHUNK_ROWS = 20_000

_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_SIZE = re.compile(r"^[0-9]{1,15}$")
_DMP_STATUSES = frozenset(status.value for status in DmpStatus)
_DOCUMENT_STATUSES = frozenset(status.value for status in DocumentStatus)


@dataclass
class FileCounts:
    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "quarantine_reasons": dict(sorted(self.reasons.items())),
        }


@dataclass
class DmpIntakeSummary:
    """What one extract load did, per file; rows reconcile: read = accepted + quarantined."""

    extract_dir: str
    dmp_file_id: int | None = None
    documents_file_id: int | None = None
    already_loaded: bool = False
    dmps: FileCounts = field(default_factory=FileCounts)
    documents: FileCounts = field(default_factory=FileCounts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "extract_dir": self.extract_dir,
            "already_loaded": self.already_loaded,
            "input_file_ids": {"dmp": self.dmp_file_id, "documents": self.documents_file_id},
            "dmp": self.dmps.as_dict(),
            "documents": self.documents.as_dict(),
        }


def parse_timestamp(value: str | None, column: str, *, required: bool) -> dt.datetime | None:
    """An ISO 8601 timestamp with its offset (INPUTS.md); a naive one is rejected."""
    if value is None or not value.strip():
        if required:
            raise RowRejected(DmpIntakeReason.MISSING_FIELD, f"empty required field: {column}")
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise RowRejected(DmpIntakeReason.BAD_TIMESTAMP, f"{column} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise RowRejected(DmpIntakeReason.BAD_TIMESTAMP, f"{column} has no offset")
    return parsed


def _missing(values: dict[str, str | None], required: tuple[str, ...]) -> None:
    missing = [column for column in required if not (values.get(column) or "").strip()]
    if missing:
        raise RowRejected(DmpIntakeReason.MISSING_FIELD, f"empty required field(s): {', '.join(missing)}")


def validate_dmp_row(values: dict[str, str | None]) -> dict[str, Any]:
    """The staged form of a dmp.csv row, or RowRejected."""
    _missing(values, DMP_REQUIRED_VALUES)
    status = (values["status"] or "").strip()
    if status not in _DMP_STATUSES:
        raise RowRejected(DmpIntakeReason.BAD_STATUS, "status is not active or closed")
    birth_text = (values.get("date_naissance") or "").strip()
    birth = None
    if birth_text:
        if not _DATE.match(birth_text):
            raise RowRejected(DmpIntakeReason.BAD_DATE, "date_naissance is not YYYY-MM-DD")
        try:
            birth = dt.date.fromisoformat(birth_text)
        except ValueError:
            raise RowRejected(DmpIntakeReason.BAD_DATE, "date_naissance is not a calendar date") from None
    sexe = (values.get("sexe") or "").strip().upper() or None
    return {
        "dmp_id": (values["dmp_id"] or "").strip(),
        "nir": normalise(values["nir"] or ""),
        "date_naissance": birth,
        "sexe": sexe,
        "created_at": parse_timestamp(values["created_at"], "created_at", required=True),
        "status": status,
    }


def validate_document_row(values: dict[str, str | None]) -> dict[str, Any]:
    """The staged form of a documents.csv row, or RowRejected. Values the migration judges are kept as written."""
    _missing(values, DOCUMENT_REQUIRED_VALUES)
    size_text = (values["size"] or "").strip()
    if not _SIZE.match(size_text):
        raise RowRejected(DmpIntakeReason.BAD_SIZE, "size is not a whole number of bytes")
    status = (values["status"] or "").strip()
    if status not in _DOCUMENT_STATUSES:
        raise RowRejected(DmpIntakeReason.BAD_STATUS, "status is not Approved, Deprecated, Archived or Deleted")
    return {
        "entry_uuid": (values["entry_uuid"] or "").strip(),
        "unique_id": (values["unique_id"] or "").strip(),
        "dmp_id": (values["dmp_id"] or "").strip(),
        "type_code": values.get("type_code") or "",
        "class_code": values.get("class_code") or "",
        "confidentiality": values.get("confidentiality") or "",
        "creation_time": parse_timestamp(values.get("creation_time"), "creation_time", required=False),
        "service_start_time": parse_timestamp(values.get("service_start_time"), "service_start_time", required=False),
        "author_role": (values["author_role"] or "").strip(),
        "mime_type": (values["mime_type"] or "").strip(),
        "size": int(size_text),
        "hash": (values.get("hash") or "").strip(),
        "status": status,
        "replaces": (values.get("replaces") or "").strip() or None,
        "content_path": values.get("content_path") or "",
        "title": values.get("title"),
    }


def _create_staging(connection: Connection) -> None:
    is_pg = connection.dialect.name == "postgresql"
    ts, date, big = ("TIMESTAMPTZ", "DATE", "BIGINT") if is_pg else ("TEXT", "TEXT", "INTEGER")
    connection.exec_driver_sql("DROP TABLE IF EXISTS dmp_records_staging")
    connection.exec_driver_sql("DROP TABLE IF EXISTS dmp_documents_staging")
    connection.exec_driver_sql(
        f"CREATE TEMP TABLE dmp_records_staging (line_no {big}, dmp_id TEXT, nir TEXT, date_naissance {date},"
        f" sexe TEXT, created_at {ts}, status TEXT)"
    )
    connection.exec_driver_sql(
        f"CREATE TEMP TABLE dmp_documents_staging (line_no {big}, entry_uuid TEXT, unique_id TEXT, dmp_id TEXT,"
        f" type_code TEXT, class_code TEXT, confidentiality TEXT, creation_time {ts}, service_start_time {ts},"
        f" author_role TEXT, mime_type TEXT, size {big}, hash TEXT, status TEXT, replaces TEXT,"
        f" content_path TEXT, title TEXT)"
    )


def _intake_file(
    connection: Connection,
    path: Path,
    columns: tuple[str, ...],
    validate: Any,
    staging: str,
    staged_columns: tuple[str, ...],
    kind: FileKind,
    input_file_id: int,
    counts: FileCounts,
) -> None:
    key_column = columns[0]
    for chunk in chunks(read_rows(path, columns), CHUNK_ROWS):
        staged: list[tuple[Any, ...]] = []
        rejected: list[inputs.Rejection] = []
        for row in chunk:
            try:
                values = validate(row.values)
            except RowRejected as rejection:
                rejected.append(_rejection(row, rejection.reason, str(rejection), key_column))
                continue
            values["line_no"] = row.line_no
            staged.append(tuple(values[name] for name in staged_columns))
        insert_rows(connection, staging, staged_columns, staged)
        inputs.quarantine(connection, input_file_id, kind, rejected)
        counts.read += len(chunk)
        counts.accepted += len(staged)
        counts.quarantined += len(rejected)
        counts.reasons.update(rejection.reason_code for rejection in rejected)


def _rejection(row: Row, reason: str, detail: str, key_column: str) -> inputs.Rejection:
    # The key of a DMP row is its dmp_id, of a document row its entry_uuid: never a NIR in detail.
    return inputs.Rejection(row.line_no, reason, detail, (row.values.get(key_column) or "").strip() or None)


def _set_rejections(
    connection: Connection, query: str, reason: DmpIntakeReason, detail: str, staging: str
) -> list[inputs.Rejection]:
    found = connection.execute(text(load_query(query))).all()
    if found:
        for start in range(0, len(found), 500):
            part = [int(line) for line, _ in found[start : start + 500]]
            marks = ", ".join(f":l{i}" for i in range(len(part)))
            connection.execute(
                text(f"DELETE FROM {staging} WHERE line_no IN ({marks})"),  # noqa: S608
                {f"l{i}": line for i, line in enumerate(part)},
            )
    return [inputs.Rejection(int(line), reason, detail, key) for line, key in found]


def load_dmp_extract(
    engine: Engine, extract_dir: Path, *, run_id: str | None = None, now: dt.datetime | None = None
) -> DmpIntakeSummary:
    """Stage one legacy DMP extract folder (dmp.csv, documents.csv); both files or nothing."""
    extract_dir = Path(extract_dir).resolve()
    dmp_path, documents_path = extract_dir / DMP_FILE, extract_dir / DOCUMENTS_FILE
    run_id = run_id or f"dmp-intake-{uuid.uuid4()}"
    now = now or dt.datetime.now(dt.UTC)
    summary = DmpIntakeSummary(str(extract_dir))
    dmp_sha = file_sha256(dmp_path) if dmp_path.is_file() else ""
    documents_sha = file_sha256(documents_path) if documents_path.is_file() else ""
    with engine.begin() as connection:
        earlier_dmp = inputs.previous_load(connection, FileKind.DMP, dmp_sha) if dmp_sha else None
        earlier_docs = inputs.previous_load(connection, FileKind.DMP_DOCUMENTS, documents_sha) if documents_sha else None
        if earlier_dmp is not None and earlier_docs is not None:
            return _summary_of_earlier_load(connection, summary, earlier_dmp, earlier_docs)
        summary.dmp_file_id = inputs.start(connection, FileKind.DMP, dmp_path, dmp_sha, run_id, now)
        summary.documents_file_id = inputs.start(
            connection, FileKind.DMP_DOCUMENTS, documents_path, documents_sha, run_id, now
        )
        _create_staging(connection)
        _intake_file(
            connection, dmp_path, DMP_COLUMNS, validate_dmp_row, "dmp_records_staging", STAGED_DMP,
            FileKind.DMP, summary.dmp_file_id, summary.dmps,
        )  # fmt: skip
        _intake_file(
            connection, documents_path, DOCUMENT_COLUMNS, validate_document_row, "dmp_documents_staging",
            STAGED_DOCUMENT, FileKind.DMP_DOCUMENTS, summary.documents_file_id, summary.documents,
        )  # fmt: skip
        _apply_set_rules(connection, summary)
        params = {"dmp_file_id": summary.dmp_file_id, "documents_file_id": summary.documents_file_id}
        connection.execute(text(load_query("dmp_merge_records.sql")), params)
        connection.execute(
            text(load_query("dmp_merge_documents.sql")), {**params, "extract_dir": str(extract_dir)}
        )
        connection.exec_driver_sql("DROP TABLE dmp_records_staging")
        connection.exec_driver_sql("DROP TABLE dmp_documents_staging")
        # Fresh statistics after a bulk load, so that the migration's joins are planned well.
        analyze(connection, "dmp_records", "dmp_documents", "quarantine")
        for file_id, counts in ((summary.dmp_file_id, summary.dmps), (summary.documents_file_id, summary.documents)):
            inputs.finish(
                connection, file_id, read=counts.read, accepted=counts.accepted, quarantined=counts.quarantined,
                warnings=0,
            )  # fmt: skip
    log.info(
        "DMP extract %s: dmp.csv read %d = staged %d + quarantined %d; documents.csv read %d = staged %d +"
        " quarantined %d",
        extract_dir.name,
        summary.dmps.read,
        summary.dmps.accepted,
        summary.dmps.quarantined,
        summary.documents.read,
        summary.documents.accepted,
        summary.documents.quarantined,
    )
    return summary


def _apply_set_rules(connection: Connection, summary: DmpIntakeSummary) -> None:
    """Rules over the whole files: duplicate ids (first line wins), documents of no known DMP."""
    assert summary.dmp_file_id is not None and summary.documents_file_id is not None
    connection.exec_driver_sql("CREATE INDEX ix_dmp_records_staging ON dmp_records_staging (dmp_id)")
    connection.exec_driver_sql("CREATE INDEX ix_dmp_documents_staging ON dmp_documents_staging (entry_uuid)")
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ANALYZE dmp_records_staging")
        connection.exec_driver_sql("ANALYZE dmp_documents_staging")
    for file_id, counts, kind, rejected in (
        (
            summary.dmp_file_id,
            summary.dmps,
            FileKind.DMP,
            _set_rejections(
                connection, "dmp_duplicate_records.sql", DmpIntakeReason.DUPLICATE_DMP,
                "dmp_id already on an earlier line of this file", "dmp_records_staging",
            ),  # fmt: skip
        ),
        (
            summary.documents_file_id,
            summary.documents,
            FileKind.DMP_DOCUMENTS,
            _set_rejections(
                connection, "dmp_duplicate_documents.sql", DmpIntakeReason.DUPLICATE_ENTRY,
                "entry_uuid already on an earlier line of this file", "dmp_documents_staging",
            )  # fmt: skip
            + _set_rejections(
                connection, "dmp_unknown_dmp_documents.sql", DmpIntakeReason.UNKNOWN_DMP,
                "no DMP row has this document's dmp_id", "dmp_documents_staging",
            ),  # fmt: skip
        ),
    ):
        inputs.quarantine(connection, file_id, kind, rejected)
        counts.quarantined += len(rejected)
        counts.accepted -= len(rejected)
        counts.reasons.update(rejection.reason_code for rejection in rejected)


def _summary_of_earlier_load(
    connection: Connection, summary: DmpIntakeSummary, dmp_file_id: int, documents_file_id: int
) -> DmpIntakeSummary:
    summary.already_loaded = True
    summary.dmp_file_id, summary.documents_file_id = dmp_file_id, documents_file_id
    for file_id, counts in ((dmp_file_id, summary.dmps), (documents_file_id, summary.documents)):
        earlier = inputs.earlier_load(connection, file_id)
        counts.read, counts.accepted, counts.quarantined = earlier.read, earlier.accepted, earlier.quarantined
        counts.reasons = earlier.reasons
    return summary
