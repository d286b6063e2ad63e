"""Where synthetic people live and were born: residence départements, postcodes, INSEE place codes."""

from __future__ import annotations

from bisect import bisect
from itertools import accumulate
from random import Random

METROPOLITAN_DEPARTEMENTS = tuple(f"{number:02d}" for number in range(1, 96) if number != 20) + ("2A", "2B")
OVERSEAS_DEPARTEMENTS = ("971", "972", "973", "974", "975", "976")
RESIDENCE_DEPARTEMENTS = METROPOLITAN_DEPARTEMENTS + OVERSEAS_DEPARTEMENTS

# Tests run a wave over départements 01 and 02: they are weighted so that together they hold about
# 10 % of the population (5 % each, a few hundred people each in 5 000); the 100 other
# départements share the remaining 90 % evenly.
WAVE_TEST_DEPARTEMENTS = ("01", "02")
WAVE_TEST_SHARE = 0.10
_RESIDENCE_CUMULATIVE = tuple(
    accumulate(
        WAVE_TEST_SHARE / len(WAVE_TEST_DEPARTEMENTS)
        if departement in WAVE_TEST_DEPARTEMENTS
        else (1 - WAVE_TEST_SHARE) / (len(RESIDENCE_DEPARTEMENTS) - len(WAVE_TEST_DEPARTEMENTS))
        for departement in RESIDENCE_DEPARTEMENTS
    )
)

# INSEE codes of countries of birth (the NIR of a person born abroad carries 99 + this code).
_COUNTRIES_OF_BIRTH = (
    "109",  # Allemagne
    "114",  # Roumanie
    "122",  # Pologne
    "127",  # Italie
    "131",  # Belgique
    "132",  # Royaume-Uni
    "134",  # Espagne
    "139",  # Portugal
    "140",  # Suisse
    "208",  # Turquie
    "216",  # Chine
    "243",  # Viet Nam
    "322",  # Cameroun
    "326",  # Côte d'Ivoire
    "336",  # Haïti
    "341",  # Sénégal
    "350",  # Maroc
    "351",  # Tunisie
    "352",  # Algérie
)
ABROAD = "99"

# Shares of birth places: the département of residence, another metropolitan one, overseas, abroad.
_BORN_WHERE_THEY_LIVE = 0.55
_BORN_ELSEWHERE_IN_METROPOLE = 0.32
_BORN_OVERSEAS = 0.03


def residence_departement(rng: Random) -> str:
    """Any valid département of residence; 01 and 02 together hold about 10 % of people (see above)."""
    return RESIDENCE_DEPARTEMENTS[bisect(_RESIDENCE_CUMULATIVE, rng.random() * _RESIDENCE_CUMULATIVE[-1])]


def postcode(departement: str, rng: Random) -> str:
    """A 5-digit postcode of the département: Corsica 200xx/201xx (2A) and 202xx/206xx (2B), 97x xx."""
    if departement == "2A":
        return f"20{rng.choice('01')}{rng.randrange(0, 100, 10):02d}"
    if departement == "2B":
        return f"20{rng.choice('26')}{rng.randrange(0, 100, 10):02d}"
    if departement == "975":
        return "97500"
    if len(departement) == 3:
        return f"{departement}{rng.randrange(0, 100, 10):02d}"
    if departement == "75":
        return f"750{rng.randint(1, 20):02d}"
    return f"{departement}{rng.randrange(0, 1000, 10):03d}"


def departement_of_postcode(code: str) -> str:
    """The département a well-formed postcode belongs to (the inverse of `postcode`)."""
    if code.startswith("20"):
        return "2A" if code[2] in "01" else "2B"
    if code.startswith("97"):
        return code[:3]
    return code[:2]


def commune_code(departement: str, rng: Random) -> str:
    """A 5-character INSEE commune code in the département (97x: territory digit + 2-digit commune)."""
    if departement == "975":
        return f"9750{rng.randint(1, 2)}"
    if len(departement) == 3:
        return f"{departement}{rng.randint(1, 34):02d}"
    if departement in ("2A", "2B"):
        return f"{departement}{rng.randint(1, 366):03d}"
    return f"{departement}{rng.randint(1, 899):03d}"


def birth_place(residence: str, rng: Random) -> str:
    """The INSEE code of a birth place (5 characters), biased towards the département of residence."""
    draw = rng.random()
    if draw < _BORN_WHERE_THEY_LIVE:
        return commune_code(residence, rng)
    draw -= _BORN_WHERE_THEY_LIVE
    if draw < _BORN_ELSEWHERE_IN_METROPOLE:
        return commune_code(rng.choice(METROPOLITAN_DEPARTEMENTS), rng)
    draw -= _BORN_ELSEWHERE_IN_METROPOLE
    if draw < _BORN_OVERSEAS:
        return commune_code(rng.choice(OVERSEAS_DEPARTEMENTS), rng)
    return ABROAD + rng.choice(_COUNTRIES_OF_BIRTH)


def is_abroad(place: str) -> bool:
    return place.startswith(ABROAD)
