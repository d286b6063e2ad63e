"""Register intake: every rejection reason, whole-file failures, upserts and idempotent re-loads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from enrolment.register import RowRejected, load_register, validate_row
from mes_rollout.csvfile import InputFileError
from tests.factories import REGISTER_COLUMNS, make_nir, person_row, write_csv

AS_OF = dt.date(2022, 1, 20)


def _snapshot(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as connection:
        return {
            table: [tuple(row) for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY 1"))]  # noqa: S608
            for table in ("persons", "input_files", "quarantine", "input_warnings", "audit_trail")
        }


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"nir": "28208193988"}, "NIR_LENGTH"),
        ({"nir": "2820819398814 10"}, "NIR_KEY"),
        ({"nir": "2820819A98814 09"}, "NIR_SHAPE"),
        ({"nom_naissance": "  "}, "MISSING_FIELD"),
        ({"prenoms": ""}, "MISSING_FIELD"),
        ({"date_naissance": "1982-02-30", "nir": make_nir("2", 1982, 2)}, "BAD_DATE"),
        ({"date_naissance": "1982/08/15"}, "BAD_DATE"),
        ({"date_naissance": "2023-08-15", "nir": make_nir("2", 2023, 8)}, "BIRTH_IN_FUTURE"),
        ({"date_deces": "1970-01-01"}, "DEATH_BEFORE_BIRTH"),
        ({"date_deces": "2022-06-01"}, "BAD_DATE"),
        ({"sexe": "X"}, "BAD_SEX"),
        ({"departement": "20"}, "BAD_DEPARTEMENT"),
        ({"departement": "977"}, "BAD_DEPARTEMENT"),
        ({"sexe": "M", "nir": make_nir("2", 1982, 8)}, "NIR_MISMATCH"),
        ({"nir": make_nir("2", 1983, 8)}, "NIR_MISMATCH"),
        ({"nir": make_nir("2", 1982, 9)}, "NIR_MISMATCH"),
        ({"lieu_naissance": "1A053"}, "BAD_BIRTH_PLACE"),
        ({"nir_representant": "123"}, "BAD_REPRESENTATIVE_NIR"),
    ],
)
def test_each_row_rule_names_its_reason(overrides: dict[str, str], reason: str) -> None:
    with pytest.raises(RowRejected) as raised:
        validate_row(dict(person_row(**overrides)), AS_OF)
    assert raised.value.reason == reason


def test_self_representative_is_rejected() -> None:
    row = person_row()
    row["nir_representant"] = row["nir"]
    with pytest.raises(RowRejected) as raised:
        validate_row(dict(row), AS_OF)
    assert raised.value.reason == "SELF_REPRESENTATIVE"


def test_names_are_data_and_contacts_only_warn() -> None:
    person, warnings = validate_row(
        dict(
            person_row(
                nom_naissance='<b>O\'Brien</b>  "Dédé"\n  Junior',
                email="jean.dupont@@exemple",
                adresse_ligne4="12 chemin de la grande fontaine qui ne finit jamais de couler",
            )
        ),
        AS_OF,
    )
    assert person["nom_naissance"] == '<b>O\'Brien</b> "Dédé" Junior'
    assert person["email"] is None
    assert person["address_problem"] and "38" in person["address_problem"]
    assert [code for code, _ in warnings] == ["EMAIL_INVALID", "ADDRESS_INVALID"]


def test_a_file_with_every_fault_reconciles_and_quarantines_with_reasons(engine: Engine, tmp_path: Path) -> None:
    parent = person_row(date_naissance="1980-03-03")
    child = person_row(date_naissance="2012-05-05", nir_representant=parent["nir"], email="")
    dead_parent = person_row(date_naissance="1950-01-01", date_deces="2021-12-01")
    orphan_of_dead = person_row(date_naissance="2015-01-01", nir_representant=dead_parent["nir"])
    unknown_rep = person_row(date_naissance="2014-01-01", nir_representant=make_nir("1", 1970, 1))
    good = person_row()
    rows = [
        child,  # the representative comes later in the file: still known
        good,
        person_row(nir="2820819398814 10"),
        person_row(sexe="X"),
        dict(good, email="other@example.fr"),  # same NIR again: the later line is quarantined
        parent,
        dead_parent,
        orphan_of_dead,
        unknown_rep,
    ]
    path = write_csv(tmp_path / "register.csv", rows)
    summary = load_register(engine, path, as_of=AS_OF)

    assert (summary.read, summary.accepted, summary.quarantined) == (9, 4, 5)
    with engine.connect() as connection:
        quarantined = set(connection.execute(text("SELECT line_no, reason_code, record_key FROM quarantine")))
        persons = dict(connection.execute(text("SELECT nir, email FROM persons")).all())
        counts = connection.execute(
            text("SELECT rows_read, rows_accepted, rows_quarantined FROM input_files")
        ).one()
    assert {(line, reason) for line, reason, _ in quarantined} == {
        (4, "NIR_KEY"),
        (5, "BAD_SEX"),
        (6, "DUPLICATE_IN_FILE"),
        (9, "DECEASED_REPRESENTATIVE"),
        (10, "UNKNOWN_REPRESENTATIVE"),
    }
    assert (6, "DUPLICATE_IN_FILE", good["nir"]) in quarantined
    assert set(persons) == {child["nir"], good["nir"], parent["nir"], dead_parent["nir"]}
    assert persons[good["nir"]] == "camille.martin@example.fr"  # the first line wins
    assert tuple(counts) == (9, 4, 5)


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (b"nir;nom_naissance;prenoms;date_naissance;sexe\n", 1, "missing column(s): departement"),
        (b"nir;nom_naissance;prenoms;date_naissance;sexe;departement;colour\n", 1, "unknown column(s): colour"),
        (b"", 1, "empty file"),
    ],
)
def test_a_wrong_header_fails_the_file_with_its_name_and_line(
    engine: Engine, tmp_path: Path, content: bytes, line: int, problem: str
) -> None:
    path = tmp_path / "register.csv"
    path.write_bytes(content)
    with pytest.raises(InputFileError) as raised:
        load_register(engine, path, as_of=AS_OF)
    assert raised.value.line == line
    assert problem in str(raised.value)
    assert str(path) in str(raised.value)


def _good_lines(count: int) -> list[str]:
    return [";".join(person_row()[column] for column in REGISTER_COLUMNS) for _ in range(count)]


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        (b"\xff\xfe broken bytes;;;;", "not UTF-8"),
        (b'"2820819398814 09"x;Dupont', "broken quoting"),
        (b"28208193988;Dupont", "fields where the header has 17"),
    ],
)
def test_an_unreadable_row_fails_the_whole_file_and_changes_nothing(
    engine: Engine, tmp_path: Path, bad_line: bytes, expected: str
) -> None:
    load_register(engine, write_csv(tmp_path / "first.csv", [person_row()]), as_of=AS_OF)
    before = _snapshot(engine)
    # 30 000 good rows first: the failure comes after a whole chunk was staged.
    lines = [";".join(REGISTER_COLUMNS), *_good_lines(30_000)]
    content = ("\n".join(lines) + "\n").encode() + bad_line + b"\n" + ("\n".join(_good_lines(3)) + "\n").encode()
    path = tmp_path / "register.csv"
    path.write_bytes(content)
    with pytest.raises(InputFileError) as raised:
        load_register(engine, path, as_of=AS_OF)
    assert raised.value.line == 30_002
    assert expected in str(raised.value)
    assert _snapshot(engine) == before


def test_a_byte_order_mark_and_spaces_in_nir_are_accepted(engine: Engine, tmp_path: Path) -> None:
    row = person_row()
    spaced = dict(row, nir=f"{row['nir'][:1]} {row['nir'][1:3]} {row['nir'][3:]}")
    path = write_csv(tmp_path / "register.csv", [spaced])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    summary = load_register(engine, path, as_of=AS_OF)
    assert summary.accepted == 1
    with engine.connect() as connection:
        assert connection.execute(text("SELECT nir FROM persons")).scalar_one() == row["nir"]


def test_reloading_the_same_file_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "register.csv", [person_row(), person_row(sexe="X"), person_row()])
    first = load_register(engine, path, as_of=AS_OF)
    before = _snapshot(engine)
    second = load_register(engine, path, as_of=AS_OF)
    assert second.already_loaded and second.read == first.read == 3
    assert _snapshot(engine) == before
    # The same rows in another file (another name, same content plus nothing new) touch no person.
    copy = tmp_path / "copy.csv"
    copy.write_bytes(path.read_bytes() + b"\n")
    third = load_register(engine, copy, as_of=AS_OF)
    assert third.inserted_or_updated == 0
    assert _snapshot(engine)["persons"] == before["persons"]


def test_a_later_extract_updates_contacts_and_deaths_and_leaves_absent_people_alone(
    engine: Engine, tmp_path: Path
) -> None:
    stays, moves, dies = person_row(), person_row(), person_row(date_naissance="1940-02-02")
    load_register(engine, write_csv(tmp_path / "a.csv", [stays, moves, dies]), as_of=AS_OF)
    moved = dict(moves, email="nouvelle@example.fr", adresse_ligne4="1 place du Marché")
    died = dict(dies, date_deces="2022-01-10")
    load_register(engine, write_csv(tmp_path / "b.csv", [moved, died]), as_of=AS_OF)
    # A third extract that lacks the death date does not bring the person back to life.
    load_register(engine, write_csv(tmp_path / "c.csv", [dict(dies, nom_usage="Veuve")]), as_of=AS_OF)
    with engine.connect() as connection:
        persons = {
            row.nir: row
            for row in connection.execute(text("SELECT nir, email, adresse_ligne4, date_deces, nom_usage FROM persons"))
        }
        deaths = connection.execute(
            text("SELECT entity_id FROM audit_trail WHERE action = 'death_recorded'")
        ).scalars().all()
    assert persons[stays["nir"]].email == "camille.martin@example.fr"
    assert persons[moves["nir"]].email == "nouvelle@example.fr"
    assert persons[moves["nir"]].adresse_ligne4 == "1 place du Marché"
    assert str(persons[dies["nir"]].date_deces)[:10] == "2022-01-10"
    assert persons[dies["nir"]].nom_usage == "Veuve"
    assert deaths == [dies["nir"]]


def test_a_representative_known_from_an_earlier_extract_is_accepted(engine: Engine, tmp_path: Path) -> None:
    parent = person_row()
    load_register(engine, write_csv(tmp_path / "a.csv", [parent]), as_of=AS_OF)
    child = person_row(date_naissance="2015-06-06", nir_representant=parent["nir"])
    summary = load_register(engine, write_csv(tmp_path / "b.csv", [child]), as_of=AS_OF)
    assert (summary.accepted, summary.quarantined) == (1, 0)


def _tricky_rows() -> list[dict[str, str]]:
    """Rows whose values need escaping in COPY text (backslash, quotes, markup, a line break)."""
    parent = person_row(nom_naissance='O\\Neil <b>"Jo"</b>', adresse_ligne2="Bât. A\\B")
    child = person_row(
        date_naissance="2015-06-06",
        nir_representant=parent["nir"],
        prenoms="Zoé\nMarie",
        nom_usage="\\N",
        email="",
        adresse_ligne3="Résidence \t Les Pins",
    )
    dead = person_row(date_naissance="1930-03-03", date_deces="2021-12-24", lieu_naissance="2A004")
    return [parent, child, dead, person_row(sexe="M", code_postal="1000"), person_row(nom_usage="D'Arc")]


def test_a_first_load_and_an_upsert_store_the_same_rows(engine: Engine, tmp_path: Path) -> None:
    # On an empty register the rows go straight in (COPY on PostgreSQL, indexes built afterwards);
    # on a register that already has people they go through the upsert. Both must store the same.
    rows = _tricky_rows()
    columns = (
        "nir, nom_naissance, nom_usage, prenom, prenoms, date_naissance, sexe, lieu_naissance, email,"
        " adresse_ligne2, adresse_ligne3, adresse_ligne4, adresse_ligne5, code_postal, commune,"
        " address_problem, departement, nir_representant, date_deces, email_bounced, address_returned,"
        " register_extracted_on"
    )

    def stored(nirs: list[str]) -> list[tuple[object, ...]]:
        with engine.connect() as connection:
            found = [tuple(row) for row in connection.execute(text(f"SELECT {columns} FROM persons ORDER BY nir"))]  # noqa: S608
        return [row for row in found if row[0] in nirs]

    def indexes() -> set[str]:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                # The primary key and the foreign keys that reference persons come back too.
                query = (
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'persons' UNION ALL"
                    " SELECT conrelid::regclass::text || '.' || conname || ' ' || pg_get_constraintdef(oid)"
                    " FROM pg_constraint WHERE confrelid = 'persons'::regclass OR conrelid = 'persons'::regclass"
                )
            else:
                query = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'persons'"
            return {str(name) for name in connection.exec_driver_sql(query).scalars()}

    before = indexes()
    first = load_register(engine, write_csv(tmp_path / "first.csv", rows), as_of=AS_OF)
    assert (first.accepted, first.quarantined, first.inserted_or_updated) == (5, 0, 5)
    nirs = [row["nir"] for row in rows]
    by_first_load = stored(nirs)
    assert indexes() == before
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM persons WHERE nir <> :keep"), {"keep": rows[-1]["nir"]})
    upserted = load_register(engine, write_csv(tmp_path / "second.csv", rows[:-1]), as_of=AS_OF)
    assert upserted.inserted_or_updated == 4
    assert stored(nirs) == by_first_load
    names = {row[0]: row for row in by_first_load}
    assert names[rows[0]["nir"]][1] == 'O\\Neil <b>"Jo"</b>'
    assert names[rows[1]["nir"]][2] == "\\N" and names[rows[1]["nir"]][4] == "Zoé Marie"
    assert names[rows[1]["nir"]][10] == "Résidence Les Pins"
    # Both paths of a first load (straight in, or staged first) and the upsert record the extract date.
    assert {str(row[-1])[:10] for row in by_first_load} == {AS_OF.isoformat()}
    with engine.connect() as connection:
        orphans = connection.execute(
            text("SELECT COUNT(*) FROM persons WHERE input_file_id NOT IN (SELECT id FROM input_files)")
        ).scalar_one()
    assert orphans == 0


@pytest.mark.parametrize("first_load", [True, False])
def test_a_rejected_representative_orphans_their_wards_in_turn(engine: Engine, tmp_path: Path, first_load: bool) -> None:
    # A's representative is unknown, so A is rejected; then B, whom A represents, and C, whom B
    # represents. D's second line is a duplicate, but D's first line stands: E, whom D represents, stays.
    if not first_load:
        load_register(engine, write_csv(tmp_path / "earlier.csv", [person_row(date_naissance="1950-05-05")]), as_of=AS_OF)
    a = person_row(date_naissance="1990-01-01", nir_representant=make_nir("1", 1960, 6))
    b = person_row(date_naissance="2010-02-02", nir_representant=a["nir"])
    c = person_row(date_naissance="2012-03-03", nir_representant=b["nir"])
    d = person_row(date_naissance="1985-04-04")
    e = person_row(date_naissance="2013-05-05", nir_representant=d["nir"])
    path = write_csv(tmp_path / "register.csv", [c, b, a, d, e, dict(d, email="later@example.fr")])
    summary = load_register(engine, path, as_of=AS_OF)
    assert (summary.read, summary.accepted, summary.quarantined) == (6, 2, 4)
    with engine.connect() as connection:
        quarantined = set(connection.execute(text("SELECT line_no, reason_code FROM quarantine")).all())
        nirs = set(connection.execute(text("SELECT nir FROM persons")).scalars())
    assert quarantined == {
        (2, "UNKNOWN_REPRESENTATIVE"),
        (3, "UNKNOWN_REPRESENTATIVE"),
        (4, "UNKNOWN_REPRESENTATIVE"),
        (7, "DUPLICATE_IN_FILE"),
    }
    assert {d["nir"], e["nir"]} <= nirs and not {a["nir"], b["nir"], c["nir"]} & nirs


@pytest.mark.parametrize("bits", [3, 12, 27])
def test_at_most_one_row_per_nir_goes_straight_into_persons(bits: int) -> None:
    # The first load sends a checked row straight into persons only when its NIR surely did not
    # come before, in earlier batches or earlier in the same batch; a small filter only sends more
    # rows the longer way, never a second row of a NIR straight in.
    import random

    import pyarrow as pa

    from enrolment.register import _SeenNirs
    from mes_rollout.nir import with_key

    rng = random.Random(bits)
    people = [make_nir(rng.choice("12"), rng.randint(1930, 2020), rng.randint(1, 12)) for _ in range(400)]
    people += [with_key(nir[:5] + "2A" + nir[7:13]) for nir in people[:20]]  # Corsica, 19 and 2A alike
    stream = [rng.choice(people) for _ in range(3_000)]
    seen = _SeenNirs(bits)
    straight: list[str] = []
    for start in range(0, len(stream), 250):
        batch = stream[start : start + 250]
        straight += [nir for nir, first in zip(batch, seen.first_sightings(pa.array(batch)), strict=True) if first]
    assert len(straight) == len(set(straight))
    if bits == 27:  # a filter of the size the intake uses lets almost every first sighting through
        assert len(straight) > 0.95 * len(set(stream))


@pytest.fixture(scope="module")
def many_blocks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Forty thousand people, 3 % of rows faulty: about 5 MiB, more than one block of the reader."""
    from console.synth import generate

    folder = tmp_path_factory.mktemp("many-blocks")
    generate(40_000, 5, folder, dirty=0.03, with_dmp=False)
    return folder


