"""The synthetic data generator: a realistic population, exact fault bookkeeping, determinism."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.fr import nir as stdnum_nir

from console.synth import REFERENCE_DATE, SynthSummary, generate
from console.synth.faults import DMP_FAULTS, EXPECTED, NATURAL_DMP_ANOMALIES, REGISTER_FAULTS
from console.synth.nirs import NirAllocator
from console.synth.places import RESIDENCE_DEPARTEMENTS, departement_of_postcode
from mes_rollout.constants import HoldBackReason, RegisterReason, RegisterWarning, SkipReason
from mes_rollout.nir import Nir, NirError, compute_key, normalise

# The contracts of INPUTS.md, spelled out again here on purpose: the generator must not drift.
REGISTER_HEADER = (
    "nir;nom_naissance;nom_usage;prenoms;date_naissance;sexe;lieu_naissance;email;adresse_ligne2;"
    "adresse_ligne3;adresse_ligne4;adresse_ligne5;code_postal;commune;departement;nir_representant;date_deces"
).split(";")
DMP_HEADER = ["dmp_id", "nir", "date_naissance", "sexe", "created_at", "status"]
DOCUMENTS_HEADER = (
    "entry_uuid;unique_id;dmp_id;type_code;class_code;confidentiality;creation_time;service_start_time;"
    "author_role;mime_type;size;hash;status;replaces;content_path;title"
).split(";")
TYPE_CODES = {
    "11488-4": "10",
    "11490-0": "10",
    "34112-3": "10",
    "15507-7": "10",
    "34874-8": "10",
    "11502-2": "10",
    "18748-4": "31",
    "34133-9": "11",
    "60591-5": "11",
    "11369-6": "11",
    "87273-9": "11",
    "57833-6": "42",
    "DOCPAT01": "90",
}
ROLLOUT_START = dt.date(2022, 1, 31)
DMP_CUTOFF = dt.date(2021, 7, 1)
STRICT_EMAIL = re.compile(r"^[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?@(?:[a-z0-9-]+\.)+[a-z]{2,}$")
INSEE_PLACE = re.compile(r"^(?:[0-9]{5}|2[AB][0-9]{3})$")
LEVELS = {"N", "R", "V"}
FLAGS = {"MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"}


@dataclass(frozen=True)
class Extract:
    summary: SynthSummary
    out: Path

    def rows(self, name: str) -> list[tuple[int, dict[str, str]]]:
        return read_csv(self.out / name)

    def faults(self) -> dict[tuple[str, int], dict[str, str]]:
        return {(row["file"], int(row["line"])): row for _, row in read_csv(self.out / "faults.csv")}


def read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    """Rows with the physical line each starts on (header = 1), as faults.csv counts them."""
    with path.open(encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream, delimiter=";", quotechar='"', strict=True)
        header = next(reader)
        rows, start = [], reader.line_num + 1
        for values in reader:
            assert len(values) == len(header), f"{path.name} line {start}: {len(values)} fields"
            rows.append((start, dict(zip(header, values, strict=True))))
            start = reader.line_num + 1
    return rows


def header_of(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as stream:
        return next(csv.reader(stream, delimiter=";"))


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Extract:
    out = tmp_path_factory.mktemp("clean")
    return Extract(generate(2000, seed=11, out=out), out)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Extract:
    out = tmp_path_factory.mktemp("dirty")
    return Extract(generate(3000, seed=12, out=out, dirty=0.02), out)


# The contract ---------------------------------------------------------------------------------------


def test_headers_are_those_of_the_input_contract(clean: Extract) -> None:
    assert header_of(clean.out / "register.csv") == REGISTER_HEADER
    assert header_of(clean.out / "dmp" / "dmp.csv") == DMP_HEADER
    assert header_of(clean.out / "dmp" / "documents.csv") == DOCUMENTS_HEADER
    assert header_of(clean.out / "faults.csv") == ["file", "line", "key", "fault", "expected"]


def test_summary_counts_what_was_written(dirty: Extract) -> None:
    summary = dirty.summary
    assert summary.register_rows == len(dirty.rows("register.csv"))
    assert summary.register_rows == summary.persons + summary.faults["DUPLICATE_IN_FILE"]
    assert summary.dmps == len(dirty.rows("dmp/dmp.csv"))
    assert summary.documents == len(dirty.rows("dmp/documents.csv"))
    assert dict(summary.faults) == dict(Counter(row["fault"] for row in dirty.faults().values()))
    content = [path for path in (dirty.out / "dmp" / "content").rglob("*") if path.is_file()]
    assert summary.content_files == len(content)
    assert summary.content_bytes == sum(path.stat().st_size for path in content)
    as_dict = summary.as_dict()
    assert as_dict["paths"] == {name: str(path) for name, path in summary.paths.items()}
    assert as_dict["reference_date"] == "2022-01-15"


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="persons"):
        generate(-1, seed=1, out=tmp_path)
    with pytest.raises(ValueError, match="dirty"):
        generate(10, seed=1, out=tmp_path, dirty=1.5)


# The population -------------------------------------------------------------------------------------


def clean_register_rows(extract: Extract) -> list[dict[str, str]]:
    listed = {line for (file, line) in extract.faults() if file == "register.csv"}
    return [row for line, row in extract.rows("register.csv") if line not in listed]


def test_every_clean_nir_is_valid_and_agrees_with_the_person(clean: Extract) -> None:
    rows = clean_register_rows(clean)
    assert len(rows) > 1900
    for row in rows:
        nir = normalise(row["nir"])
        assert stdnum_nir.is_valid(row["nir"]), row["nir"]
        assert Nir.parse(row["nir"]).value == nir
        birth = dt.date.fromisoformat(row["date_naissance"])
        assert {"1": "M", "7": "M", "2": "F", "8": "F"}[nir[0]] == row["sexe"]
        assert nir[1:3] == f"{birth.year % 100:02d}"
        assert int(nir[3:5]) == birth.month
        if row["lieu_naissance"]:
            assert row["lieu_naissance"] == nir[5:10]
            assert INSEE_PLACE.match(row["lieu_naissance"])
    assert len({normalise(row["nir"]) for row in rows}) == len(rows)
    assert any(" " in row["nir"] for row in rows), "a few NIRs are written as printed, with spaces"


def test_births_include_corsica_overseas_and_abroad_with_the_right_key(clean: Extract) -> None:
    nirs = [normalise(row["nir"]) for row in clean_register_rows(clean)]
    corsican = [nir for nir in nirs if nir[5:7] in ("2A", "2B")]
    assert {nir[5:7] for nir in corsican} == {"2A", "2B"}
    for nir in corsican:
        # The key reads 2A as 19 and 2B as 18.
        digits = nir[:5] + {"2A": "19", "2B": "18"}[nir[5:7]] + nir[7:13]
        assert int(nir[13:]) == 97 - int(digits) % 97 == compute_key(nir[:13])
        assert stdnum_nir.is_valid(nir)
    overseas = [nir for nir in nirs if nir[5:7] == "97"]
    assert overseas and all(nir[7] in "123456" for nir in overseas), "97 + territory digit + 2-digit commune"
    assert any(nir[5:7] == "99" for nir in nirs), "born abroad: 99 + country code"


def test_minors_are_represented_by_a_living_adult_of_the_file(clean: Extract) -> None:
    rows = clean.rows("register.csv")
    people = {normalise(row["nir"]): (line, row) for line, row in rows}
    minors = [
        (line, row)
        for line, row in rows
        if dt.date.fromisoformat(row["date_naissance"]) > dt.date(2004, 1, 31)
    ]
    assert 0.15 < len(minors) / len(rows) < 0.30
    represented_later = 0
    for line, minor in minors:
        assert minor["nir_representant"], "every minor has a representative"
        representative_line, representative = people[normalise(minor["nir_representant"])]
        assert not representative["date_deces"]
        assert dt.date.fromisoformat(representative["date_naissance"]) <= dt.date(2004, 1, 31)
        assert not representative["nir_representant"]
        represented_later += representative_line > line
    assert represented_later, "some representatives come after the child in the file"
    minor_lines = {line for line, _ in minors}
    protected = [row for line, row in rows if row["nir_representant"] and line not in minor_lines]
    assert protected, "a few protected adults have a representative"


def test_contacts_places_and_deaths_look_like_the_country(clean: Extract) -> None:
    rows = clean_register_rows(clean)
    share = len(rows)
    assert 0.65 < sum(1 for row in rows if row["email"]) / share < 0.75
    assert 0.07 < sum(1 for row in rows if row["departement"] in ("01", "02")) / share < 0.13
    assert 0.003 < sum(1 for row in rows if row["date_deces"]) / share < 0.02
    assert {row["departement"] for row in rows} >= {"2A", "2B", "971", "974", "976"}
    for row in rows:
        assert row["departement"] in RESIDENCE_DEPARTEMENTS
        assert row["email"] or row["code_postal"], "everyone can be reached"
        if row["email"]:
            assert STRICT_EMAIL.match(row["email"]), row["email"]
        if row["code_postal"]:
            assert re.fullmatch(r"[0-9]{5}", row["code_postal"])
            assert departement_of_postcode(row["code_postal"]) == row["departement"]
            assert row["commune"]
        lines = [row[f"adresse_ligne{n}"] for n in range(2, 6)] + [f"{row['code_postal']} {row['commune']}"]
        assert all(len(line) <= 38 for line in lines)
    odd = "".join(row["nom_naissance"] + row["nom_usage"] + row["prenoms"] for row in rows)
    assert "'" in odd and "\n" in odd and "<b>" in odd, "names the pipeline must carry without breaking"


# Register faults ------------------------------------------------------------------------------------


def register_row_problems(row: dict[str, str], reference_date: dt.date) -> set[str]:
    """Every rule of a single register row that the row breaks (set-based rules aside)."""
    problems: set[str] = set()
    if any(
        not row[column].strip() for column in ("nir", "nom_naissance", "prenoms", "date_naissance", "sexe")
    ):
        problems.add("MISSING_FIELD")
    nir: str | None = None
    try:
        nir = Nir.parse(row["nir"]).value
    except NirError as error:
        problems.add(error.reason)
    dates: dict[str, dt.date | None] = {}
    for column in ("date_naissance", "date_deces"):
        dates[column] = None
        if row[column]:
            try:
                assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", row[column])
                dates[column] = dt.date.fromisoformat(row[column])
            except (AssertionError, ValueError):
                problems.add("BAD_DATE")
    birth, death = dates["date_naissance"], dates["date_deces"]
    if birth and birth > reference_date:
        problems.add("BIRTH_IN_FUTURE")
    if birth and death and death < birth:
        problems.add("DEATH_BEFORE_BIRTH")
    if row["sexe"] not in ("M", "F"):
        problems.add("BAD_SEX")
    if row["departement"] not in RESIDENCE_DEPARTEMENTS:
        problems.add("BAD_DEPARTEMENT")
    if nir and birth and row["sexe"] in ("M", "F") and nir[0] in "12":
        if {"1": "M", "2": "F"}[nir[0]] != row["sexe"] or nir[1:3] != f"{birth.year % 100:02d}":
            problems.add("NIR_MISMATCH")
    if row["lieu_naissance"] and not INSEE_PLACE.match(row["lieu_naissance"]):
        problems.add("BAD_BIRTH_PLACE")
    if row["nir_representant"]:
        try:
            if Nir.parse(row["nir_representant"]).value == nir:
                problems.add("SELF_REPRESENTATIVE")
        except NirError:
            problems.add("BAD_REPRESENTATIVE_NIR")
    if row["email"] and not STRICT_EMAIL.match(row["email"]):
        problems.add("EMAIL_INVALID")
    if row["code_postal"] and not re.fullmatch(r"[0-9]{5}", row["code_postal"]):
        problems.add("BAD_POSTCODE")
    # Unprintable even abbreviated: a line holding a single word longer than an AFNOR line.
    if any(len(word) > 38 for n in range(2, 6) for word in row[f"adresse_ligne{n}"].split()):
        problems.add("ADDRESS_INVALID")
    return problems


def test_each_register_row_breaks_exactly_the_rule_faults_csv_names(dirty: Extract) -> None:
    faults = dirty.faults()
    rows = dirty.rows("register.csv")
    by_nir: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for line, row in rows:
        by_nir.setdefault(normalise(row["nir"]), []).append((line, row))
    seen: set[str] = set()
    for line, row in rows:
        problems = register_row_problems(row, REFERENCE_DATE)
        nir = normalise(row["nir"])
        if nir in seen:
            problems.add("DUPLICATE_IN_FILE")
        seen.add(nir)
        if row["nir_representant"] and not problems & {"BAD_REPRESENTATIVE_NIR", "SELF_REPRESENTATIVE"}:
            listed = by_nir.get(normalise(row["nir_representant"]))
            if listed is None:
                problems.add("UNKNOWN_REPRESENTATIVE")
            elif listed[0][1]["date_deces"]:
                problems.add("DECEASED_REPRESENTATIVE")
        fault = faults.get(("register.csv", line))
        assert problems == ({fault["fault"]} if fault else set()), f"register.csv line {line}: {fault}"
        if fault:
            assert fault["key"] == nir


def test_a_representative_never_carries_a_fault(dirty: Extract) -> None:
    """A faulty representative would orphan the people they represent: one fault, one row."""
    listed = {line for (file, line) in dirty.faults() if file == "register.csv"}
    rows = dirty.rows("register.csv")
    representatives = {
        normalise(row["nir_representant"])
        for line, row in rows
        if row["nir_representant"] and line not in listed
    }
    assert representatives
    assert not [line for line, row in rows if line in listed and normalise(row["nir"]) in representatives]


# The DMP extract ------------------------------------------------------------------------------------


def chain_problems(documents: list[dict[str, str]]) -> dict[str, str]:
    """entry_uuid -> CHAIN_CYCLE / CHAIN_MISSING_LINK for every version of a broken chain in one DMP."""
    by_uuid = {document["entry_uuid"]: document for document in documents}
    neighbours: dict[str, set[str]] = {uuid: set() for uuid in by_uuid}
    for document in documents:
        if document["replaces"] in by_uuid:
            neighbours[document["entry_uuid"]].add(document["replaces"])
            neighbours[document["replaces"]].add(document["entry_uuid"])
    problems: dict[str, str] = {}
    done: set[str] = set()
    for start in by_uuid:
        if start in done:
            continue
        chain, todo = set(), [start]
        while todo:
            uuid = todo.pop()
            if uuid not in chain:
                chain.add(uuid)
                todo.extend(neighbours[uuid])
        done |= chain
        problem = None
        if any(by_uuid[uuid]["replaces"] and by_uuid[uuid]["replaces"] not in by_uuid for uuid in chain):
            problem = "CHAIN_MISSING_LINK"
        elif all(by_uuid[uuid]["replaces"] for uuid in chain) and len(chain) > 1:
            problem = "CHAIN_CYCLE"
        if problem:
            problems.update(dict.fromkeys(chain, problem))
    return problems


def document_problems(document: dict[str, str], folder: Path, birth: dt.date) -> set[str]:
    problems: set[str] = set()
    if document["type_code"] not in TYPE_CODES:
        problems.add("UNKNOWN_TYPE_CODE")
    elif TYPE_CODES[document["type_code"]] != document["class_code"]:
        problems.add("CLASS_TYPE_MISMATCH")
    codes = document["confidentiality"].split("|")
    if len([code for code in codes if code in LEVELS]) != 1 or not set(codes) <= LEVELS | FLAGS:
        problems.add("BAD_CONFIDENTIALITY")
    creation = dt.datetime.fromisoformat(document["creation_time"])
    assert creation.utcoffset() is not None, "timestamps carry an offset"
    if creation.date() > REFERENCE_DATE:
        problems.add("DATE_IN_FUTURE")
    if creation.date() < birth:
        problems.add("DATE_BEFORE_BIRTH")
    content = folder / document["content_path"]
    if not content.is_file():
        problems.add("CONTENT_MISSING")
    else:
        data = content.read_bytes()
        if len(data) != int(document["size"]):
            problems.add("SIZE_MISMATCH")
        if hashlib.sha1(data, usedforsecurity=False).hexdigest() != document["hash"]:
            problems.add("HASH_MISMATCH")
    if document["status"] == "Deleted":
        problems.add("DELETED")
    return problems


def dmp_problems(dmp: dict[str, str], person: dict[str, str]) -> set[str]:
    problems: set[str] = set()
    if dt.datetime.fromisoformat(dmp["created_at"]).date() >= DMP_CUTOFF:
        problems.add("DMP_AFTER_CUTOFF")
    if (dmp["date_naissance"], dmp["sexe"]) != (person["date_naissance"], person["sexe"]):
        problems.add("IDENTITY_MISMATCH")
    return problems


def check_dmp_extract(extract: Extract) -> Counter[str]:
    """Every DMP and document breaks exactly the rule faults.csv names, or none; returns the kinds met."""
    faults = extract.faults()
    folder = extract.out / "dmp"
    people = {normalise(row["nir"]): row for row in clean_register_rows(extract)}
    dmps = {row["dmp_id"]: (line, row) for line, row in extract.rows("dmp/dmp.csv")}
    documents_of: dict[str, list[tuple[int, dict[str, str]]]] = {dmp_id: [] for dmp_id in dmps}
    for line, document in extract.rows("dmp/documents.csv"):
        documents_of[document["dmp_id"]].append((line, document))
    met: Counter[str] = Counter()
    for dmp_id, (dmp_line, dmp) in dmps.items():
        person = people[dmp["nir"]]
        whole = dmp_problems(dmp, person)
        dmp_fault = faults.get(("dmp.csv", dmp_line))
        assert whole == ({dmp_fault["fault"]} if dmp_fault else set()), f"dmp.csv line {dmp_line}"
        if whole:
            assert not person["date_deces"], "faults only where a space will be created"
        birth = dt.date.fromisoformat(person["date_naissance"])
        documents = [document for _, document in documents_of[dmp_id]]
        chains = chain_problems(documents)
        unique_ids: set[str] = set()
        replaced = {document["replaces"] for document in documents}
        for line, document in documents_of[dmp_id]:
            problems = whole | document_problems(document, folder, birth)
            if document["entry_uuid"] in chains:
                problems.add(chains[document["entry_uuid"]])
            if document["unique_id"] in unique_ids:
                problems.add("DUPLICATE")
            unique_ids.add(document["unique_id"])
            fault = faults.get(("documents.csv", line))
            assert problems == ({fault["fault"]} if fault else set()), f"documents.csv line {line}: {fault}"
            if fault:
                met[fault["fault"]] += 1
                assert fault["key"] == document["entry_uuid"]
            else:
                assert (document["author_role"] == "PATIENT") == (document["type_code"] == "DOCPAT01")
                assert (document["status"] == "Deprecated") == (document["entry_uuid"] in replaced)
                assert dt.datetime.fromisoformat(document["service_start_time"]) <= dt.datetime.fromisoformat(
                    document["creation_time"]
                )
        met.update(whole)
        assert 5 <= len(documents) <= 20
    return met


def test_clean_extract_lists_only_natural_anomalies_and_each_of_them(clean: Extract) -> None:
    met = check_dmp_extract(clean)
    assert set(clean.summary.faults) == {"EMAIL_INVALID", *NATURAL_DMP_ANOMALIES}
    assert set(met) == set(NATURAL_DMP_ANOMALIES)


def test_each_dmp_document_breaks_exactly_the_rule_faults_csv_names(dirty: Extract) -> None:
    met = check_dmp_extract(dirty)
    assert set(met) == set(DMP_FAULTS) | set(NATURAL_DMP_ANOMALIES)


def test_about_fifteen_percent_of_people_have_a_dmp_of_eight_documents(clean: Extract) -> None:
    assert 0.12 < clean.summary.dmps / clean.summary.persons < 0.18
    assert 6 < clean.summary.documents / clean.summary.dmps < 10
    assert clean.summary.content_bytes < 5_000 * clean.summary.documents
    documents = [row for _, row in clean.rows("dmp/documents.csv")]
    assert {row["type_code"] for row in documents} == set(TYPE_CODES)
    assert {row["author_role"] for row in documents} == {"PS", "PATIENT", "ETABLISSEMENT", "SYSTEME"}
    assert {row["status"] for row in documents} == {"Approved", "Deprecated", "Archived", "Deleted"}
    assert {flag for row in documents for flag in row["confidentiality"].split("|")} == LEVELS | FLAGS
    assert {row["mime_type"] for row in documents} == {"application/pdf", "text/xml"}


def test_every_fault_kind_appears_when_dirty_with_its_expected_code(dirty: Extract) -> None:
    faults = list(dirty.faults().values())
    assert {row["fault"] for row in faults} == set(REGISTER_FAULTS) | set(DMP_FAULTS) | set(
        NATURAL_DMP_ANOMALIES
    )
    codes = {
        code.value for enum in (RegisterReason, RegisterWarning, HoldBackReason, SkipReason) for code in enum
    }
    for row in faults:
        assert row["expected"] == EXPECTED[row["fault"]] in codes
    assert all(kind == code or kind == "BAD_POSTCODE" for kind, code in EXPECTED.items())


# Determinism ----------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_bytes(tmp_path: Path) -> None:
    digests = []
    for name, seed in (("first", 5), ("again", 5), ("other", 6)):
        generate(1000, seed=seed, out=tmp_path / name, dirty=0.01)
        digests.append(tree_digest(tmp_path / name))
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]


def test_a_second_run_into_the_same_folder_leaves_no_stale_content(tmp_path: Path) -> None:
    generate(1000, seed=5, out=tmp_path / "fresh")
    generate(1000, seed=6, out=tmp_path / "reused")
    generate(1000, seed=5, out=tmp_path / "reused")
    assert tree_digest(tmp_path / "fresh") == tree_digest(tmp_path / "reused")


def test_without_dmp_the_register_is_the_same_and_the_dmp_files_are_empty(tmp_path: Path) -> None:
    with_dmp = generate(1000, seed=8, out=tmp_path / "with")
    without = generate(1000, seed=8, out=tmp_path / "without", with_dmp=False)
    assert (tmp_path / "with" / "register.csv").read_bytes() == (
        tmp_path / "without" / "register.csv"
    ).read_bytes()
    assert without.dmps == without.documents == 0 and with_dmp.dmps > 0
    assert read_csv(tmp_path / "without" / "dmp" / "documents.csv") == []
    assert header_of(tmp_path / "without" / "dmp" / "documents.csv") == DOCUMENTS_HEADER


@settings(max_examples=200, deadline=None)
@given(
    sex=st.sampled_from("1278"),
    birth=st.dates(dt.date(1900, 1, 1), dt.date(2022, 12, 31)),
    place=st.sampled_from(["01053", "2A004", "2B033", "97411", "97501", "97611", "99350", "75056"]),
    draws=st.integers(1, 30),
)
def test_allocated_nirs_are_valid_unique_and_agree_with_the_traits(
    sex: str, birth: dt.date, place: str, draws: int
) -> None:
    allocator = NirAllocator(seed=1)
    issued = [allocator.allocate(sex, birth, place) for _ in range(draws)]
    assert len(set(issued)) == draws
    for nir in issued:
        assert Nir.parse(nir).value == nir
        assert stdnum_nir.is_valid(nir)
        assert (nir[0], nir[1:3], nir[3:5], nir[5:10]) == (
            sex,
            f"{birth.year % 100:02d}",
            f"{birth.month:02d}",
            place,
        )
