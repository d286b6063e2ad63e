"""Register intake: validate a register extract row by row, then upsert it into persons by NIR.

One file is one transaction: rows are checked in Python as they stream in (chunks, never the
whole file in memory), staged, checked again as a set (duplicates in the file, representatives
who must be known and alive), then merged. A file that cannot be read changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import re
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from enrolment.nir import Nir, NirError, normalise
from mes_rollout import bulk, inputs
from mes_rollout.constants import FileKind, RegisterReason, RegisterWarning
from mes_rollout.contracts import REGISTER_COLUMNS
from mes_rollout.csvfile import chunks, read_records
from mes_rollout.db import load_query
from mes_rollout.inputs import RowRejected
from notifications.postal_address import _KEPT_CHARACTER, _POSTCODE_AREA, PostalAddress

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


KEY_COLUMNS = ("line_no", "nir", "nir_representant", "date_deces")
PERSON_COLUMNS = STAGED_COLUMNS[1:]
# What a spilled row carries after its line number: the person, then its provenance.
SPILLED_COLUMNS = (*PERSON_COLUMNS, "input_file_id", "updated_at")
_NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_UNESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def _copy_line(values: list[Any]) -> str:
    """One row in PostgreSQL's COPY text format (also the spill file's format on SQLite)."""
    texts = [_NULL if value is None else value if value.__class__ is str else str(value) for value in values]
    line = "\t".join(texts)
    # Backslashes other than the NULL markers, line breaks or tabs inside a value: escape field by field.
    if line.count("\\") != values.count(None) or "\n" in line or "\r" in line or line.count("\t") != len(texts) - 1:
        line = "\t".join(
            _NULL if value is None else text_.translate(_ESCAPES) for value, text_ in zip(values, texts, strict=True)
        )
    return line + "\n"


def _from_copy_field(field: str) -> str | None:
    if field == _NULL:
        return None
    return _UNESCAPE.sub(lambda match: _UNESCAPED.get(match.group(1), match.group(1)), field) if "\\" in field else field


class _Spill:
    """Accepted rows, in COPY text format, in a temporary file: the file streams through in chunks,
    and only the set-based file rules decide which of its rows reach `persons`."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(mode="w+", encoding="utf-8", newline="\n")  # noqa: SIM115

    def write(self, lines: list[str]) -> None:
        self.file.writelines(lines)

    def rows(self, rejected: set[int], size: int = CHUNK_ROWS) -> Iterator[list[str]]:
        """Chunks of lines without the line number, the rejected lines left out."""
        self.file.seek(0)
        split = (line.split("\t", 1) for line in self.file)
        return chunks((rest for line_no, rest in split if not (rejected and int(line_no) in rejected)), size)

    def close(self) -> None:
        self.file.close()


# --- The shortcut for ordinary rows -------------------------------------------------------------
# Most rows of an extract are already in the form `validate_row` would give them: a NIR without
# spaces, names without extra whitespace, a valid email, an address that surely prints. For those
# rows the shortcut below builds the same staged values without the general path's cost; it never
# rejects nor warns: any row it is not sure of (about 3 % of a synthetic extract) goes through
# `validate_row`. tests/enrolment/test_register_shortcut.py checks that both agree on every row the
# shortcut takes, over faulty synthetic extracts and generated variations.
_NAME = r'[^\s;"]+(?: [^\s;"]+)*'
# Address characters that survive normalisation without growing (no ß, Æ, æ, ¼, ½, ¾, nothing
# outside Latin-1), no whitespace but single spaces, no ';' or '"'.
_ADDRESS_WORD = r"[!#-:<-~\xa1-\xbb\xbf-\xc5\xc7-\xde\xe0-\xe5\xe7-\xff]+"
_ADDRESS_LINE = rf"(?:{_ADDRESS_WORD}(?: {_ADDRESS_WORD})*)?"
_SURE_NIR = (
    r"[12][0-9]{2}(?:0[1-9]|1[0-2])"
    r"(?:(?:0[1-9]|1[0-9]|2[1-9AB]|[3-8][0-9]|9[0-59])(?!000)[0-9]{3}|9[78][1-9][0-9]{2})(?!000)[0-9]{5}"
)
_ISO_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_DEPARTEMENT = "97[1-6]|2[AB]|[0-9]{2}"  # then looked up in DEPARTEMENTS (a long alternation is slow)
_SURE_ROW = re.compile(
    rf"({_SURE_NIR});({_NAME});((?:{_NAME})?);({_NAME});({_ISO_DATE});([MF]);((?:[0-9]{{5}}|2[AB][0-9]{{3}})?);"
    rf"((?:{_EMAIL.pattern[1:-1]})?);({_ADDRESS_LINE});({_ADDRESS_LINE});({_ADDRESS_LINE});({_ADDRESS_LINE});((?:[0-9]{{5}})?);"
    rf"((?:{_ADDRESS_WORD}(?: {_ADDRESS_WORD})*)?);({_DEPARTEMENT});((?:{_SURE_NIR})?);((?:{_ISO_DATE})?)"
)
_CORSICA = str.maketrans({"A": "9", "B": "8"})  # 2A is read as 19 and 2B as 18 for the key