def test_a_synthetic_extract_of_many_blocks_quarantines_and_warns_exactly_the_injected_faults(
    engine: Engine, many_blocks: Path
) -> None:
    # faults.csv names every faulty row's single fault and the rule (reason code or warning) it must meet.
    import csv

    register = many_blocks / "register.csv"
    assert register.stat().st_size > 4 << 20
    with (many_blocks / "faults.csv").open(encoding="utf-8") as stream:
        faults = [row for row in csv.DictReader(stream, delimiter=";") if row["file"] == "register.csv"]
    warnings = {"EMAIL_INVALID", "ADDRESS_INVALID"}
    summary = load_register(engine, register, as_of=dt.date(2022, 1, 28))
    with engine.connect() as connection:
        quarantined = set(connection.execute(text("SELECT line_no, reason_code, record_key FROM quarantine")).all())
        warned = set(connection.execute(text("SELECT line_no, warning_code FROM input_warnings")).all())
        persons = connection.execute(text("SELECT COUNT(*) FROM persons")).scalar_one()
    assert quarantined == {
        (int(fault["line"]), fault["expected"], fault["key"]) for fault in faults if fault["expected"] not in warnings
    }
    assert warned == {(int(fault["line"]), fault["expected"]) for fault in faults if fault["expected"] in warnings}
    assert summary.read == summary.accepted + summary.quarantined and persons == summary.accepted


