"""Register intake: validate a register extract row by row, then upsert it into persons by NIR.

One file is one transaction: rows are checked in Python as they stream in (chunks, never the
whole file in memory), staged, checked again as a set (duplicates in the file, representatives
who must be known and alive), then merged. A file that cannot be read changes nothing. Each load
carries the date its extract was taken (the file has no column for it): a person's row is only
ever replaced by a row of an extract as new or newer, so an extract delivered late cannot undo a
newer one.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import Connection, Engine, text

from enrolment.register_columns import nir_numbers, sure_rows
from enrolment.register_fields import DEPARTEMENTS, EMAIL, OPTIONAL, PERSON_COLUMNS, REQUIRED, STAGED_COLUMNS
from mes_rollout import bulk, fastload, inputs
from mes_rollout.arrowcsv import bool_array, int64_array, read_batches, string_array
from mes_rollout.constants import FileKind, RegisterReason, RegisterWarning
from mes_rollout.contracts import REGISTER_COLUMNS
from mes_rollout.csvfile import check_bytes
from mes_rollout.db import analyze, as_date, load_query
from mes_rollout.inputs import RowRejected
from mes_rollout.nir import Nir, NirError, normalise
from mes_rollout.postal_address import PostalAddress

log = logging.getLogger(__name__)

_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_INSEE_PLACE = re.compile(r"^(?:[0-9]{5}|2[AB][0-9]{3})$")
_SEX_DIGIT = {"1": "M", "2": "F"}


@dataclass
class IntakeSummary:
    """What one register load did; rows reconcile: read = accepted + quarantined."""

    path: str
    input_file_id: int | None
    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    warnings: int = 0
    inserted_or_updated: int = 0
    # Rows of known people whose row comes from a newer extract: not applied (not an error).
    older_than_held: int = 0
    extracted_on: dt.date | None = None
    already_loaded: bool = False
    reasons: Counter[str] = field(default_factory=Counter)
    warning_codes: Counter[str] = field(default_factory=Counter)
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "input_file_id": self.input_file_id,
            "already_loaded": self.already_loaded,
            "extracted_on": self.extracted_on.isoformat() if self.extracted_on else None,
            "rows": {"read": self.read, "accepted": self.accepted, "quarantined": self.quarantined},
            "changed_persons": self.inserted_or_updated,
            "older_than_held": self.older_than_held,
            "quarantine_reasons": dict(sorted(self.reasons.items())),
            "warnings": dict(sorted(self.warning_codes.items())),
            "phase_seconds": {name: round(seconds, 2) for name, seconds in self.phase_seconds.items()},
        }


def _collapse(value: str | None) -> str | None:
    # Names are data: markup and quotes are kept as they are; only whitespace is normalised.
    if value is None:
        return None
    collapsed = " ".join(value.split())
    return collapsed or None


def _date(value: str, column: str) -> dt.date:
    if not _DATE.match(value):
        raise RowRejected(RegisterReason.BAD_DATE, f"{column} {value!r} is not YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise RowRejected(RegisterReason.BAD_DATE, f"{column} {value!r} is not a calendar date") from None


def _parse_nir(raw: str, reason_if_bad: RegisterReason | None = None) -> str:
    try:
        return Nir.parse(raw).value
    except NirError as error:
        reason = reason_if_bad or RegisterReason(error.reason)
        raise RowRejected(reason, str(error)) from None


def validate_row(values: dict[str, str | None], as_of: dt.date) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The cleaned person of one register row and its warnings, or RowRejected with a reason."""
    missing = [column for column in REQUIRED if not (values.get(column) or "").strip()]
    if missing:
        raise RowRejected(RegisterReason.MISSING_FIELD, f"empty required field(s): {', '.join(missing)}")
    nir = _parse_nir(values["nir"] or "")
    birth = _date((values["date_naissance"] or "").strip(), "date_naissance")
    if birth > as_of:
        raise RowRejected(RegisterReason.BIRTH_IN_FUTURE, f"date_naissance is after {as_of.isoformat()}")
    death_text = (values.get("date_deces") or "").strip()
    death = _date(death_text, "date_deces") if death_text else None
    if death is not None and death < birth:
        raise RowRejected(RegisterReason.DEATH_BEFORE_BIRTH, "date_deces is before date_naissance")
    if death is not None and death > as_of:
        raise RowRejected(RegisterReason.BAD_DATE, f"date_deces is after {as_of.isoformat()}")
    sexe = (values["sexe"] or "").strip().upper()
    if sexe not in ("M", "F"):
        raise RowRejected(RegisterReason.BAD_SEX, f"sexe {sexe!r} is not M or F")
    departement = (values["departement"] or "").strip().upper()
    if departement not in DEPARTEMENTS:
        raise RowRejected(RegisterReason.BAD_DEPARTEMENT, f"departement {departement!r} does not exist")
    nir_sex = _SEX_DIGIT.get(nir[0])
    if nir_sex is not None and nir_sex != sexe:
        raise RowRejected(RegisterReason.NIR_MISMATCH, "the NIR's sex digit disagrees with sexe")
    if nir[0] in _SEX_DIGIT and nir[1:3] != f"{birth.year % 100:02d}":
        raise RowRejected(RegisterReason.NIR_MISMATCH, "the NIR's birth year disagrees with date_naissance")
    nir_month = int(nir[3:5])
    if nir[0] in _SEX_DIGIT and nir_month <= 12 and nir_month != birth.month:
        raise RowRejected(RegisterReason.NIR_MISMATCH, "the NIR's birth month disagrees with date_naissance")
    lieu = _collapse(values.get("lieu_naissance"))
    if lieu is not None:
        lieu = lieu.upper()
        if not _INSEE_PLACE.match(lieu):
            raise RowRejected(RegisterReason.BAD_BIRTH_PLACE, f"lieu_naissance {lieu!r} is not an INSEE code")
    representative_raw = values.get("nir_representant")
    representative = None
    if representative_raw and representative_raw.strip():
        representative = _parse_nir(representative_raw, RegisterReason.BAD_REPRESENTATIVE_NIR)
        if representative == nir:
            raise RowRejected(RegisterReason.SELF_REPRESENTATIVE, "a person cannot be their own representative")

    warnings: list[tuple[str, str]] = []
    email = (values.get("email") or "").strip() or None
    if email is not None and not EMAIL.match(email):
        warnings.append((RegisterWarning.EMAIL_INVALID, "email dropped: not a valid address"))
        email = None
    address = PostalAddress.from_register(
        values.get("adresse_ligne2"),
        values.get("adresse_ligne3"),
        values.get("adresse_ligne4"),
        values.get("adresse_ligne5"),
        values.get("code_postal"),
        values.get("commune"),
    )
    has_any_address = bool(address.postcode_clean or _collapse(address.locality) or address.body_lines)
    address_problem = None
    if not has_any_address:
        address_problem = "no postal address"
    elif address.problems:
        address_problem = "; ".join(address.problems)
        warnings.append((RegisterWarning.ADDRESS_INVALID, f"address kept, not printable: {address_problem}"))
    prenoms = _collapse(values["prenoms"]) or ""
    person = {
        "nir": nir,
        "nom_naissance": _collapse(values["nom_naissance"]),
        "nom_usage": _collapse(values.get("nom_usage")),
        "prenom": prenoms.split(" ")[0],
        "prenoms": prenoms,
        "date_naissance": birth,
        "sexe": sexe,
        "lieu_naissance": lieu,
        "email": email,
        "adresse_ligne2": _collapse(values.get("adresse_ligne2")),
        "adresse_ligne3": _collapse(values.get("adresse_ligne3")),
        "adresse_ligne4": _collapse(values.get("adresse_ligne4")),
        "adresse_ligne5": _collapse(values.get("adresse_ligne5")),
        "code_postal": address.postcode_clean or None,
        "commune": _collapse(values.get("commune")),
        "address_problem": address_problem,
        "departement": departement,
        "nir_representant": representative,
        "date_deces": death,
    }
    return person, warnings


