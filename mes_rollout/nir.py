"""The NIR (numéro d'inscription au répertoire): parsing, full validation and masking."""

from __future__ import annotations

import re
from dataclasses import dataclass

NIR_LENGTH = 15
_SHAPE = re.compile(r"^[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}$")
_CORSICA_FOR_KEY = {"2A": "19", "2B": "18"}


class NirError(ValueError):
    """The text is not a valid NIR; `reason` is a stable code for quarantine."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def normalise(raw: str) -> str:
    """Spaces removed, letters in capitals: the form NIRs are stored and compared in."""
    return "".join(raw.split()).upper()


def compute_key(number13: str) -> int:
    """The control key of the 13-character number: 97 - (number mod 97), 2A read as 19, 2B as 18."""
    digits = number13[:5] + _CORSICA_FOR_KEY.get(number13[5:7], number13[5:7]) + number13[7:]
    return 97 - int(digits) % 97


def _check_place(number13: str) -> None:
    department = number13[5:7]
    if department in _CORSICA_FOR_KEY:
        return
    if department == "00":
        raise NirError("NIR_PLACE", "birth département 00 does not exist")
    if department in ("97", "98"):
        if number13[7] == "0":
            raise NirError("NIR_PLACE", f"overseas birth place {number13[5:10]} has no territory digit")
        return
    if number13[7:10] == "000":
        raise NirError("NIR_PLACE", f"birth commune or country 000 in {number13[5:10]}")


@dataclass(frozen=True)
class Nir:
    """A NIR that passed every check: shape, sex digit, month, place code and key."""

    value: str

    @classmethod
    def parse(cls, raw: str) -> Nir:
        value = normalise(raw)
        if len(value) != NIR_LENGTH:
            raise NirError("NIR_LENGTH", f"a NIR has {NIR_LENGTH} characters, not {len(value)}")
        if not _SHAPE.match(value):
            raise NirError("NIR_SHAPE", "a NIR is digits, with 2A or 2B only as the birth département")
        if value[0] not in "1278":
            raise NirError("NIR_SEX", f"sex digit {value[0]} is not 1, 2, 7 or 8")
        month = int(value[3:5])
        if not (1 <= month <= 12 or 20 <= month <= 42 or 50 <= month <= 99):
            raise NirError("NIR_MONTH", f"birth month {value[3:5]} is not 01-12, 20-42 or 50-99")
        _check_place(value[:13])
        if value[10:13] == "000":
            raise NirError("NIR_ORDER", "order number 000 is never issued")
        if int(value[13:]) != compute_key(value[:13]):
            raise NirError("NIR_KEY", "the control key does not match the number")
        return cls(value)

    @property
    def sex_digit(self) -> str:
        return self.value[0]

    @property
    def birth_year_2(self) -> str:
        return self.value[1:3]

    @property
    def birth_month(self) -> int | None:
        """The birth month, or None where the NIR carries an unknown-month code (20-42, 50-99)."""
        month = int(self.value[3:5])
        return month if month <= 12 else None

    def masked(self) -> str:
        return mask(self.value)


def is_valid(raw: str) -> bool:
    try:
        Nir.parse(raw)
    except NirError:
        return False
    return True


def mask(nir: str) -> str:
    """What logs, reports and messages show of a NIR: sex, year and month of birth only."""
    value = normalise(nir)
    return value[:5] + "*" * max(len(value) - 5, 0)


def with_key(number13: str) -> str:
    """The 15-character NIR for a 13-character number (used by the synthetic population)."""
    return f"{number13}{compute_key(number13):02d}"
