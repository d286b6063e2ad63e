"""The French postal address (AFNOR NF Z10-011) as a value object: normalised, checked, printable.

An envelope address is at most 6 lines of at most 38 characters: the recipient (line 1), then the
register's lines 2 to 5 (complement of identity, of location, number and street, lieu-dit or post
box), then "POSTCODE LOCALITY". Lines are written as La Poste's address-normalisation (RNVP)
writes them: capitals without accents, no punctuation, hyphens and apostrophes as spaces, empty
lines dropped; a line that is too long is first shortened with La Poste's standard abbreviations.
An address that still does not fit says why in `problems`, and is not printed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property

MAX_LINES = 6
MAX_LINE_LENGTH = 38
_POSTCODE = re.compile(r"^[0-9]{5}$")
# Postcode areas that exist: départements 01-95 (Corsica keeps 20 in its postcodes, 200xx-206xx),
# the overseas départements 971-976 (Saint-Barthélemy and Saint-Martin use 971xx), and Monaco and
# the Pacific collectivities served by La Poste (980, 986-988). Public, as KEPT_CHARACTER: the
# register's column check (enrolment/register_columns.py) runs the same patterns in RE2.
POSTCODE_AREA = re.compile(r"^(?:0[1-9]|1[0-9]|20[0-6]|2[1-9]|[3-8][0-9]|9[0-5]|97[1-6]|98[0678])")
_LIGATURES = str.maketrans({"Œ": "OE", "œ": "oe", "Æ": "AE", "æ": "ae", "ß": "ss"})
# Everything but capitals, digits, spaces and the slash ("BAT A/ESC 2") becomes a space.
_NOT_KEPT = re.compile(r"[^A-Z0-9/ ]+")
# Characters whose normalisation (accents dropped, capitals, punctuation to spaces) can make a line
# longer: outside Latin-1, ligatures, fractions, and ß (capital SS). Without them a line never grows.
_MAY_GROW = re.compile(r"[^\x20-\x7e\xa0-\xff]|[ßÆæ¼½¾]")
# A letter or digit that survives normalisation (× and ÷ do not).
KEPT_CHARACTER = re.compile(r"[0-9A-Za-z\xc0-\xd6\xd8-\xf6\xf8-\xff]")

# La Poste's standard abbreviations of street types and common words, applied only when a line is
# too long, longest words first (the words are compared once normalised: capitals, no accents).
_ABBREVIATIONS = {
    "APPARTEMENT": "APT",
    "AVENUE": "AV",
    "ALLEE": "ALL",
    "BATIMENT": "BAT",
    "BOULEVARD": "BD",
    "CENTRE": "CTRE",
    "CHEMIN": "CHE",
    "COURS": "CRS",
    "DOCTEUR": "DR",
    "DOMAINE": "DOM",
    "ENTREE": "ENT",
    "ESCALIER": "ESC",
    "FAUBOURG": "FG",
    "GENERAL": "GAL",
    "HAMEAU": "HAM",
    "IMMEUBLE": "IMM",
    "IMPASSE": "IMP",
    "LOTISSEMENT": "LOT",
    "MARECHAL": "MAL",
    "PLACE": "PL",
    "PRESIDENT": "PDT",
    "PROFESSEUR": "PR",
    "QUARTIER": "QUA",
    "RESIDENCE": "RES",
    "ROUTE": "RTE",
    "SAINT": "ST",
    "SAINTE": "STE",
    "SQUARE": "SQ",
}

# Why an address cannot be printed; each is a stable phrase (tests and operators match on it).
NO_POSTCODE = "no postcode"
POSTCODE_NOT_FIVE_DIGITS = "postcode is not 5 digits"
POSTCODE_UNKNOWN_AREA = "postcode area does not exist"
NO_LOCALITY = "no locality"
NO_DELIVERY_LINE = "no delivery line (street, lieu-dit or post box)"
LAST_LINE_TOO_LONG = "postcode and locality do not fit on one line of 38 characters"
TOO_MANY_LINES = f"more than {MAX_LINES} lines with the recipient's name"


def _collapse(text: str | None) -> str:
    return " ".join((text or "").split())


def without_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def normalised_line(text: str | None) -> str:
    """A line as La Poste writes it: capitals, no accents, no punctuation, single spaces."""
    capitals = without_accents(_collapse(text)).upper()
    return " ".join(_NOT_KEPT.sub(" ", capitals).split())


def _abbreviate(line: str, room: int) -> str:
    words = line.split(" ")
    for index in sorted(range(len(words)), key=lambda i: -len(words[i])):
        if len(" ".join(words)) <= room:
            break
        abbreviation = _ABBREVIATIONS.get(words[index])
        if abbreviation:
            words[index] = abbreviation
    return " ".join(words)


def _fitted(line: str, room: int = MAX_LINE_LENGTH) -> str:
    return _abbreviate(line, room) if len(line) > room else line


@dataclass(frozen=True)
class PostalAddress:
    """Address lines 2 to 5, postcode and locality as the register gives them (line 1 is the name)."""

    lines: tuple[str | None, ...]
    postcode: str | None
    locality: str | None

    @classmethod
    def from_register(
        cls,
        ligne2: str | None,
        ligne3: str | None,
        ligne4: str | None,
        ligne5: str | None,
        code_postal: str | None,
        commune: str | None,
    ) -> PostalAddress:
        return cls((ligne2, ligne3, ligne4, ligne5), code_postal, commune)

    @cached_property
    def postcode_clean(self) -> str:
        return "".join((self.postcode or "").split())

    @cached_property
    def locality_clean(self) -> str:
        """The locality as the last line carries it ('ST GERMAIN EN LAYE', 'PARIS CEDEX 08')."""
        locality = normalised_line(self.locality)
        room = MAX_LINE_LENGTH - len(self.postcode_clean) - 1
        return _fitted(locality, room)

    @cached_property
    def last_line(self) -> str:
        """'POSTCODE LOCALITY' in capitals without accents (a CEDEX mention stays in the locality)."""
        return f"{self.postcode_clean} {self.locality_clean}".strip()

    @cached_property
    def body_lines(self) -> tuple[str, ...]:
        """Lines 2 to 5, normalised, empty lines dropped, abbreviated where too long."""
        lines = (normalised_line(line) for line in self.lines)
        return tuple(_fitted(line) for line in lines if line)

    def _surely_printable(self) -> bool:
        """A cheap test that never says yes wrongly: every line already fits before normalisation
        (which can only shorten these characters), so the register intake of millions of rows skips
        the full normalisation of ordinary addresses."""
        postcode = self.postcode_clean
        locality = self.locality or ""
        present = [line for line in self.lines if line]
        if not (_POSTCODE.match(postcode) and POSTCODE_AREA.match(postcode)):
            return False
        if len(postcode) + 1 + len(locality) > MAX_LINE_LENGTH or not KEPT_CHARACTER.search(locality):
            return False
        if not any(KEPT_CHARACTER.search(line) for line in present):
            return False
        if any(len(line) > MAX_LINE_LENGTH for line in present):
            return False
        return not _MAY_GROW.search(locality) and not any(_MAY_GROW.search(line) for line in present)

    @cached_property
    def problems(self) -> tuple[str, ...]:
        """Why the address cannot be printed; empty when it can."""
        if self._surely_printable():
            return ()
        return self.full_problems()

    def full_problems(self) -> tuple[str, ...]:
        """`problems` computed on the normalised lines, without the shortcut."""
        found = []
        if not self.postcode_clean:
            found.append(NO_POSTCODE)
        elif not _POSTCODE.match(self.postcode_clean):
            found.append(POSTCODE_NOT_FIVE_DIGITS)
        elif not POSTCODE_AREA.match(self.postcode_clean):
            found.append(POSTCODE_UNKNOWN_AREA)
        if not self.locality_clean:
            found.append(NO_LOCALITY)
        elif len(self.last_line) > MAX_LINE_LENGTH:
            found.append(LAST_LINE_TOO_LONG)
        if not self.body_lines:
            found.append(NO_DELIVERY_LINE)
        for line in self.body_lines:
            if len(line) > MAX_LINE_LENGTH:
                found.append(f"a line of {len(line)} characters does not fit in {MAX_LINE_LENGTH}")
        if len(self.body_lines) + 2 > MAX_LINES:
            found.append(TOO_MANY_LINES)
        return tuple(found)

    @property
    def is_printable(self) -> bool:
        return not self.problems

    def printable_lines(self, recipient_name: str) -> tuple[str, ...]:
        """The six (or fewer) lines of the envelope window, the recipient's name first."""
        if self.problems:
            raise ValueError(f"address cannot be printed: {'; '.join(self.problems)}")
        return (recipient_line(recipient_name), *self.body_lines, self.last_line)


def recipient_line(name: str) -> str:
    """Line 1: the recipient's name, normalised, cut at a word boundary to 38 characters."""
    line = normalised_line(name)
    if len(line) <= MAX_LINE_LENGTH:
        return line
    cut = line[: MAX_LINE_LENGTH + 1].rsplit(" ", 1)[0]
    return cut if cut and len(cut) <= MAX_LINE_LENGTH else line[:MAX_LINE_LENGTH]