# The register_keys staging table: what the rules over the whole file need, and whether the row
# went straight into persons (first load) or waits in register_staging.
KEY_COLUMNS = ("line_no", "nir", "nir_representant", "date_deces", "direct")
# A row written straight into persons: the person, then its provenance.
DIRECT_COLUMNS = (*PERSON_COLUMNS, "input_file_id", "register_extracted_on", "updated_at")
REJECTED_COLUMNS = ("line_no", "nir", "direct")
# Columns of the staging tables that are not TEXT.
_STAGING_TYPES = {"line_no": "BIGINT", "direct": "BOOLEAN", "date_naissance": "DATE", "date_deces": "DATE"}


def _create_staging(connection: Connection, table: str, columns: tuple[str, ...]) -> None:
    fastload.create_staging(connection, table, columns, _STAGING_TYPES)


def _drop_keys(connection: Connection, rejected: list[tuple[int, str]]) -> list[tuple[int, str, bool]]:
    """Rejected (line, NIR) out of register_keys; returns them as (line, NIR, went straight into
    persons). They go through the scratch table register_drop (which then holds them, for the
    representatives rule), joined by hashing on PostgreSQL (one pass over the keys costs less than
    indexing them), through the line index on SQLite."""
    connection.exec_driver_sql("DELETE FROM register_drop")
    bulk.insert_rows(connection, "register_drop", ("line_no", "nir"), rejected)
    result = connection.exec_driver_sql(
        "DELETE FROM register_keys WHERE line_no IN (SELECT line_no FROM register_drop) RETURNING line_no, nir, direct"
    )
    return [(int(line), str(nir), bool(direct)) for line, nir, direct in result]


