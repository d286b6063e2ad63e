"""The migration rules on their own: each document gets the outcome and the reason its rule says."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mes_rollout.constants import DocumentOutcome, HoldBackReason, SkipReason, VersionRole
from migration.rules import (
    Confidentiality,
    Person,
    SourceDmp,
    SourceDocument,
    classify_space,
    dmp_level_reason,
    earliest_plausible_date,
    finish_chains,
    metadata_reason,
)

AS_OF = dt.date(2022, 3, 1)
PERSON = Person("282080105300118", dt.date(1982, 8, 15), "F")
_line = iter(range(2, 10_000))


def dmp(**overrides: Any) -> SourceDmp:
    values: dict[str, Any] = {
        "dmp_id": "DMP1",
        "nir": PERSON.nir,
        "date_naissance": PERSON.date_naissance,
        "sexe": PERSON.sexe,
        "created_at": dt.datetime(2019, 3, 4, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    }
    values.update(overrides)
    return SourceDmp(**values)


def document(entry_uuid: str, **overrides: Any) -> SourceDocument:
    values: dict[str, Any] = {
        "entry_uuid": entry_uuid,
        "unique_id": f"uid-{entry_uuid}",
        "dmp_id": "DMP1",
        "type_code": "11488-4",
        "class_code": "10",
        "confidentiality": "N",
        "creation_time": dt.datetime(2020, 5, 6, 9, 0, tzinfo=dt.UTC),
        "service_start_time": dt.datetime(2020, 5, 5, 9, 0, tzinfo=dt.UTC),
        "status": "Approved",
        "replaces": None,
        "size": 10,
        "hash": "0" * 40,
        "content_path": f"content/{entry_uuid}",
        "extract_dir": "/extract",
        "line_no": next(_line),
    }
    values.update(overrides)
    return SourceDocument(**values)


def decide(*documents: SourceDocument, the_dmp: SourceDmp | None = None, already: frozenset[str] = frozenset()) -> dict[str, Any]:
    decided = classify_space(PERSON, [(the_dmp or dmp(), list(documents))], AS_OF, already)
    return {decision.entry_uuid: decision for decision, _ in decided}


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        ("N", True),
        ("R|MASQUE_PS", True),
        ("V|INVISIBLE_PATIENT|INVISIBLE_REPRESENTANTS_LEGAUX|MASQUE_PS", True),
        ("MASQUE_PS|N", True),
        ("", False),
        ("X", False),
        ("N|R", False),
        ("R|V|MASQUE_PS", False),
        ("MASQUE_PS", False),
        ("N|MASQUE_PS|MASQUE_PS", False),
        ("N |MASQUE_PS", False),
        ("n", False),
        ("N|", False),
    ],
)
def test_confidentiality_is_one_level_and_known_flags_once(raw: str, valid: bool) -> None:
    if valid:
        assert Confidentiality.parse(raw).level in "NRV"
    else:
        with pytest.raises(ValueError):
            Confidentiality.parse(raw)


@pytest.mark.parametrize(
    ("created_at", "held"),
    [
        ("2021-06-30T23:59:59+02:00", False),
        ("2021-07-01T00:00:00+02:00", True),
        ("2021-06-30T22:30:00+00:00", True),  # 00:30 on 1 July in Paris
        ("2021-06-30T20:00:00-04:00", True),  # Martinique evening = 02:00 on 1 July in Paris
        ("2021-06-30T21:59:59+00:00", False),
        ("2022-01-10T10:00:00+01:00", True),
    ],
)
def test_the_cutoff_is_1_july_2021_in_paris(created_at: str, held: bool) -> None:
    reason = dmp_level_reason(dmp(created_at=dt.datetime.fromisoformat(created_at)), PERSON)
    assert (reason == HoldBackReason.DMP_AFTER_CUTOFF) is held


@pytest.mark.parametrize(
    "overrides",
    [{"date_naissance": dt.date(1982, 8, 16)}, {"sexe": "M"}, {"date_naissance": None}, {"sexe": None}],
)
def test_identity_must_match_the_register(overrides: dict[str, Any]) -> None:
    assert dmp_level_reason(dmp(**overrides), PERSON) == HoldBackReason.IDENTITY_MISMATCH


def test_a_whole_dmp_is_held_back_with_every_document_deleted_ones_included() -> None:
    late = dmp(created_at=dt.datetime(2021, 9, 1, tzinfo=dt.UTC))
    decisions = decide(document("a"), document("b", status="Deleted"), the_dmp=late)
    assert {(d.outcome, d.reason) for d in decisions.values()} == {
        (DocumentOutcome.HELD_BACK, HoldBackReason.DMP_AFTER_CUTOFF)
    }


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"type_code": "XX-DOC"}, HoldBackReason.UNKNOWN_TYPE_CODE),
        ({"type_code": ""}, HoldBackReason.UNKNOWN_TYPE_CODE),
        ({"class_code": "31"}, HoldBackReason.CLASS_TYPE_MISMATCH),
        ({"confidentiality": "N|R"}, HoldBackReason.BAD_CONFIDENTIALITY),
        ({"creation_time": dt.datetime(2022, 3, 1, 23, 30, tzinfo=dt.UTC)}, HoldBackReason.DATE_IN_FUTURE),
        ({"service_start_time": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}, HoldBackReason.DATE_IN_FUTURE),
        ({"creation_time": dt.datetime(1981, 8, 14, tzinfo=dt.UTC)}, HoldBackReason.DATE_BEFORE_BIRTH),
        ({"service_start_time": dt.datetime(1970, 1, 1, tzinfo=dt.UTC)}, HoldBackReason.DATE_BEFORE_BIRTH),
    ],
)
def test_a_documents_own_metadata_holds_it_back(overrides: dict[str, Any], reason: HoldBackReason) -> None:
    assert metadata_reason(document("a", **overrides), PERSON.date_naissance, AS_OF) == reason


@pytest.mark.parametrize(
    "overrides",
    [
        {"creation_time": dt.datetime(2022, 3, 1, 22, 30, tzinfo=dt.UTC)},  # 23:30 in Paris: still today
        {"service_start_time": dt.datetime(1982, 2, 1, tzinfo=dt.UTC)},  # prenatal care
        {"creation_time": None, "service_start_time": None},
        {"confidentiality": "V|INVISIBLE_PATIENT"},
        {"type_code": "DOCPAT01", "class_code": "90"},
    ],
)
def test_plausible_metadata_passes(overrides: dict[str, Any]) -> None:
    assert metadata_reason(document("a", **overrides), PERSON.date_naissance, AS_OF) is None


def test_prenatal_tolerance_is_one_year() -> None:
    assert earliest_plausible_date(dt.date(1982, 8, 15)) == dt.date(1981, 8, 15)
    assert earliest_plausible_date(dt.date(2000, 2, 29)) == dt.date(1999, 2, 28)


def test_a_chain_of_three_is_carried_whole_newest_current() -> None:
    decisions = decide(document("v1"), document("v3", replaces="v2"), document("v2", replaces="v1"))
    assert {uuid: d.version_role for uuid, d in decisions.items()} == {
        "v1": VersionRole.SUPERSEDED,
        "v2": VersionRole.SUPERSEDED,
        "v3": VersionRole.CURRENT,
    }
    assert {d.chain_head for d in decisions.values()} == {"v3"}
    assert all(d.outcome == DocumentOutcome.MIGRATED for d in decisions.values())


@pytest.mark.parametrize(
    ("documents", "reason"),
    [
        ([document("c1", replaces="c2"), document("c2", replaces="c1")], HoldBackReason.CHAIN_CYCLE),
        ([document("c1", replaces="c3"), document("c2", replaces="c1"), document("c3", replaces="c2")], HoldBackReason.CHAIN_CYCLE),
        ([document("c1", replaces="c1")], HoldBackReason.CHAIN_CYCLE),
        ([document("m1", replaces="absent"), document("m2", replaces="m1")], HoldBackReason.CHAIN_MISSING_LINK),
        ([document("f1"), document("f2", replaces="f1"), document("f3", replaces="f1")], HoldBackReason.CHAIN_FORK),
    ],
)
def test_a_broken_chain_is_held_back_whole(documents: list[SourceDocument], reason: HoldBackReason) -> None:
    decisions = decide(*documents, document("alone"))
    assert decisions.pop("alone").outcome == DocumentOutcome.MIGRATED
    assert {(d.outcome, d.reason) for d in decisions.values()} == {(DocumentOutcome.HELD_BACK, reason)}


def test_a_deleted_version_is_skipped_and_the_rest_of_the_chain_carried() -> None:
    decisions = decide(
        document("v1"), document("v2", replaces="v1", status="Deleted"), document("v3", replaces="v2")
    )
    assert (decisions["v2"].outcome, decisions["v2"].reason) == (DocumentOutcome.SKIPPED, SkipReason.DELETED)
    assert decisions["v1"].version_role == VersionRole.SUPERSEDED
    assert decisions["v3"].version_role == VersionRole.CURRENT
    # The newest version deleted: the newest one left is current.
    decisions = decide(document("w1"), document("w2", replaces="w1", status="Deleted"))
    assert decisions["w1"].version_role == VersionRole.CURRENT and decisions["w1"].chain_head == "w1"


def test_one_bad_version_holds_back_its_whole_chain() -> None:
    decisions = decide(document("v1"), document("v2", replaces="v1", class_code="11"), document("v3", replaces="v2"))
    assert decisions["v2"].reason == HoldBackReason.CLASS_TYPE_MISMATCH
    assert decisions["v1"].reason == decisions["v3"].reason == HoldBackReason.CHAIN_VERSION_HELD_BACK


def test_a_content_failure_found_later_holds_back_its_chain() -> None:
    decided = classify_space(PERSON, [(dmp(), [document("v1"), document("v2", replaces="v1"), document("x")])], AS_OF)
    by_uuid = {decision.entry_uuid: decision for decision, _ in decided}
    by_uuid["v1"].hold_back(HoldBackReason.HASH_MISMATCH)
    finish_chains(decided)
    assert by_uuid["v2"].reason == HoldBackReason.CHAIN_VERSION_HELD_BACK
    assert by_uuid["x"].outcome == DocumentOutcome.MIGRATED


def test_duplicates_keep_the_first_in_the_extract() -> None:
    first, copy = document("first", unique_id="U"), document("copy", unique_id="U")
    decisions = decide(first, copy)
    assert decisions["first"].outcome == DocumentOutcome.MIGRATED
    assert (decisions["copy"].outcome, decisions["copy"].reason) == (DocumentOutcome.SKIPPED, SkipReason.DUPLICATE)


def test_a_unique_id_already_in_the_space_is_a_duplicate() -> None:
    decisions = decide(document("again", unique_id="U"), already=frozenset({"U"}))
    assert decisions["again"].reason == SkipReason.DUPLICATE


def test_a_deleted_copy_is_deleted_not_duplicate() -> None:
    decisions = decide(document("first", unique_id="U"), document("gone", unique_id="U", status="Deleted"))
    assert decisions["gone"].reason == SkipReason.DELETED
    assert decisions["first"].outcome == DocumentOutcome.MIGRATED


def test_duplicates_are_found_across_the_dmps_of_one_person() -> None:
    decided = classify_space(
        PERSON,
        [(dmp(dmp_id="D1"), [document("a", unique_id="U", dmp_id="D1")]), (dmp(dmp_id="D2"), [document("b", unique_id="U", dmp_id="D2")])],
        AS_OF,
    )
    assert [(d.entry_uuid, d.outcome) for d, _ in decided] == [
        ("a", DocumentOutcome.MIGRATED),
        ("b", DocumentOutcome.SKIPPED),
    ]
