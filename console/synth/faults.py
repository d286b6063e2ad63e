"""The faults the generator plants in its extracts, the code the pipeline must give each, and faults.csv."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from random import Random
from types import TracebackType

from mes_rollout.constants import HoldBackReason, RegisterReason, RegisterWarning, SkipReason

FAULTS_COLUMNS = ("file", "line", "key", "fault", "expected")
REGISTER_FILE = "register.csv"
DMP_FILE = "dmp.csv"
DOCUMENTS_FILE = "documents.csv"

# Each fault kind is named after the code the pipeline must give it. The mapping is spelled out so
# that renaming a constant breaks the generator at import time, not a test much later.
EXPECTED: dict[str, str] = {
    "NIR_KEY": RegisterReason.NIR_KEY.value,
    "NIR_LENGTH": RegisterReason.NIR_LENGTH.value,
    "NIR_SHAPE": RegisterReason.NIR_SHAPE.value,
    "NIR_SEX": RegisterReason.NIR_SEX.value,
    "NIR_MONTH": RegisterReason.NIR_MONTH.value,
    "NIR_PLACE": RegisterReason.NIR_PLACE.value,
    "NIR_ORDER": RegisterReason.NIR_ORDER.value,
    "NIR_MISMATCH": RegisterReason.NIR_MISMATCH.value,
    "MISSING_FIELD": RegisterReason.MISSING_FIELD.value,
    "BAD_DATE": RegisterReason.BAD_DATE.value,
    "BIRTH_IN_FUTURE": RegisterReason.BIRTH_IN_FUTURE.value,
    "DEATH_BEFORE_BIRTH": RegisterReason.DEATH_BEFORE_BIRTH.value,
    "BAD_SEX": RegisterReason.BAD_SEX.value,
    "BAD_DEPARTEMENT": RegisterReason.BAD_DEPARTEMENT.value,
    "BAD_BIRTH_PLACE": RegisterReason.BAD_BIRTH_PLACE.value,
    "DUPLICATE_IN_FILE": RegisterReason.DUPLICATE_IN_FILE.value,
    "BAD_REPRESENTATIVE_NIR": RegisterReason.BAD_REPRESENTATIVE_NIR.value,
    "SELF_REPRESENTATIVE": RegisterReason.SELF_REPRESENTATIVE.value,
    "UNKNOWN_REPRESENTATIVE": RegisterReason.UNKNOWN_REPRESENTATIVE.value,
    "DECEASED_REPRESENTATIVE": RegisterReason.DECEASED_REPRESENTATIVE.value,
    "EMAIL_INVALID": RegisterWarning.EMAIL_INVALID.value,
    "ADDRESS_INVALID": RegisterWarning.ADDRESS_INVALID.value,
    # A postcode that is not 5 digits leaves the person loaded with an address that cannot be printed.
    "BAD_POSTCODE": RegisterWarning.ADDRESS_INVALID.value,
    "HASH_MISMATCH": HoldBackReason.HASH_MISMATCH.value,
    "SIZE_MISMATCH": HoldBackReason.SIZE_MISMATCH.value,
    "CONTENT_MISSING": HoldBackReason.CONTENT_MISSING.value,
    "CHAIN_MISSING_LINK": HoldBackReason.CHAIN_MISSING_LINK.value,
    "CHAIN_CYCLE": HoldBackReason.CHAIN_CYCLE.value,
    "UNKNOWN_TYPE_CODE": HoldBackReason.UNKNOWN_TYPE_CODE.value,
    "CLASS_TYPE_MISMATCH": HoldBackReason.CLASS_TYPE_MISMATCH.value,
    "BAD_CONFIDENTIALITY": HoldBackReason.BAD_CONFIDENTIALITY.value,
    "DATE_IN_FUTURE": HoldBackReason.DATE_IN_FUTURE.value,
    "DATE_BEFORE_BIRTH": HoldBackReason.DATE_BEFORE_BIRTH.value,
    "IDENTITY_MISMATCH": HoldBackReason.IDENTITY_MISMATCH.value,
    "DMP_AFTER_CUTOFF": HoldBackReason.DMP_AFTER_CUTOFF.value,
    "DELETED": SkipReason.DELETED.value,
    "DUPLICATE": SkipReason.DUPLICATE.value,
}

# Register faults carried by one person's row, whoever the person is (never a representative).
PERSON_FAULTS = (
    "NIR_KEY",
    "NIR_LENGTH",
    "NIR_SHAPE",
    "NIR_SEX",
    "NIR_MONTH",
    "NIR_PLACE",
    "NIR_ORDER",
    "NIR_MISMATCH",
    "MISSING_FIELD",
    "BAD_DATE",
    "BIRTH_IN_FUTURE",
    "DEATH_BEFORE_BIRTH",
    "BAD_SEX",
    "BAD_DEPARTEMENT",
    "BAD_POSTCODE",
    "BAD_BIRTH_PLACE",
    "DUPLICATE_IN_FILE",
    "BAD_REPRESENTATIVE_NIR",
    "SELF_REPRESENTATIVE",
    "EMAIL_INVALID",
    "ADDRESS_INVALID",
)
# Faults that need a postal address on the row to be planted in.
POSTAL_FAULTS = frozenset({"BAD_POSTCODE", "ADDRESS_INVALID"})
# Faults that need a representative on the row (a minor, a protected adult).
REPRESENTED_FAULTS = frozenset({"BAD_REPRESENTATIVE_NIR", "SELF_REPRESENTATIVE"})
# The pipeline compares sex and birth year with the NIR only for permanent numbers (1/2), not 7/8.
PERMANENT_NIR_FAULTS = frozenset({"NIR_MISMATCH"})
# Register faults that shape a whole household (a child and its representative).
HOUSEHOLD_FAULTS = ("UNKNOWN_REPRESENTATIVE", "DECEASED_REPRESENTATIVE")
REGISTER_FAULTS = PERSON_FAULTS + HOUSEHOLD_FAULTS

# DMP faults carried by one stand-alone document.
DOCUMENT_FAULTS = (
    "HASH_MISMATCH",
    "SIZE_MISMATCH",
    "CONTENT_MISSING",
    "UNKNOWN_TYPE_CODE",
    "CLASS_TYPE_MISMATCH",
    "BAD_CONFIDENTIALITY",
    "DATE_IN_FUTURE",
    "DATE_BEFORE_BIRTH",
)
# DMP faults carried by every version of one replacement chain.
CHAIN_FAULTS = ("CHAIN_MISSING_LINK", "CHAIN_CYCLE")
# DMP faults that hold back the DMP row and every one of its documents.
WHOLE_DMP_FAULTS = ("IDENTITY_MISMATCH", "DMP_AFTER_CUTOFF")
DMP_FAULTS = DOCUMENT_FAULTS + CHAIN_FAULTS + WHOLE_DMP_FAULTS

# Anomalies that real extracts carry whatever the --dirty rate: listed in faults.csv all the same.
NATURAL_REGISTER_ANOMALIES = ("EMAIL_INVALID",)
NATURAL_DMP_ANOMALIES = ("DELETED", "DUPLICATE", "DMP_AFTER_CUTOFF")


class FaultDispenser:
    """Decides which rows carry an injected fault.

    Each opportunity (a register row, a document) is faulty with probability `rate`; the kind is
    taken round-robin through a shuffled cycle, so that every kind shows up once enough faults are
    due. A kind the current row cannot carry (a household fault on a lone adult) waits in
    `pending` for the next row that can.
    """

    def __init__(self, kinds: Sequence[str], rate: float, rng: Random) -> None:
        self._kinds = tuple(kinds)
        self._rate = rate
        self._rng = rng
        self._cycle: list[str] = []
        self._pending: list[str] = []
        self._requested: Counter[str] = Counter()

    def tick(self) -> None:
        """One more opportunity: maybe one more fault becomes due."""
        if self._rate > 0 and self._rng.random() < self._rate:
            self._request(self._next_kind())

    def request_missing(self) -> None:
        """Make every kind not requested so far due now: the at-least-one-of-each guarantee."""
        if self._rate > 0:
            for kind in self._kinds:
                if not self._requested[kind]:
                    self._request(kind)

    def take(self, hostable: Collection[str]) -> str | None:
        """The oldest due fault among `hostable`, now planted by the caller; None if none is due."""
        for index, kind in enumerate(self._pending):
            if kind in hostable:
                del self._pending[index]
                return kind
        return None

    def _request(self, kind: str) -> None:
        self._requested[kind] += 1
        self._pending.append(kind)

    def _next_kind(self) -> str:
        if not self._cycle:
            self._cycle = list(self._kinds)
            self._rng.shuffle(self._cycle)
        return self._cycle.pop()


class NaturalAnomalies:
    """Anomalies that occur at their own small rate in any extract (deleted documents, duplicates...).

    `force_missing()` makes the next opportunity of a kind not seen yet produce it, so that a
    population of a thousand people shows each kind at least once.
    """

    def __init__(self, rng: Random) -> None:
        self._rng = rng
        self._seen: Counter[str] = Counter()
        self._forced = False

    def due(self, kind: str, probability: float) -> bool:
        if self._rng.random() < probability or (self._forced and not self._seen[kind]):
            self._seen[kind] += 1
            return True
        return False

    def force_missing(self) -> None:
        self._forced = True


class FaultLog:
    """faults.csv: every row of the extracts that the pipeline must not accept as it is, with its code."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._stream = path.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._stream, delimiter=";", quotechar='"', lineterminator="\n")
        self._writer.writerow(FAULTS_COLUMNS)

    def add(self, file: str, line: int, key: str, kind: str) -> None:
        self._writer.writerow((file, line, key, kind, EXPECTED[kind]))
        self.counts[kind] += 1

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> FaultLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