def _set_based_rejections(
    connection: Connection, first_load: bool
) -> tuple[list[inputs.Rejection], list[tuple[int, str, bool]]]:
    """Rows rejected by rules over the whole file (duplicate NIRs, representatives), and the
    rejected rows as _drop_keys gives them."""
    # PostgreSQL joins by hashing, cheaper than building indexes; SQLite only joins through indexes
    # (built once the rows are in: cheaper than maintaining them during the bulk insert).
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ANALYZE register_keys")
    else:
        connection.exec_driver_sql("CREATE INDEX ix_register_keys_nir ON register_keys (nir)")
        connection.exec_driver_sql("CREATE INDEX ix_register_keys_line ON register_keys (line_no)")
    _create_staging(connection, "register_drop", ("line_no", "nir"))
    rejected: list[inputs.Rejection] = []
    duplicates = connection.execute(text(load_query("register_duplicates.sql"))).all()
    rejected += [
        inputs.Rejection(line, RegisterReason.DUPLICATE_IN_FILE, "NIR already on an earlier line of this file", nir)
        for line, nir in duplicates
    ]
    dropped = _drop_keys(connection, [(line, nir) for line, nir in duplicates])
    # A representative may be rejected in turn, which orphans the people they represent: after the
    # first pass over everyone, only the wards of the people just rejected are looked at again.
    everyone = load_query("register_representatives.sql")
    if first_load:
        everyone = everyone.replace(
            "/*register*/persons", "(SELECT CAST(NULL AS TEXT) AS nir, CAST(NULL AS DATE) AS date_deces WHERE FALSE)"
        )
    wards_of_dropped = everyone.replace("/*wards*/", "AND s.nir_representant IN (SELECT nir FROM register_drop)")
    orphans = connection.execute(text(everyone)).all()
    while orphans:
        rejected += [
            inputs.Rejection(
                line,
                reason,
                "legal representative not in the register"
                if reason == RegisterReason.UNKNOWN_REPRESENTATIVE
                else "legal representative is deceased",
                nir,
            )
            for line, nir, reason in orphans
        ]
        dropped += _drop_keys(connection, [(line, nir) for line, nir, _ in orphans])
        orphans = connection.execute(text(wards_of_dropped)).all()
    connection.exec_driver_sql("DROP TABLE register_drop")
    return rejected, dropped


