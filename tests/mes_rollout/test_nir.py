"""The NIR rules, cross-checked against python-stdnum where it has an opinion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.fr import nir as stdnum_nir

from mes_rollout.nir import Nir, NirError, compute_key, mask, with_key


@given(
    sex=st.sampled_from("12"),
    year=st.integers(0, 99),
    month=st.integers(1, 12),
    department=st.sampled_from(["01", "13", "2A", "2B", "31", "75", "95"]),
    commune=st.integers(1, 999),
    order=st.integers(1, 999),
)
def test_key_agrees_with_stdnum_including_corsica(
    sex: str, year: int, month: int, department: str, commune: int, order: int
) -> None:
    number = f"{sex}{year:02d}{month:02d}{department}{commune:03d}{order:03d}"
    full = with_key(number)
    assert stdnum_nir.is_valid(full)
    assert Nir.parse(full).value == full
    wrong = f"{number}{(compute_key(number) % 97) + 1:02d}"
    assert not stdnum_nir.is_valid(wrong)
    with pytest.raises(NirError) as raised:
        Nir.parse(wrong)
    assert raised.value.reason == "NIR_KEY"


def test_corsica_reads_2a_as_19_and_2b_as_18() -> None:
    # 2A and 2B numbers take their keys from 19 and 18: the same digits give different keys.
    assert compute_key("185052A033048") == 97 - int("1850519033048") % 97
    assert compute_key("185052B033048") == 97 - int("1850518033048") % 97
    assert compute_key("185052A033048") != compute_key("185052B033048")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("2820819398814", "NIR_LENGTH"),
        ("28208193988140912", "NIR_LENGTH"),
        ("2820819X98814 09", "NIR_SHAPE"),
        ("2 82 08 2C 398 814 09", "NIR_SHAPE"),
        (with_key("382081939881"[:12] + "4"), "NIR_SEX"),
        (with_key("2821319398814"), "NIR_MONTH"),
        (with_key("2821919398814"), "NIR_MONTH"),
        (with_key("2824319398814"), "NIR_MONTH"),
        (with_key("2820800398814"), "NIR_PLACE"),
        (with_key("2820897098814"), "NIR_PLACE"),
        (with_key("2820819398000"), "NIR_ORDER"),
    ],
)
def test_rejections_name_their_reason(raw: str, reason: str) -> None:
    with pytest.raises(NirError) as raised:
        Nir.parse(raw)
    assert raised.value.reason == reason


@pytest.mark.parametrize(
    "number",
    ["2820819398814", "1852099112345", "7820550123001", "8991299123456", "2853097112001", "1809999217001"],
)
def test_accepted_shapes(number: str) -> None:
    # Unknown months (20-42, 50-99), temporary numbers (7, 8), overseas (97x) and abroad (99).
    assert Nir.parse(with_key(number)).value == with_key(number)


def test_spaces_are_ignored_and_mask_hides_place_and_order() -> None:
    full = with_key("2820819398814")
    spaced = f"{full[0]} {full[1:3]} {full[3:5]} {full[5:7]} {full[7:10]} {full[10:13]} {full[13:]}"
    assert Nir.parse(spaced).value == full
    assert mask(full) == full[:5] + "*" * 10
    assert full[5:] not in mask(full)
