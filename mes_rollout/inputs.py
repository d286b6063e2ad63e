"""Bookkeeping of input files: one row per file read, and its quarantined rows."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, text

from mes_rollout import bulk
from mes_rollout.constants import FileKind
from mes_rollout.csvfile import file_sha256


class RowRejected(Exception):
    """One input row breaks a rule: it goes to quarantine with `reason`, a reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Rejection:
    line_no: int
    reason_code: str
    detail: str
    record_key: str | None = None


@dataclass(frozen=True)
class Load:
    """The input_files row of a load: a new one, or the earlier load of the same content."""

    input_file_id: int
    already_loaded: bool


@dataclass(frozen=True)
class EarlierLoad:
    """The counts an earlier load of a file recorded: what a re-load of the same content reports."""

    read: int
    accepted: int
    quarantined: int
    warnings: int
    reasons: Counter[str]


def earlier_load(connection: Connection, input_file_id: int) -> EarlierLoad:
    row = connection.execute(
        text("SELECT rows_read, rows_accepted, rows_quarantined, warnings FROM input_files WHERE id = :id"),
        {"id": input_file_id},
    ).one()
    reasons: Counter[str] = Counter()
    for reason, count in connection.execute(
        text("SELECT reason_code, COUNT(*) FROM quarantine WHERE input_file_id = :id GROUP BY reason_code"),
        {"id": input_file_id},
    ):
        reasons[reason] = int(count)
    return EarlierLoad(int(row[0]), int(row[1]), int(row[2]), int(row[3]), reasons)


def begin(
    connection: Connection,
    kind: FileKind,
    path: Path,
    run_id: str,
    now: dt.datetime,
    *,
    extracted_on: dt.date | None = None,
) -> Load:
    """Start loading a file, unless a file of the same content (SHA-256) was loaded before: the same
    input applied twice changes nothing the second time. A missing file is left to the reader,
    which names it. `extracted_on`: the day the extract was taken, where the file has one."""
    sha256 = file_sha256(path) if path.is_file() else ""
    earlier = previous_load(connection, kind, sha256) if sha256 else None
    if earlier is not None:
        return Load(earlier, already_loaded=True)
    return Load(start(connection, kind, path, sha256, run_id, now, extracted_on=extracted_on), already_loaded=False)


def previous_load(connection: Connection, kind: FileKind, sha256: str) -> int | None:
    """The id of an earlier complete load of a file with the same content, if any."""
    row = connection.execute(
        text("SELECT id FROM input_files WHERE kind = :kind AND sha256 = :sha ORDER BY id LIMIT 1"),
        {"kind": kind.value, "sha": sha256},
    ).first()
    return int(row[0]) if row else None


def start(
    connection: Connection,
    kind: FileKind,
    path: Path,
    sha256: str,
    run_id: str,
    now: dt.datetime,
    *,
    extracted_on: dt.date | None = None,
) -> int:
    row = connection.execute(
        text(
            "INSERT INTO input_files (kind, path, sha256, run_id, loaded_at, extracted_on)"
            " VALUES (:kind, :path, :sha, :run_id, :now, :extracted_on) RETURNING id"
        ),
        {"kind": kind.value, "path": str(path), "sha": sha256, "run_id": run_id, "now": now, "extracted_on": extracted_on},
    ).one()
    return int(row[0])


def quarantine(connection: Connection, input_file_id: int, kind: FileKind, rejections: Iterable[Rejection]) -> int:
    return bulk.insert_rows(
        connection,
        "quarantine",
        ("input_file_id", "file_kind", "line_no", "reason_code", "detail", "record_key"),
        [
            (input_file_id, kind.value, rejection.line_no, str(rejection.reason_code), rejection.detail, rejection.record_key)
            for rejection in rejections
        ],
    )


def finish(
    connection: Connection, input_file_id: int, *, read: int, accepted: int, quarantined: int, warnings: int
) -> None:
    if read != accepted + quarantined:
        raise AssertionError(f"input rows do not reconcile: read {read} != {accepted} + {quarantined}")
    connection.execute(
        text(
            "UPDATE input_files SET rows_read = :read, rows_accepted = :accepted,"
            " rows_quarantined = :quarantined, warnings = :warnings WHERE id = :id"
        ),
        {"read": read, "accepted": accepted, "quarantined": quarantined, "warnings": warnings, "id": input_file_id},
    )