def _sure_key(nir: str) -> bool:
    number = nir[:13]
    if number[5] == "2" and number[6] in "AB":
        number = number[:5] + "1" + number[6:].translate(_CORSICA)
    return 97 - int(number) % 97 == int(nir[13:])


def _sure_date(text_: str) -> bool:
    try:
        dt.date.fromisoformat(text_)
    except ValueError:
        return False
    return True


def shortcut_row(fields: list[str], as_of_iso: str) -> list[str | None] | None:
    """The staged values (PERSON_COLUMNS order) of a row in the contract's column order that surely
    passes `validate_row` unchanged and without warnings; None when not sure (the general path decides)."""
    match = _SURE_ROW.fullmatch(";".join(fields))
    if match is None:
        return None
    (nir, nom, usage, prenoms, birth, sexe, lieu, email, line2, line3, line4, line5, postcode, commune,
     departement, representative, death) = match.groups()
    if (
        birth > as_of_iso
        or departement not in DEPARTEMENTS
        or (nir[0] == "1") != (sexe == "M")
        or nir[1:3] != birth[2:4]
        or nir[3:5] != birth[5:7]
        or not _sure_key(nir)
        or not _sure_date(birth)
    ):
        return None
    problem = None
    if not (postcode or commune or line2 or line3 or line4 or line5):
        problem = "no postal address"  # kept without a warning, as the general path does
    else:
        if len(postcode) + 1 + len(commune) > 38 or not _POSTCODE_AREA.match(postcode):
            return None
        if not _KEPT_CHARACTER.search(commune):
            return None
        kept = False
        for line in (line2, line3, line4, line5):
            if line:
                if len(line) > 38:
                    return None
                kept = kept or _KEPT_CHARACTER.search(line) is not None
        if not kept:
            return None
    if representative and (representative == nir or not _sure_key(representative)):
        return None
    if death and (death < birth or death > as_of_iso or not _sure_date(death)):
        return None
    return [
        nir, nom, usage or None, prenoms.split(" ", 1)[0], prenoms, birth, sexe, lieu or None, email or None,
        line2 or None, line3 or None, line4 or None, line5 or None, postcode or None, commune or None, problem, departement, representative or None, death or None,
    ]


def _create_staging(connection: Connection, table: str, columns: tuple[str, ...]) -> None:
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    postgres = connection.dialect.name == "postgresql"
    types = {
        "line_no": "BIGINT",
        "input_file_id": "BIGINT",
        "updated_at": "TIMESTAMPTZ" if postgres else "TEXT",
        "date_naissance": "DATE" if postgres else "TEXT",
        "date_deces": "DATE" if postgres else "TEXT",
    }
    definition = ", ".join(f"{name} {types.get(name, 'TEXT')}" for name in columns)
    connection.exec_driver_sql(f"CREATE TEMP TABLE {table} ({definition})")


def _drop_keys(connection: Connection, lines: list[int]) -> None:
    for start in range(0, len(lines), 500):
        part = lines[start : start + 500]
        marks = ", ".join(f":l{i}" for i in range(len(part)))
        connection.execute(
            text(f"DELETE FROM register_keys WHERE line_no IN ({marks})"),  # noqa: S608
            {f"l{i}": line for i, line in enumerate(part)},
        )


