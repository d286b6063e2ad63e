"""The DMP's reference codes shared by the migration, its validation and the synthetic extract:
document types with their class, and the confidentiality vocabulary."""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

# A copy of the contract's table (type_code;label;class_code;seed_category), versioned with the code.
TYPE_CODES_FILE = Path(__file__).with_name("data") / "dmp_type_codes.csv"
CONFIDENTIALITY_LEVELS = frozenset({"N", "R", "V"})
CONFIDENTIALITY_FLAGS = frozenset({"MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"})


@lru_cache(maxsize=1)
def type_code_classes() -> dict[str, str]:
    """type_code -> the class_code it belongs to."""
    with TYPE_CODES_FILE.open(encoding="utf-8", newline="") as stream:
        return {row["type_code"]: row["class_code"] for row in csv.DictReader(stream, delimiter=";")}