def load_register(
    engine: Engine,
    path: Path,
    *,
    as_of: dt.date,
    extracted_on: dt.date | None = None,
    run_id: str | None = None,
    now: dt.datetime | None = None,
) -> IntakeSummary:
    """Load one register extract; the whole file or nothing. `as_of` is the run's logical date,
    `extracted_on` the day the extract was taken (default `as_of`; not after it). A known person's
    row is replaced only by a row of an extract as new as, or newer than, the one it comes from.

    The file streams in batches of Arrow columns. Rows `sure_rows` vouches for are staged as they
    are; the others go through `validate_row`, which quarantines or warns. On a first load (persons
    empty) a checked row goes straight into persons, unless its NIR may have come before in the
    file; every other accepted row waits in a staging table. The keys of every accepted row (NIR,
    representative, death) go to a table of their own, on PostgreSQL on a second connection, where
    the rules over the whole file run as SQL (duplicate NIRs, representatives) while the first
    builds persons' keys and indexes (first load). Then the rows the rules reject leave, and the
    staged rows reach persons: inserted on a first load, upserted by NIR on later loads."""
    path = Path(path)
    given = extracted_on or as_of
    extracted_on = dt.date(given.year, given.month, given.day)  # a plain date, even from a pendulum one
    if extracted_on > as_of:
        raise ValueError(f"the extract date {extracted_on.isoformat()} is after the day of the load {as_of.isoformat()}")
    check_bytes(path)  # before any connection: a file with a forbidden byte fails as a whole
    run_id = run_id or f"register-{uuid.uuid4()}"
    now = now or dt.datetime.now(dt.UTC)
    with fastload.FastLoad(engine) as load:
        connection, keys_connection = load.connection, load.side_connection
        begun = inputs.begin(connection, FileKind.REGISTER, path, run_id, now, extracted_on=extracted_on)
        if begun.already_loaded:
            return _summary_of_earlier_load(connection, path, begun.input_file_id)
        input_file_id = begun.input_file_id
        summary = IntakeSummary(str(path), input_file_id, extracted_on=extracted_on)
        started = time.perf_counter()
        header, batches = read_batches(path, REQUIRED, OPTIONAL, bytes_checked=True)
        first_load = fastload.is_first_load(connection, "persons")
        rebuild = fastload.make_room(connection, "persons") if first_load else None
        _create_staging(keys_connection, "register_keys", KEY_COLUMNS)
        _create_staging(connection, "register_staging", STAGED_COLUMNS)
        provenance = [input_file_id, extracted_on.isoformat(), now.isoformat(" ")]
        stream = _Stream(load, summary, as_of, header, first_load, provenance)
        with fastload.collector_paused():
            for lines, table in batches:
                stream.take(lines, table)
        stream.close()
        summary.phase_seconds["read_validate_stage"] = time.perf_counter() - started
        started = time.perf_counter()
        # On PostgreSQL, persons' keys and indexes are built while the rules run on the other
        # connection; rows that will leave it (rejected by the rules) are unique by NIR, and
        # staged rows come in afterwards: building first is safe.
        rejected, dropped = load.beside(rebuild, lambda: _set_based_rejections(keys_connection, first_load))
        keys_connection.exec_driver_sql("DROP TABLE register_keys")
        summary.phase_seconds["file_rules_and_indexes"] = time.perf_counter() - started
        started = time.perf_counter()
        inputs.quarantine(connection, input_file_id, FileKind.REGISTER, rejected)
        summary.quarantined += len(rejected)
        summary.accepted -= len(rejected)
        summary.reasons.update(rejection.reason_code for rejection in rejected)
        _create_staging(connection, "register_rejected", REJECTED_COLUMNS)
        bulk.insert_rows(connection, "register_rejected", REJECTED_COLUMNS, dropped)
        connection.exec_driver_sql(
            "DELETE FROM register_staging WHERE line_no IN (SELECT line_no FROM register_rejected)"
        )
        if first_load:
            connection.exec_driver_sql(
                "DELETE FROM persons WHERE nir IN (SELECT nir FROM register_rejected WHERE direct)"
            )
            summary.inserted_or_updated = stream.direct - sum(direct for _, _, direct in dropped)
            summary.inserted_or_updated += _insert_staged(connection, input_file_id, extracted_on, now)
        else:
            _merge(connection, summary, run_id, input_file_id, extracted_on, now)
        summary.phase_seconds["merge"] = time.perf_counter() - started
        for table in ("register_staging", "register_rejected"):
            connection.exec_driver_sql(f"DROP TABLE {table}")
        inputs.finish(
            connection,
            input_file_id,
            read=summary.read,
            accepted=summary.accepted,
            quarantined=summary.quarantined,
            warnings=summary.warnings,
        )
        # Statistics committed with the rows: the next stage (a wave's cohort) plans from them.
        analyze(connection, "persons", "quarantine", "input_warnings")
    log.info(
        "register %s: read %d = accepted %d + quarantined %d (%d warnings)",
        path.name,
        summary.read,
        summary.accepted,
        summary.quarantined,
        summary.warnings,
    )
    return summary


def _insert_staged(connection: Connection, input_file_id: int, extracted_on: dt.date, now: dt.datetime) -> int:
    """First load: the staged rows that passed the rules are new people."""
    columns = ", ".join(PERSON_COLUMNS)
    result = connection.execute(
        text(
            f"INSERT INTO persons ({columns}, input_file_id, register_extracted_on, updated_at)"  # noqa: S608
            f" SELECT {columns}, :input_file_id, :extracted_on, :now FROM register_staging"
        ),
        {"input_file_id": input_file_id, "extracted_on": extracted_on, "now": now},
    )
    return max(result.rowcount, 0)


