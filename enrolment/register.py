"""Register intake: validate a register extract row by row, then upsert it into persons by NIR.

One file is one transaction: rows are checked in Python as they stream in (chunks, never the
whole file in memory), staged, checked again as a set (duplicates in the file, representatives
who must be known and alive), then merged. A file that cannot be read changes nothing.
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

from sqlalchemy import Connection, Engine, text

from enrolment.nir import Nir, NirError, normalise
from mes_rollout import inputs
from mes_rollout.constants import FileKind, RegisterReason, RegisterWarning
from mes_rollout.contracts import REGISTER_COLUMNS
from mes_rollout.csvfile import Row, chunks, read_rows
from mes_rollout.db import load_query
from mes_rollout.inputs import RowRejected
from notifications.postal_address import PostalAddress

log = logging.getLogger(__name__)

REQUIRED = ("nir", "nom_naissance", "prenoms", "date_naissance", "sexe", "departement")
OPTIONAL = tuple(column for column in REGISTER_COLUMNS if column not in REQUIRED)
STAGED_COLUMNS = (
    "line_no",
    "nir",
    "nom_naissance",
    "nom_usage",
    "prenom",
    "prenoms",
    "date_naissance",
    "sexe",
    "lieu_naissance",
    "email",
    "adresse_ligne2",
    "adresse_ligne3",
    "adresse_ligne4",
    "adresse_ligne5",
    "code_postal",
    "commune",
    "address_problem",
    "departement",
    "nir_representant",
    "date_deces",
)
CHUNK_ROWS = 20_000

_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_INSEE_PLACE = re.compile(r"^(?:[0-9]{5}|2[AB][0-9]{3})$")
DEPARTEMENTS = frozenset(
    [f"{n:02d}" for n in range(1, 20)] + [f"{n:02d}" for n in range(21, 96)] + ["2A", "2B"]
    + [str(n) for n in range(971, 977)]
)
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
    already_loaded: bool = False
    reasons: Counter[str] = field(default_factory=Counter)
    warning_codes: Counter[str] = field(default_factory=Counter)
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "input_file_id": self.input_file_id,
            "already_loaded": self.already_loaded,
            "rows": {"read": self.read, "accepted": self.accepted, "quarantined": self.quarantined},
            "changed_persons": self.inserted_or_updated,
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
    if email is not None and not _EMAIL.match(email):
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


def _create_staging(connection: Connection) -> None:
    connection.exec_driver_sql("DROP TABLE IF EXISTS register_staging")
    date_type = "DATE" if connection.dialect.name == "postgresql" else "TEXT"
    columns = ", ".join(
        f"{name} {'BIGINT' if name == 'line_no' else date_type if name.startswith('date_') else 'TEXT'}"
        for name in STAGED_COLUMNS
    )
    connection.exec_driver_sql(f"CREATE TEMP TABLE register_staging ({columns})")


def _stage(connection: Connection, people: list[dict[str, Any]]) -> None:
    if not people:
        return
    if connection.dialect.name == "postgresql":
        # COPY is PostgreSQL's bulk path; it runs inside the same transaction as the rest.
        raw = connection.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor:  # type: ignore[attr-defined]
            with cursor.copy(f"COPY register_staging ({', '.join(STAGED_COLUMNS)}) FROM STDIN") as copy:
                for person in people:
                    copy.write_row([person[name] for name in STAGED_COLUMNS])
        return
    placeholders = ", ".join(f":{name}" for name in STAGED_COLUMNS)
    connection.execute(
        text(f"INSERT INTO register_staging ({', '.join(STAGED_COLUMNS)}) VALUES ({placeholders})"),  # noqa: S608
        people,
    )


def _drop_staged(connection: Connection, lines: list[int]) -> None:
    for start in range(0, len(lines), 500):
        part = lines[start : start + 500]
        marks = ", ".join(f":l{i}" for i in range(len(part)))
        connection.execute(
            text(f"DELETE FROM register_staging WHERE line_no IN ({marks})"),  # noqa: S608
            {f"l{i}": line for i, line in enumerate(part)},
        )


def _set_based_rejections(connection: Connection) -> list[inputs.Rejection]:
    """Rows rejected by rules over the whole file: duplicate NIRs, representatives."""
    # Indexed once the rows are in (cheaper than maintaining them during the bulk insert).
    connection.exec_driver_sql("CREATE INDEX ix_register_staging_nir ON register_staging (nir)")
    connection.exec_driver_sql("CREATE INDEX ix_register_staging_line ON register_staging (line_no)")
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ANALYZE register_staging")
    rejected: list[inputs.Rejection] = []
    duplicates = connection.execute(text(load_query("register_duplicates.sql"))).all()
    rejected += [
        inputs.Rejection(line, RegisterReason.DUPLICATE_IN_FILE, "NIR already on an earlier line of this file", nir)
        for line, nir in duplicates
    ]
    _drop_staged(connection, [line for line, _ in duplicates])
    # A representative may be rejected in turn, which orphans the people they represent.
    while True:
        orphans = connection.execute(text(load_query("register_representatives.sql"))).all()
        if not orphans:
            return rejected
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
        _drop_staged(connection, [line for line, _, _ in orphans])


def load_register(
    engine: Engine, path: Path, *, as_of: dt.date, run_id: str | None = None, now: dt.datetime | None = None
) -> IntakeSummary:
    """Load one register extract; the whole file or nothing. `as_of` is the run's logical date."""
    path = Path(path)
    run_id = run_id or f"register-{uuid.uuid4()}"
    now = now or dt.datetime.now(dt.UTC)
    with engine.begin() as connection:
        load = inputs.begin(connection, FileKind.REGISTER, path, run_id, now)
        if load.already_loaded:
            return _summary_of_earlier_load(connection, path, load.input_file_id)
        input_file_id = load.input_file_id
        summary = IntakeSummary(str(path), input_file_id)
        _create_staging(connection)
        started = time.perf_counter()
        for chunk in chunks(read_rows(path, REQUIRED, OPTIONAL), CHUNK_ROWS):
            _intake_chunk(connection, chunk, summary, as_of)
        summary.phase_seconds["read_validate_stage"] = time.perf_counter() - started
        started = time.perf_counter()
        rejected = _set_based_rejections(connection)
        summary.phase_seconds["file_rules"] = time.perf_counter() - started
        started = time.perf_counter()
        inputs.quarantine(connection, input_file_id, FileKind.REGISTER, rejected)
        summary.quarantined += len(rejected)
        summary.accepted -= len(rejected)
        summary.reasons.update(rejection.reason_code for rejection in rejected)
        connection.execute(
            text(load_query("register_deaths.sql")), {"now": now, "run_id": run_id, "input_file_id": input_file_id}
        )
        result = connection.execute(text(load_query("register_merge.sql")), {"input_file_id": input_file_id, "now": now})
        summary.inserted_or_updated = max(result.rowcount, 0)
        summary.phase_seconds["merge"] = time.perf_counter() - started
        connection.exec_driver_sql("DROP TABLE register_staging")
        inputs.finish(
            connection,
            input_file_id,
            read=summary.read,
            accepted=summary.accepted,
            quarantined=summary.quarantined,
            warnings=summary.warnings,
        )
    log.info(
        "register %s: read %d = accepted %d + quarantined %d (%d warnings)",
        path.name,
        summary.read,
        summary.accepted,
        summary.quarantined,
        summary.warnings,
    )
    return summary


