"""The register intake's column check agrees with `validate_row` on every row it takes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console.synth import generate
from enrolment.register import PERSON_COLUMNS, RowRejected, validate_row
from enrolment.register_columns import sure_rows
from mes_rollout.contracts import REGISTER_COLUMNS
from mes_rollout.csvfile import read_records
from tests.factories import person_row

AS_OF = dt.date(2022, 1, 28)


def _general_path(fields: list[str]) -> list[str | None] | None:
    """What the general path stages for a row, as strings; None if it rejects or warns."""
    try:
        person, warnings = validate_row(dict(zip(REGISTER_COLUMNS, fields, strict=True)), AS_OF)
    except RowRejected:
        return None
    if warnings:
        return None
    return [None if person[name] is None else str(person[name]) for name in PERSON_COLUMNS]


def _taken(rows: list[list[str]]) -> list[tuple[list[str], list[str | None]]]:
    """(fields, staged values) of the rows the column check takes."""
    table = pa.table([pa.array(column, pa.string()) for column in zip(*rows, strict=True)], names=list(REGISTER_COLUMNS))
    sure, staged = sure_rows(table, AS_OF)
    assert len(staged) == sum(sure.to_pylist())
    kept = [fields for fields, taken in zip(rows, sure.to_pylist(), strict=True) if taken]
    values = [[row[name] for name in PERSON_COLUMNS] for row in staged.to_pylist()]
    return list(zip(kept, values, strict=True))


@pytest.fixture(scope="module")
def synthetic_rows(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    folder: Path = tmp_path_factory.mktemp("synthetic")
    generate(6_000, 11, folder, dirty=0.08, with_dmp=False)
    header, records = read_records(folder / "register.csv", REGISTER_COLUMNS)
    assert header == list(REGISTER_COLUMNS)
    return [fields for _, fields in records]


def test_the_column_check_agrees_with_the_general_path_on_a_faulty_extract(synthetic_rows: list[list[str]]) -> None:
    taken = _taken(synthetic_rows)
    for fields, staged in taken:
        assert staged == _general_path(fields), fields[0][:5]
    # Worth having: it takes most rows of an extract where 8 % of rows carry a fault.
    assert len(taken) > 0.85 * len(synthetic_rows)
    # And it misses few of the rows the general path accepts unchanged and without warning.
    clean = sum(_general_path(fields) is not None for fields in synthetic_rows)
    assert len(taken) > 0.97 * clean


_PIECES = st.sampled_from(
    ["", " ", "  ", "\t", "\n", "\r", "\xa0", "\x85", "\u2028", "\u3000", "\x1c", ";", '"', "\\", "ß", "Æ", "½",
     "é", "É", "Œ", "<b>", "'", "-", "2A", "2B", "0", "9", "000", "00", "x" * 40, "Ω", "@", ".", "02-29", "-31",
     "1900", "0000", "13", "M", "F"]
)


@settings(max_examples=800, deadline=None)
@given(
    row=st.builds(lambda: dict(person_row())),
    column=st.sampled_from(REGISTER_COLUMNS),
    position=st.integers(min_value=0, max_value=40),
    piece=_PIECES,
    replace=st.booleans(),
)
def test_the_column_check_never_takes_a_row_the_general_path_would_change(
    row: dict[str, str], column: str, position: int, piece: str, replace: bool
) -> None:
    value = row[column]
    row[column] = piece if replace else value[:position] + piece + value[position:]
    fields = [row[name] for name in REGISTER_COLUMNS]
    for taken_fields, staged in _taken([fields]):
        assert staged == _general_path(taken_fields)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("date_naissance", "2021-02-29"),  # not a leap year
        ("date_naissance", "1900-02-29"),  # nor is 1900
        ("date_naissance", "2021-04-31"),
        ("date_naissance", "2022-01-29"),  # after the run's date
        ("date_deces", "2022-02-01"),
        ("nom_naissance", "DUPONT\xa0MARTIN"),  # a no-break space is whitespace to the rules
        ("prenoms", "Jean  Paul"),
        ("email", "jean@@example.fr"),
        ("adresse_ligne4", "x" * 39),
        ("code_postal", "00100"),
    ],
)
def test_the_column_check_leaves_faulty_or_changed_rows_to_the_general_path(column: str, value: str) -> None:
    row = dict(person_row())
    assert _taken([[row[name] for name in REGISTER_COLUMNS]])  # the ordinary row is taken
    row[column] = value
    assert _taken([[row[name] for name in REGISTER_COLUMNS]]) == []


def test_the_column_check_takes_corsica_leap_days_representatives_deaths_and_quoted_text() -> None:
    parent = person_row()
    child = person_row(date_naissance="2016-02-29", nir_representant=parent["nir"])
    dead = person_row(date_naissance="1930-03-03", date_deces="2021-12-24", lieu_naissance="2B033")
    quoted = person_row(nom_naissance='O"NEIL', adresse_ligne3="Bâtiment A; escalier 3")
    rows = [[row[name] for name in REGISTER_COLUMNS] for row in (parent, child, dead, quoted)]
    taken = _taken(rows)
    assert len(taken) == 4
    for fields, staged in taken:
        assert staged == _general_path(fields)


@settings(max_examples=300, deadline=None)
@given(
    sex=st.sampled_from("12"),
    year=st.integers(0, 99),
    month=st.integers(1, 12),
    department=st.sampled_from(["01", "13", "19", "2A", "2B", "31", "75", "95", "971", "976"]),
    commune=st.integers(0, 999),
    order=st.integers(0, 999),
    key_shift=st.integers(0, 96),
)
def test_the_column_key_check_agrees_with_stdnum_including_corsica(
    sex: str, year: int, month: int, department: str, commune: int, order: int, key_shift: int
) -> None:
    from stdnum.fr import nir as stdnum_nir

    from enrolment.register_columns import nir_numbers
    from mes_rollout.nir import compute_key

    place = f"{department}{commune:03d}"[:5]
    number = f"{sex}{year:02d}{month:02d}{place}{order:03d}"
    full = f"{number}{(compute_key(number) + key_shift - 1) % 97 + 1:02d}"
    _, valid = nir_numbers(pa.array([full]))
    expected = stdnum_nir.is_valid(full) and place[2:] != "000" and order != 0
    assert bool(valid[0]) == expected
    assert bool(valid[0]) == (key_shift == 0 and place[2:] != "000" and order != 0)
