"""Register extracts delivered out of order: an older extract never undoes a newer one."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from enrolment.register import load_register
from mes_rollout.db import as_date
from tests.factories import person_row, write_csv

JANUARY = dt.date(2022, 1, 3)  # the day the older extract was taken
FEBRUARY = dt.date(2022, 2, 1)  # the day the newer one was taken
LOADED_ON = dt.date(2022, 2, 7)  # the day both are loaded (in one order or the other)
COLUMNS = "email, adresse_ligne4, code_postal, commune, departement, nir_representant, date_deces"


def _people(engine: Engine) -> dict[str, dict[str, object]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT nir, {COLUMNS}, register_extracted_on, input_file_id FROM persons")  # noqa: S608
        ).mappings()
        return {
            row["nir"]: {
                **row,
                "date_deces": as_date(row["date_deces"]),
                "register_extracted_on": as_date(row["register_extracted_on"]),
            }
            for row in rows
        }


def _file_dates(engine: Engine) -> dict[int, dt.date | None]:
    with engine.connect() as connection:
        return {
            row.id: as_date(row.extracted_on)
            for row in connection.execute(text("SELECT id, extracted_on FROM input_files"))
        }


class _Extracts:
    """The same people in a January and a February extract: in February one moved to another
    département with a new email and address, and one child changed representative."""

    def __init__(self) -> None:
        self.mother, self.father = person_row(), person_row(sexe="M")
        self.moves = person_row()
        self.child = person_row(date_naissance="2012-04-04", nir_representant=self.mother["nir"])
        self.stays = person_row()
        self.january = [self.mother, self.father, self.moves, self.child, self.stays]
        self.february = [
            self.mother,
            self.father,
            dict(self.moves, email="nouvelle@example.fr", adresse_ligne4="3 quai du Port", code_postal="13002",
                 commune="Marseille", departement="13"),
            dict(self.child, nir_representant=self.father["nir"]),
            self.stays,
        ]  # fmt: skip

    def write(self, folder: Path) -> tuple[Path, Path]:
        return write_csv(folder / "january.csv", self.january), write_csv(
            folder / "february.csv", self.february
        )


def _february_values(people: dict[str, dict[str, object]], extracts: _Extracts) -> None:
    moved, child = people[extracts.moves["nir"]], people[extracts.child["nir"]]
    assert (moved["email"], moved["adresse_ligne4"], moved["code_postal"], moved["departement"]) == (
        "nouvelle@example.fr", "3 quai du Port", "13002", "13",
    )  # fmt: skip
    assert child["nir_representant"] == extracts.father["nir"]
    assert {person["register_extracted_on"] for person in people.values()} <= {JANUARY, FEBRUARY}


def test_an_older_extract_delivered_after_a_newer_one_changes_nobody(engine: Engine, tmp_path: Path) -> None:
    extracts = _Extracts()
    january, february = extracts.write(tmp_path)
    newer = load_register(engine, february, as_of=LOADED_ON, extracted_on=FEBRUARY)
    assert newer.inserted_or_updated == 5 and newer.older_than_held == 0
    before = _people(engine)
    assert {person["register_extracted_on"] for person in before.values()} == {
        FEBRUARY
    }  # the first load's path

    older = load_register(engine, january, as_of=LOADED_ON, extracted_on=JANUARY)
    # Every row of January is for someone whose row comes from February: none is applied, none is
    # quarantined (not an error), each is counted.
    assert (older.read, older.accepted, older.quarantined) == (5, 5, 0)
    assert older.inserted_or_updated == 0 and older.older_than_held == 5
    assert older.as_dict()["older_than_held"] == 5 and older.as_dict()["extracted_on"] == "2022-01-03"
    after = _people(engine)
    assert after == before
    _february_values(after, extracts)
    assert _file_dates(engine) == {newer.input_file_id: FEBRUARY, older.input_file_id: JANUARY}


def test_a_newer_extract_delivered_after_an_older_one_applies(engine: Engine, tmp_path: Path) -> None:
    extracts = _Extracts()
    january, february = extracts.write(tmp_path)
    older = load_register(engine, january, as_of=LOADED_ON, extracted_on=JANUARY)
    newer = load_register(engine, february, as_of=LOADED_ON, extracted_on=FEBRUARY)
    assert newer.older_than_held == 0 and newer.inserted_or_updated == 2  # the mover and the child
    people = _people(engine)
    _february_values(people, extracts)
    assert people[extracts.moves["nir"]]["register_extracted_on"] == FEBRUARY
    assert people[extracts.moves["nir"]]["input_file_id"] == newer.input_file_id
    # A row the newer extract repeats unchanged is not touched (a monthly extract rewrites no one
    # it does not change): it keeps the date and file of the extract it comes from.
    assert people[extracts.stays["nir"]]["register_extracted_on"] == JANUARY
    assert people[extracts.stays["nir"]]["input_file_id"] == older.input_file_id


def test_two_extracts_of_the_same_day_the_later_load_applies(engine: Engine, tmp_path: Path) -> None:
    person = person_row()
    load_register(engine, write_csv(tmp_path / "a.csv", [person]), as_of=LOADED_ON, extracted_on=FEBRUARY)
    corrected = dict(person, email="corrige@example.fr")
    second = load_register(
        engine, write_csv(tmp_path / "b.csv", [corrected]), as_of=LOADED_ON, extracted_on=FEBRUARY
    )
    assert (second.inserted_or_updated, second.older_than_held) == (1, 0)
    assert _people(engine)[person["nir"]]["email"] == "corrige@example.fr"


def test_people_only_an_older_extract_knows_are_added(engine: Engine, tmp_path: Path) -> None:
    known, only_in_january = person_row(), person_row()
    load_register(engine, write_csv(tmp_path / "feb.csv", [known]), as_of=LOADED_ON, extracted_on=FEBRUARY)
    january = [dict(known, email="ancienne@example.fr"), only_in_january]
    older = load_register(
        engine, write_csv(tmp_path / "jan.csv", january), as_of=LOADED_ON, extracted_on=JANUARY
    )
    assert (older.inserted_or_updated, older.older_than_held) == (1, 1)
    people = _people(engine)
    assert people[known["nir"]]["email"] == "camille.martin@example.fr"
    assert people[only_in_january["nir"]]["register_extracted_on"] == JANUARY
    assert people[only_in_january["nir"]]["input_file_id"] == older.input_file_id
    # A later February-or-newer extract may then change the person January brought.
    march = dict(only_in_january, email="mars@example.fr")
    load_register(engine, write_csv(tmp_path / "mar.csv", [march]), as_of=dt.date(2022, 3, 2))
    assert _people(engine)[only_in_january["nir"]]["email"] == "mars@example.fr"


def test_a_death_is_a_fact_whatever_the_age_of_the_extract_that_records_it(
    engine: Engine, tmp_path: Path
) -> None:
    # The choice (docs/rules/register.md): a death date an older extract records is taken for a
    # person without one, and audited; nothing else of the older row is. A death date the newer
    # extract already holds is kept.
    dies = person_row(date_naissance="1931-03-03")
    both = person_row(date_naissance="1932-03-03")
    newer = [dict(dies, email="neuve@example.fr"), dict(both, date_deces="2022-01-20")]
    first = load_register(
        engine, write_csv(tmp_path / "feb.csv", newer), as_of=LOADED_ON, extracted_on=FEBRUARY
    )
    older_rows = [dict(dies, date_deces="2021-12-30"), dict(both, date_deces="2021-12-31")]
    older = load_register(
        engine, write_csv(tmp_path / "jan.csv", older_rows), as_of=LOADED_ON, extracted_on=JANUARY
    )
    assert (older.inserted_or_updated, older.older_than_held) == (1, 2)
    people = _people(engine)
    assert people[dies["nir"]]["date_deces"] == dt.date(2021, 12, 30)
    assert people[dies["nir"]]["email"] == "neuve@example.fr"  # the rest stays February's
    assert people[dies["nir"]]["register_extracted_on"] == FEBRUARY
    assert people[dies["nir"]]["input_file_id"] == first.input_file_id
    assert people[both["nir"]]["date_deces"] == dt.date(2022, 1, 20)
    with engine.connect() as connection:
        deaths = connection.execute(
            text("SELECT entity_id, input_file_id FROM audit_trail WHERE action = 'death_recorded'")
        ).all()
    assert [tuple(death) for death in deaths] == [
        (dies["nir"], older.input_file_id)
    ]  # February's was a first load


def test_the_extract_date_defaults_to_the_day_of_the_load_and_is_never_after_it(
    engine: Engine, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "register.csv", [person_row()])
    with pytest.raises(ValueError, match="after the day of the load"):
        load_register(engine, path, as_of=JANUARY, extracted_on=FEBRUARY)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM input_files")).scalar_one() == 0
    summary = load_register(engine, path, as_of=JANUARY)
    assert summary.extracted_on == JANUARY
    assert _file_dates(engine) == {summary.input_file_id: JANUARY}
    assert {person["register_extracted_on"] for person in _people(engine).values()} == {JANUARY}
    # The same file again, given another date, is the same file: nothing changes, and the summary
    # gives the date it was loaded with.
    again = load_register(engine, path, as_of=LOADED_ON, extracted_on=FEBRUARY)
    assert again.already_loaded and again.extracted_on == JANUARY
    assert _file_dates(engine) == {summary.input_file_id: JANUARY}


def test_the_command_line_takes_the_extract_date_and_shows_the_rows_left_out(
    settings_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from console import logfile, progress
    from console.cli import main

    extracts = _Extracts()
    january, february = extracts.write(tmp_path)
    try:
        assert (
            main(
                [
                    "load",
                    "register",
                    str(february),
                    "--date",
                    "2022-02-07",
                    "--extracted-on",
                    "2022-02-01",
                    "--json",
                ]
            )
            == 0
        )
        newer = json.loads(capsys.readouterr().out)
        assert newer["extracted_on"] == "2022-02-01" and newer["older_than_held"] == 0
        assert (
            main(
                [
                    "load",
                    "register",
                    str(january),
                    "--date",
                    "2022-02-07",
                    "--extracted-on",
                    "2022-01-03",
                    "--json",
                ]
            )
            == 0
        )
        older = json.loads(capsys.readouterr().out)
        assert (older["older_than_held"], older["changed_persons"], older["rows"]["quarantined"]) == (5, 0, 0)
        assert (
            main(["load", "register", str(january), "--date", "2022-02-07", "--extracted-on", "2022-01-03"])
            == 0
        )
        shown = capsys.readouterr().out
        assert "older_than_held" in shown.replace(" ", "_") or "older than held" in shown
        with pytest.raises(SystemExit, match="after the day of the load"):
            main(["load", "register", str(january), "--date", "2022-01-02", "--extracted-on", "2022-01-03"])
        # Without --extracted-on the extract is taken to be of the day of the load.
        third = write_csv(tmp_path / "march.csv", [person_row()])
        assert main(["load", "register", str(third), "--date", "2022-03-01", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["extracted_on"] == "2022-03-01"
    finally:
        logfile.uninstall()
        progress.enable(False)