def _merge(
    connection: Connection,
    summary: IntakeSummary,
    run_id: str,
    input_file_id: int,
    extracted_on: dt.date,
    now: dt.datetime,
) -> None:
    """Upsert by NIR from the staging table; deaths recorded for the first time are audited. An
    extract older than the one some person's row comes from (rare: delivered late) has its rows
    for those people counted and left out, all but their death dates."""
    connection.execute(
        text(load_query("register_deaths.sql")), {"now": now, "run_id": run_id, "input_file_id": input_file_id}
    )
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ANALYZE register_staging")  # a million rows: a join by hashing
    dates = {"extracted_on": extracted_on, "now": now}
    # Every person's extract date is one of a register load's: when none is newer than this one,
    # nobody's row comes from a newer extract, and the statements about them are not run.
    newest_other = as_date(
        connection.execute(
            text("SELECT MAX(extracted_on) FROM input_files WHERE kind = :kind AND id <> :id"),
            {"kind": FileKind.REGISTER.value, "id": input_file_id},
        ).scalar()
    )
    older = newest_other is not None and newest_other > extracted_on
    if older:
        summary.older_than_held = int(connection.execute(text(load_query("register_older_than_held.sql")), dates).scalar_one())
    result = connection.execute(text(load_query("register_merge.sql")), {**dates, "input_file_id": input_file_id})
    summary.inserted_or_updated = max(result.rowcount, 0)
    if older:
        deaths = connection.execute(text(load_query("register_older_deaths.sql")), dates)
        summary.inserted_or_updated += max(deaths.rowcount, 0)


class _SeenNirs:
    """Which NIRs of the file may have come before (a Bloom filter of their numbers): on a first
    load, at most one row per NIR goes straight into persons, and the rule on duplicates can take
    it out again by NIR."""

    def __init__(self, bits: int = 27) -> None:
        self.keys = fastload.SeenKeys(bits)

    def first_sightings(self, nirs: pa.Array) -> np.ndarray:
        """For each NIR (valid ones), whether it surely appears for the first time, in the file so
        far and earlier in this batch; records them all as seen."""
        if len(nirs) == 0:
            return np.zeros(0, bool)
        return self.keys.first_sightings(nir_numbers(nirs)[0])


def _iso(value: Any) -> str | None:
    return None if value is None else value if value.__class__ is str else value.isoformat()