def _set_based_rejections(connection: Connection) -> list[inputs.Rejection]:
    """Rows rejected by rules over the whole file: duplicate NIRs, representatives."""
    # Indexed once the rows are in (cheaper than maintaining them during the bulk insert). PostgreSQL
    # joins on NIR by hashing, cheaper than building an index on it; SQLite only joins through indexes.
    if connection.dialect.name != "postgresql":
        connection.exec_driver_sql("CREATE INDEX ix_register_keys_nir ON register_keys (nir)")
    connection.exec_driver_sql("CREATE INDEX ix_register_keys_line ON register_keys (line_no)")
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ANALYZE register_keys")
    rejected: list[inputs.Rejection] = []
    duplicates = connection.execute(text(load_query("register_duplicates.sql"))).all()
    rejected += [
        inputs.Rejection(line, RegisterReason.DUPLICATE_IN_FILE, "NIR already on an earlier line of this file", nir)
        for line, nir in duplicates
    ]
    _drop_keys(connection, [line for line, _ in duplicates])
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
        _drop_keys(connection, [line for line, _, _ in orphans])


def load_register(
    engine: Engine, path: Path, *, as_of: dt.date, run_id: str | None = None, now: dt.datetime | None = None
) -> IntakeSummary:
    """Load one register extract; the whole file or nothing. `as_of` is the run's logical date.

    Rows are read and checked as they stream; accepted rows go to a spill file and their keys (NIR,
    representative, death) to a staging table, where the rules over the whole file run as SQL.
    Then the rows that passed reach `persons`: straight in on a first load (`persons` empty: COPY
    on PostgreSQL, its secondary indexes built afterwards), through the upsert otherwise."""
    path = Path(path)
    run_id = run_id or f"register-{uuid.uuid4()}"
    now = now or dt.datetime.now(dt.UTC)
    with engine.begin() as connection:
        load = inputs.begin(connection, FileKind.REGISTER, path, run_id, now)
        if load.already_loaded:
            return _summary_of_earlier_load(connection, path, load.input_file_id)
        input_file_id = load.input_file_id
        summary = IntakeSummary(str(path), input_file_id)
        _create_staging(connection, "register_keys", KEY_COLUMNS)
        spill = _Spill()
        try:
            started = time.perf_counter()
            header, records = read_records(path, REQUIRED, OPTIONAL)
            provenance = [input_file_id, now.isoformat(" ")]
            sink = _Sink(connection, summary, spill, provenance)
            try:
                with _collector_paused():
                    for chunk in chunks(records, CHUNK_ROWS):
                        sink.take(header, chunk, as_of)
            except BaseException:
                sink.abandon()
                raise
            sink.close()
            summary.phase_seconds["read_validate_stage"] = time.perf_counter() - started
            started = time.perf_counter()
            rejected = _set_based_rejections(connection)
            summary.phase_seconds["file_rules"] = time.perf_counter() - started
            started = time.perf_counter()
            inputs.quarantine(connection, input_file_id, FileKind.REGISTER, rejected)
            summary.quarantined += len(rejected)
            summary.accepted -= len(rejected)
            summary.reasons.update(rejection.reason_code for rejection in rejected)
            rejected_lines = {rejection.line_no for rejection in rejected}
            if _register_is_empty(connection):
                summary.inserted_or_updated = _first_load(connection, spill, rejected_lines)
            else:
                summary.inserted_or_updated = _merge(connection, spill, rejected_lines, run_id, input_file_id, now)
            summary.phase_seconds["merge"] = time.perf_counter() - started
        finally:
            spill.close()
        connection.exec_driver_sql("DROP TABLE register_keys")
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


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while rows stream: the rows and their fields form no cycles
    (reference counting frees them), and each chunk of lists and dicts would otherwise set off
    collections that walk every live object, about a third of the reading time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _register_is_empty(connection: Connection) -> bool:
    if connection.dialect.name == "postgresql":
        # Concurrent intakes queue here rather than both taking the first-load path.
        connection.exec_driver_sql("LOCK TABLE persons IN SHARE ROW EXCLUSIVE MODE")
    return connection.exec_driver_sql("SELECT 1 FROM persons LIMIT 1").first() is None


