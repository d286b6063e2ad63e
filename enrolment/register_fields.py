"""What a register row is made of: its columns, the staged person's columns, and the values some fields may hold.

Shared by the row rules (`enrolment.register`) and the column check of ordinary rows
(`enrolment.register_columns`), which must agree on them.
"""

from __future__ import annotations

import re

from mes_rollout.contracts import REGISTER_COLUMNS

REQUIRED = ("nir", "nom_naissance", "prenoms", "date_naissance", "sexe", "departement")
OPTIONAL = tuple(column for column in REGISTER_COLUMNS if column not in REQUIRED)
STAGED_COLUMNS = (
    "line_no",
    "nir",
    "nom_naissance",
    "nom_usage",
    "prenom",
    "prenoms",
    "date_naissance",
    "sexe",
    "lieu_naissance",
    "email",
    "adresse_ligne2",
    "adresse_ligne3",
    "adresse_ligne4",
    "adresse_ligne5",
    "code_postal",
    "commune",
    "address_problem",
    "departement",
    "nir_representant",
    "date_deces",
)
PERSON_COLUMNS = STAGED_COLUMNS[1:]

EMAIL: re.Pattern[str] = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
DEPARTEMENTS: frozenset[str] = frozenset(
    [f"{n:02d}" for n in range(1, 20)] + [f"{n:02d}" for n in range(21, 96)] + ["2A", "2B"]
    + [str(n) for n in range(971, 977)]
)