class _Stream:
    """The rows of a file as its batches come: checked, counted, and sent where they wait for the
    rules over the whole file. Quarantined rows and warnings wait in memory (at most FLUSH_ROWS of
    them) and go in between batches."""

    FLUSH_ROWS = 50_000

    def __init__(
        self,
        load: fastload.FastLoad,
        summary: IntakeSummary,
        as_of: dt.date,
        header: list[str],
        first_load: bool,
        provenance: list[Any],
    ) -> None:
        assert summary.input_file_id is not None
        self.summary = summary
        self.input_file_id = summary.input_file_id
        self.as_of = as_of
        self.header = header
        self.seen = _SeenNirs() if first_load else None
        self.provenance = provenance
        self.writer = load.writer(load.connection)
        self.keys_writer = load.writer(load.side_connection) if load.side_connection is not load.connection else self.writer
        # Rows for register_staging: on a first load they are few, and each switch between persons
        # and register_staging ends a COPY and waits for the server.
        self.staging = fastload.Spool(self.writer, "register_staging", STAGED_COLUMNS, self.FLUSH_ROWS)
        self.direct = 0
        self.rejected: list[inputs.Rejection] = []
        self.warnings: list[dict[str, Any]] = []

    def take(self, lines: np.ndarray, table: pa.Table) -> None:
        summary = self.summary
        summary.read += len(lines)
        sure, staged = sure_rows(_in_contract_order(table, self.header), self.as_of)
        sure_mask = sure.to_numpy(zero_copy_only=False)
        staged = staged.add_column(0, "line_no", int64_array(lines[sure_mask]))
        direct = self.seen.first_sightings(staged.column("nir")) if self.seen is not None else np.zeros(len(staged), bool)
        if direct.any():
            rows = staged.filter(bool_array(direct)).drop_columns(["line_no"])
            count = len(rows)
            input_file_id, extracted_on, updated_at = self.provenance
            rows = rows.append_column("input_file_id", int64_array(np.full(count, input_file_id)))
            rows = rows.append_column("register_extracted_on", fastload.repeated(extracted_on, count))
            rows = rows.append_column("updated_at", fastload.repeated(updated_at, count))
            self.writer.rows("persons", DIRECT_COLUMNS, rows)
            self.direct += count
        if not direct.all():
            self.staging.add(staged.filter(bool_array(~direct)))
        self._send_keys(staged, direct)
        summary.accepted += len(staged)
        unsure = np.flatnonzero(~sure_mask)
        if unsure.size:
            self._validate(lines[unsure], table.take(int64_array(unsure)))
        if len(self.rejected) + len(self.warnings) >= self.FLUSH_ROWS:
            self._flush_pending()

    def _validate(self, lines: np.ndarray, table: pa.Table) -> None:
        """Rows the column check was not sure of, one by one through `validate_row`."""
        summary = self.summary
        columns = [table.column(name).to_pylist() for name in self.header]
        staged: list[list[Any]] = []
        before_rejected, before_warnings = len(self.rejected), len(self.warnings)
        for line_no, fields in zip(lines.tolist(), zip(*columns, strict=True), strict=True):
            values: dict[str, str | None] = dict(zip(self.header, fields, strict=True))
            try:
                person, row_warnings = validate_row(values, self.as_of)
            except RowRejected as rejection:
                key = normalise(values.get("nir") or "") or None
                self.rejected.append(inputs.Rejection(line_no, rejection.reason, str(rejection), key))
                continue
            staged.append([line_no, *[_iso(person[name]) for name in PERSON_COLUMNS]])
            for code, detail in row_warnings:
                self.warnings.append(
                    {"file_id": self.input_file_id, "line": line_no, "code": code, "detail": detail, "key": person["nir"]}
                )
        if staged:
            rows = pa.table(
                [
                    int64_array(np.array(values, np.int64)) if i == 0 else string_array(values)
                    for i, values in enumerate(zip(*staged, strict=True))
                ],
                names=list(STAGED_COLUMNS),
            )
            self.staging.add(rows)
            self._send_keys(rows, np.zeros(len(rows), bool))
        summary.accepted += len(staged)
        summary.quarantined += len(self.rejected) - before_rejected
        summary.warnings += len(self.warnings) - before_warnings
        summary.reasons.update(rejection.reason_code for rejection in self.rejected[before_rejected:])
        summary.warning_codes.update(warning["code"] for warning in self.warnings[before_warnings:])

    def _send_keys(self, staged: pa.Table, direct: np.ndarray) -> None:
        """register_keys rows of staged rows (STAGED_COLUMNS), with whether each went straight in."""
        keys = staged.select(list(KEY_COLUMNS[:-1])).append_column("direct", bool_array(direct))
        self.keys_writer.rows("register_keys", KEY_COLUMNS, keys)

    def _flush_pending(self) -> None:
        rejected, warnings = self.rejected, self.warnings
        self.rejected, self.warnings = [], []
        input_file_id = self.input_file_id

        def write(connection: Connection) -> None:
            inputs.quarantine(connection, input_file_id, FileKind.REGISTER, rejected)
            if warnings:
                connection.execute(
                    text(
                        "INSERT INTO input_warnings (input_file_id, line_no, warning_code, detail, record_key)"
                        " VALUES (:file_id, :line, :code, :detail, :key)"
                    ),
                    warnings,
                )

        self.writer.call(write)

    def close(self) -> None:
        """Everything taken is in the database (a writer's failure is raised here; the load
        stops every writer)."""
        self.staging.flush()
        self._flush_pending()
        self.writer.close()
        self.keys_writer.close()


def _in_contract_order(table: pa.Table, header: list[str]) -> pa.Table:
    """The batch with the contract's columns in the contract's order ("" for an optional column the
    file does not have)."""
    if header == list(REGISTER_COLUMNS):
        return table
    empty = fastload.repeated("", len(table))
    return pa.table(
        [table.column(name) if name in header else empty for name in REGISTER_COLUMNS], names=list(REGISTER_COLUMNS)
    )


def _summary_of_earlier_load(connection: Connection, path: Path, input_file_id: int) -> IntakeSummary:
    """The same content loaded again changes nothing, whatever extract date it is given now: the
    counts and the extract date of its first load."""
    earlier = inputs.earlier_load(connection, input_file_id)
    extracted_on = connection.execute(
        text("SELECT extracted_on FROM input_files WHERE id = :id"), {"id": input_file_id}
    ).scalar()
    return IntakeSummary(
        str(path), input_file_id, earlier.read, earlier.accepted, earlier.quarantined, earlier.warnings,
        extracted_on=as_date(extracted_on), already_loaded=True, reasons=earlier.reasons,
    )