def _intake_chunk(connection: Connection, chunk: list[Row], summary: IntakeSummary, as_of: dt.date) -> None:
    people: list[dict[str, Any]] = []
    rejected: list[inputs.Rejection] = []
    warnings: list[dict[str, Any]] = []
    for row in chunk:
        try:
            person, row_warnings = validate_row(row.values, as_of)
        except RowRejected as rejection:
            key = normalise(row.values.get("nir") or "") or None
            rejected.append(inputs.Rejection(row.line_no, rejection.reason, str(rejection), key))
            continue
        person["line_no"] = row.line_no
        people.append(person)
        for code, detail in row_warnings:
            warnings.append(
                {"file_id": summary.input_file_id, "line": row.line_no, "code": code, "detail": detail, "key": person["nir"]}
            )
    _stage(connection, people)
    assert summary.input_file_id is not None
    inputs.quarantine(connection, summary.input_file_id, FileKind.REGISTER, rejected)
    if warnings:
        connection.execute(
            text(
                "INSERT INTO input_warnings (input_file_id, line_no, warning_code, detail, record_key)"
                " VALUES (:file_id, :line, :code, :detail, :key)"
            ),
            warnings,
        )
    summary.read += len(chunk)
    summary.accepted += len(people)
    summary.quarantined += len(rejected)
    summary.warnings += len(warnings)
    summary.reasons.update(rejection.reason_code for rejection in rejected)
    summary.warning_codes.update(warning["code"] for warning in warnings)


def _summary_of_earlier_load(connection: Connection, path: Path, input_file_id: int) -> IntakeSummary:
    row = connection.execute(
        text("SELECT rows_read, rows_accepted, rows_quarantined, warnings FROM input_files WHERE id = :id"),
        {"id": input_file_id},
    ).one()
    summary = IntakeSummary(str(path), input_file_id, row[0], row[1], row[2], row[3], already_loaded=True)
    for reason, count in connection.execute(
        text("SELECT reason_code, COUNT(*) FROM quarantine WHERE input_file_id = :id GROUP BY reason_code"),
        {"id": input_file_id},
    ):
        summary.reasons[reason] = count
    return summary