def _secondary_indexes(connection: Connection) -> list[tuple[str, str]]:
    """The indexes of persons other than its primary key, with the statements that build them."""
    if connection.dialect.name == "postgresql":
        query = (
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename = 'persons' AND indexname NOT IN"
            " (SELECT conname FROM pg_constraint WHERE conrelid = 'persons'::regclass)"
        )
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'persons' AND sql IS NOT NULL"
    return [(str(name), str(definition)) for name, definition in connection.exec_driver_sql(query)]


def _key_constraints(connection: Connection) -> list[tuple[str, str, str]]:
    """(table, name, definition) of persons' primary key, then of the foreign keys that reference it."""
    primary = connection.exec_driver_sql(
        "SELECT 'persons', conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'persons'::regclass AND contype = 'p'"
    ).one()
    referencing = connection.exec_driver_sql(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE confrelid = 'persons'::regclass AND contype = 'f' ORDER BY 1, 2"
    ).all()
    return [(str(table), str(name), str(definition)) for table, name, definition in [primary, *referencing]]


def _first_load(connection: Connection, spill: _Spill, rejected: set[int]) -> int:
    """Every accepted row is a new person: no upsert, and the secondary indexes are built once at
    the end rather than maintained row by row (same transaction: nothing is seen half-done)."""
    indexes = _secondary_indexes(connection)
    for name, _definition in indexes:
        connection.exec_driver_sql(f'DROP INDEX "{name}"')
    # PostgreSQL's recipe for populating a table: its primary key (and the foreign keys of the
    # tables that reference it, all empty when persons is) is built after the COPY too.
    constraints = _key_constraints(connection) if connection.dialect.name == "postgresql" else []
    if constraints:
        connection.exec_driver_sql(f'ALTER TABLE persons DROP CONSTRAINT "{constraints[0][1]}" CASCADE')
    inserted = _write_spilled(connection, "persons", spill, rejected)
    for table, name, definition in constraints:
        connection.exec_driver_sql(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for _name, definition in indexes:
        connection.exec_driver_sql(definition)
    return inserted


def _write_spilled(connection: Connection, table: str, spill: _Spill, rejected: set[int]) -> int:
    """The spilled rows not rejected into `table` (SPILLED_COLUMNS): as they are through COPY on
    PostgreSQL, parsed back for SQLite (its timestamps are the same ISO text either way)."""
    if connection.dialect.name == "postgresql":
        return bulk.copy_lines(connection, table, SPILLED_COLUMNS, spill.rows(rejected))
    written = 0
    for chunk in spill.rows(rejected):
        written += bulk.insert_rows(
            connection, table, SPILLED_COLUMNS, [tuple(map(_from_copy_field, line[:-1].split("\t"))) for line in chunk]
        )
    return written


def _merge(
    connection: Connection, spill: _Spill, rejected: set[int], run_id: str, input_file_id: int, now: dt.datetime
) -> int:
    """Upsert by NIR through a staging table; deaths recorded for the first time are audited."""
    connection.execute(
        text(load_query("register_deaths.sql")), {"now": now, "run_id": run_id, "input_file_id": input_file_id}
    )
    _create_staging(connection, "register_staging", SPILLED_COLUMNS)
    _write_spilled(connection, "register_staging", spill, rejected)
    result = connection.execute(text(load_query("register_merge.sql")), {"input_file_id": input_file_id, "now": now})
    connection.exec_driver_sql("DROP TABLE register_staging")
    return max(result.rowcount, 0)


class _Sink:
    """Where checked rows go as they stream. Accepted rows: the spill file, and their keys to the
    staging table, on PostgreSQL through one COPY held open so that the server takes them in while
    the next chunk is checked. Quarantined rows and warnings wait in memory (at most FLUSH_ROWS of
    them) and go in between, so that the COPY is seldom interrupted."""

    FLUSH_ROWS = 50_000

    def __init__(self, connection: Connection, summary: IntakeSummary, spill: _Spill, provenance: list[Any]) -> None:
        assert summary.input_file_id is not None
        self.connection = connection
        self.summary = summary
        self.input_file_id = summary.input_file_id
        self.spill = spill
        self.provenance = provenance
        self.postgres = connection.dialect.name == "postgresql"
        self.rejected: list[inputs.Rejection] = []
        self.warnings: list[dict[str, Any]] = []
        self._copy: contextlib.ExitStack | None = None
        self._writer: Any = None

    def _write_keys(self, keys: list[tuple[int, str, str | None, str | None]]) -> None:
        if not keys:
            return
        if not self.postgres:
            bulk.insert_rows(self.connection, "register_keys", KEY_COLUMNS, keys)
            return
        if self._copy is None:
            raw = self.connection.connection.driver_connection
            assert raw is not None
            self._copy = contextlib.ExitStack()
            cursor = self._copy.enter_context(raw.cursor())  # type: ignore[attr-defined]
            self._writer = self._copy.enter_context(cursor.copy(f"COPY register_keys ({', '.join(KEY_COLUMNS)}) FROM STDIN"))
        # Keys are validated NIRs and ISO dates: nothing in them needs escaping.
        self._writer.write(
            "".join(f"{line}\t{nir}\t{representative or _NULL}\t{death or _NULL}\n" for line, nir, representative, death in keys)
        )

    def _end_copy(self) -> None:
        if self._copy is not None:
            copy, self._copy, self._writer = self._copy, None, None
            copy.close()

    def _flush_pending(self) -> None:
        self._end_copy()
        inputs.quarantine(self.connection, self.input_file_id, FileKind.REGISTER, self.rejected)
        if self.warnings:
            self.connection.execute(
                text(
                    "INSERT INTO input_warnings (input_file_id, line_no, warning_code, detail, record_key)"
                    " VALUES (:file_id, :line, :code, :detail, :key)"
                ),
                self.warnings,
            )
        self.rejected, self.warnings = [], []

    def take(self, header: list[str], chunk: list[tuple[int, list[str]]], as_of: dt.date) -> None:
        spilled: list[str] = []
        keys: list[tuple[int, str, str | None, str | None]] = []
        rejected = self.rejected
        warnings = self.warnings
        before_rejected, before_warnings = len(rejected), len(warnings)
        provenance = self.provenance
        sure = header == list(REGISTER_COLUMNS)
        as_of_iso = as_of.isoformat()
        for line_no, fields in chunk:
            staged = shortcut_row(fields, as_of_iso) if sure else None
            if staged is not None:
                keys.append((line_no, staged[0], staged[17], staged[18]))  # type: ignore[arg-type]
                spilled.append(_copy_line([line_no, *staged, *provenance]))
                continue
            values: dict[str, str | None] = dict(zip(header, fields, strict=True))
            try:
                person, row_warnings = validate_row(values, as_of)
            except RowRejected as rejection:
                key = normalise(values.get("nir") or "") or None
                rejected.append(inputs.Rejection(line_no, rejection.reason, str(rejection), key))
                continue
            death = person["date_deces"]
            keys.append((line_no, person["nir"], person["nir_representant"], death and death.isoformat()))
            spilled.append(_copy_line([line_no, *[person[name] for name in PERSON_COLUMNS], *provenance]))
            for code, detail in row_warnings:
                warnings.append(
                    {"file_id": self.input_file_id, "line": line_no, "code": code, "detail": detail, "key": person["nir"]}
                )
        self.spill.write(spilled)
        self._write_keys(keys)
        summary = self.summary
        summary.read += len(chunk)
        summary.accepted += len(spilled)
        summary.quarantined += len(rejected) - before_rejected
        summary.warnings += len(warnings) - before_warnings
        summary.reasons.update(rejection.reason_code for rejection in rejected[before_rejected:])
        summary.warning_codes.update(warning["code"] for warning in warnings[before_warnings:])
        if len(rejected) + len(warnings) >= self.FLUSH_ROWS:
            self._flush_pending()

    def close(self) -> None:
        """Everything taken is in the database."""
        self._flush_pending()

    def abandon(self) -> None:
        """Stop the COPY after a failure (the transaction is rolled back by the caller)."""
        if self._copy is not None:
            copy, self._copy, self._writer = self._copy, None, None
            with contextlib.suppress(Exception):
                copy.__exit__(RuntimeError, RuntimeError("register intake failed"), None)


def _summary_of_earlier_load(connection: Connection, path: Path, input_file_id: int) -> IntakeSummary:
    earlier = inputs.earlier_load(connection, input_file_id)
    return IntakeSummary(
        str(path), input_file_id, earlier.read, earlier.accepted, earlier.quarantined, earlier.warnings,
        already_loaded=True, reasons=earlier.reasons,
    )
