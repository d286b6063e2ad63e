"""The register intake's shortcut for ordinary rows agrees with `validate_row` on every row it takes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enrolment.register import PERSON_COLUMNS, RowRejected, shortcut_row, validate_row
from mes_rollout.contracts import REGISTER_COLUMNS
from mes_rollout.csvfile import read_records
from mes_rollout.synth import generate
from tests.factories import person_row

AS_OF = dt.date(2022, 1, 28)


def _general_path(fields: list[str]) -> list[str | None] | None:
    """What the general path stages for a row, in the shortcut's form; None if it rejects or warns."""
    try:
        person, warnings = validate_row(dict(zip(REGISTER_COLUMNS, fields, strict=True)), AS_OF)
    except RowRejected:
        return None
    if warnings:
        return None
    return [None if person[name] is None else str(person[name]) for name in PERSON_COLUMNS]


@pytest.fixture(scope="module")
def synthetic_rows(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    folder: Path = tmp_path_factory.mktemp("synthetic")
    generate(6_000, 11, folder, dirty=0.08, with_dmp=False)
    header, records = read_records(folder / "register.csv", REGISTER_COLUMNS)
    assert header == list(REGISTER_COLUMNS)
    return [fields for _, fields in records]


def test_the_shortcut_agrees_with_the_general_path_on_a_faulty_extract(synthetic_rows: list[list[str]]) -> None:
    taken = 0
    for fields in synthetic_rows:
        staged = shortcut_row(fields, AS_OF.isoformat())
        if staged is not None:
            taken += 1
            assert staged == _general_path(fields), fields[0][:5]
    # The shortcut is worth having: it takes most rows of an ordinary extract.
    assert taken > 0.8 * len(synthetic_rows)


_PIECES = st.sampled_from(
    ["", " ", "  ", "\t", "\n", "\xa0", ";", '"', "\\", "ß", "Æ", "½", "é", "É", "<b>", "'", "-", "2A", "2B",
     "0", "9", "000", "x" * 40, "Ω", "\u2028", "\x1c", "@", "."]
)


@settings(max_examples=600, deadline=None)
@given(
    row=st.builds(lambda: dict(person_row())),
    column=st.sampled_from(REGISTER_COLUMNS),
    position=st.integers(min_value=0, max_value=40),
    piece=_PIECES,
    replace=st.booleans(),
)
def test_the_shortcut_never_takes_a_row_the_general_path_would_change(
    row: dict[str, str], column: str, position: int, piece: str, replace: bool
) -> None:
    value = row[column]
    row[column] = piece if replace else value[:position] + piece + value[position:]
    fields = [row[name] for name in REGISTER_COLUMNS]
    staged = shortcut_row(fields, AS_OF.isoformat())
    if staged is not None:
        assert staged == _general_path(fields)


def test_the_shortcut_takes_corsica_and_representatives_and_deaths() -> None:
    parent = person_row()
    child = person_row(date_naissance="2015-06-06", nir_representant=parent["nir"])
    dead = person_row(date_naissance="1930-03-03", date_deces="2021-12-24", lieu_naissance="2B033")
    for row in (parent, child, dead):
        fields = [row[name] for name in REGISTER_COLUMNS]
        staged = shortcut_row(fields, AS_OF.isoformat())
        assert staged is not None and staged == _general_path(fields)
