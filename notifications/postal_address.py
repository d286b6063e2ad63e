"""The French postal address (AFNOR NF Z10-011) as a value object: normalised, checked, printable."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property

MAX_LINES = 6
MAX_LINE_LENGTH = 38
_POSTCODE = re.compile(r"^[0-9]{5}$")
_LIGATURES = str.maketrans({"Œ": "OE", "œ": "oe", "Æ": "AE", "æ": "ae", "ß": "ss"})

# Standard abbreviations of the street types and words (La Poste), applied only when a line is
# too long, longest words first.
_ABBREVIATIONS = {
    "BOULEVARD": "BD",
    "AVENUE": "AV",
    "ALLEE": "ALL",
    "ALLÉE": "ALL",
    "CHEMIN": "CHE",
    "IMPASSE": "IMP",
    "PLACE": "PL",
    "ROUTE": "RTE",
    "RESIDENCE": "RES",
    "RÉSIDENCE": "RES",
    "BATIMENT": "BAT",
    "BÂTIMENT": "BAT",
    "APPARTEMENT": "APT",
    "ESCALIER": "ESC",
    "LOTISSEMENT": "LOT",
    "QUARTIER": "QUA",
    "SQUARE": "SQ",
    "FAUBOURG": "FG",
    "DOCTEUR": "DR",
    "GENERAL": "GAL",
    "GÉNÉRAL": "GAL",
    "SAINT": "ST",
    "SAINTE": "STE",
}


def _collapse(text: str | None) -> str:
    return " ".join((text or "").split())


def without_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def _abbreviate(line: str) -> str:
    words = line.split(" ")
    for index in sorted(range(len(words)), key=lambda i: -len(words[i])):
        if len(" ".join(words)) <= MAX_LINE_LENGTH:
            break
        abbreviation = _ABBREVIATIONS.get(words[index].upper())
        if abbreviation:
            words[index] = abbreviation
    return " ".join(words)


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
    def last_line(self) -> str:
        """'POSTCODE LOCALITY' in capitals without accents (a CEDEX mention stays in the locality)."""
        locality = without_accents(_collapse(self.locality)).upper()
        return f"{self.postcode_clean} {locality}".strip()

    @cached_property
    def body_lines(self) -> tuple[str, ...]:
        """Lines 2 to 5, whitespace collapsed, empty lines dropped, abbreviated where too long."""
        lines = (_collapse(line) for line in self.lines)
        return tuple(_abbreviate(line) if len(line) > MAX_LINE_LENGTH else line for line in lines if line)

    @cached_property
    def problems(self) -> tuple[str, ...]:
        """Why the address cannot be printed; empty when it can."""
        found = []
        if not self.postcode_clean:
            found.append("no postcode")
        elif not _POSTCODE.match(self.postcode_clean):
            found.append("postcode is not 5 digits")
        if not _collapse(self.locality):
            found.append("no locality")
        if len(self.last_line) > MAX_LINE_LENGTH:
            found.append("postcode and locality do not fit on one line of 38 characters")
        for line in self.body_lines:
            if len(line) > MAX_LINE_LENGTH:
                found.append(f"a line of {len(line)} characters does not fit in {MAX_LINE_LENGTH}")
        if len(self.body_lines) + 2 > MAX_LINES:
            found.append(f"more than {MAX_LINES} lines with the recipient's name")
        return tuple(found)

    @property
    def is_printable(self) -> bool:
        return not self.problems

    def printable_lines(self, recipient_name: str) -> tuple[str, ...]:
        """The six (or fewer) lines of the envelope window, the recipient's name first."""
        if self.problems:
            raise ValueError(f"address cannot be printed: {'; '.join(self.problems)}")
        name = _collapse(recipient_name)
        if len(name) > MAX_LINE_LENGTH:
            name = name[:MAX_LINE_LENGTH].rstrip()
        return (name, *self.body_lines, self.last_line)
