"""Small factories for test rows and files (valid by default; override one field to break it)."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mes_rollout.contracts import REGISTER_COLUMNS
from mes_rollout.nir import with_key

_order = itertools.count(1)


def make_nir(sex: str = "2", year: int = 1982, month: int = 8, place: str = "01053", order: int | None = None) -> str:
    """A valid 15-character NIR: sex digit, birth year and month, INSEE place, order number, key."""
    if order is None:
        # Drawn: orders 001-999 in turn, so any 999 NIRs drawn in a row are distinct (`% 1000 or 1`
        # gave 001 twice at each wrap: a duplicate NIR in whichever test drew across it).
        order = (next(_order) - 1) % 999 + 1
    return with_key(f"{sex}{year % 100:02d}{month:02d}{place}{order % 1000 or 1:03d}")


def person_row(**overrides: Any) -> dict[str, str]:
    """A register row of a living adult in Ain (01) with an email and a printable address."""
    birth = str(overrides.pop("date_naissance", "1982-08-15"))
    nir_birth = birth if birth[4:5] == "-" and birth[7:8] == "-" else "1982-08-15"
    sexe = str(overrides.pop("sexe", "F"))
    row = {
        "nir": make_nir("2" if sexe == "F" else "1", int(nir_birth[:4]), int(nir_birth[5:7])),
        "nom_naissance": "Martin",
        "nom_usage": "",
        "prenoms": "Camille Anne",
        "date_naissance": birth,
        "sexe": sexe,
        "lieu_naissance": "01053",
        "email": "camille.martin@example.fr",
        "adresse_ligne2": "",
        "adresse_ligne3": "",
        "adresse_ligne4": "12 rue des Lilas",
        "adresse_ligne5": "",
        "code_postal": "01000",
        "commune": "Bourg-en-Bresse",
        "departement": "01",
        "nir_representant": "",
        "date_deces": "",
    }
    row.update({key: str(value) for key, value in overrides.items()})
    return row


def write_csv(path: Path, rows: Iterable[Mapping[str, str]], columns: Iterable[str] = REGISTER_COLUMNS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(columns), delimiter=";", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path