def test_columns_in_another_order_or_left_out_store_the_same_people(engine: Engine, tmp_path: Path) -> None:
    # The contract fixes the names, not the order; optional columns may be missing. The column
    # check then works on the contract's order with empty optional fields, as validate_row does.
    parent = person_row(date_naissance="1980-03-03")
    rows = [parent, person_row(date_naissance="2012-05-05", nir_representant=parent["nir"], email="bad@@x")]
    reordered = list(reversed(REGISTER_COLUMNS))
    load_register(engine, write_csv(tmp_path / "reordered.csv", rows, reordered), as_of=AS_OF)
    with engine.connect() as connection:
        by_reordered = sorted(connection.execute(text("SELECT * FROM persons")).all())
        warned = connection.execute(text("SELECT warning_code FROM input_warnings")).scalars().all()
        connection.execute(text("DELETE FROM persons WHERE nir_representant IS NOT NULL"))
        connection.execute(text("DELETE FROM persons"))
        connection.commit()
    assert warned == ["EMAIL_INVALID"] and len(by_reordered) == 2
    required = ["nir", "nom_naissance", "prenoms", "date_naissance", "sexe", "departement", "nir_representant"]
    summary = load_register(
        engine, write_csv(tmp_path / "required.csv", [{name: row[name] for name in required} for row in rows], required),
        as_of=AS_OF,
    )
    with engine.connect() as connection:
        stored = {row[0]: row for row in connection.execute(text("SELECT nir, email, adresse_ligne4, address_problem FROM persons"))}
    assert summary.accepted == 2 and summary.warnings == 0
    assert stored[parent["nir"]][1:] == (None, None, "no postal address")
