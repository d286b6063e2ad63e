"""NIRs for synthetic people: agreeing with sex, birth month and place, and never issued twice."""

from __future__ import annotations

import zlib
from datetime import date

from mes_rollout.nir import with_key

_ORDER_NUMBERS = 999  # 001-999: 000 is never issued
# A multiplier prime to 999 turns the n-th number issued in a series into a scattered order
# number, so that order numbers look drawn while staying unique without remembering each NIR.
_SCATTER = 379

SEX_DIGITS = {"M": "1", "F": "2"}
TEMPORARY_SEX_DIGITS = {"M": "7", "F": "8"}  # numéros d'attente given before the RNIPP registers someone


class NirAllocator:
    """Issues NIRs, unique within one population.

    Order numbers are counted per series (sex digit, birth year, birth month and the first two
    characters of the place code): a series of 999 numbers per month is plenty, and the counters
    take far less memory than a set of every NIR issued.
    """

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._issued: dict[str, int] = {}

    def allocate(self, sex_digit: str, birth: date, place: str) -> str:
        """A 15-character NIR (13 characters + key) for someone born on `birth` at INSEE `place`."""
        series = f"{sex_digit}{birth.year % 100:02d}{birth.month:02d}{place[:2]}"
        issued = self._issued.get(series, 0)
        if issued >= _ORDER_NUMBERS:
            raise ValueError("the synthetic population is too large for the NIR series it uses")
        self._issued[series] = issued + 1
        offset = zlib.crc32(f"{self._seed}:{series}".encode())
        order = (issued * _SCATTER + offset) % _ORDER_NUMBERS + 1
        return with_key(f"{series}{place[2:]}{order:03d}")


def spaced(nir: str) -> str:
    """The NIR as printed on a carte Vitale: '1 85 05 78 006 084 36'."""
    return " ".join((nir[0], nir[1:3], nir[3:5], nir[5:7], nir[7:10], nir[10:13], nir[13:]))
