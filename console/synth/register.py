"""register.csv: the people written row by row, with the register faults planted in their rows."""

from __future__ import annotations

import heapq
import itertools
from calendar import monthrange
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from random import Random
from types import TracebackType

from console.synth.faults import (
    PERMANENT_NIR_FAULTS,
    PERSON_FAULTS,
    POSTAL_FAULTS,
    REGISTER_FILE,
    REPRESENTED_FAULTS,
    FaultDispenser,
    FaultLog,
    NaturalAnomalies,
)
from console.synth.nirs import spaced
from console.synth.output import CsvSink
from console.synth.people import Person, Population, mailbox_word
from console.synth.places import postcode
from mes_rollout.contracts import REGISTER_COLUMNS
from mes_rollout.nir import normalise, with_key

(
    NIR,
    NOM_NAISSANCE,
    NOM_USAGE,
    PRENOMS,
    DATE_NAISSANCE,
    SEXE,
    LIEU_NAISSANCE,
    EMAIL,
    ADRESSE_LIGNE2,
    ADRESSE_LIGNE3,
    ADRESSE_LIGNE4,
    ADRESSE_LIGNE5,
    CODE_POSTAL,
    COMMUNE,
    DEPARTEMENT,
    NIR_REPRESENTANT,
    DATE_DECES,
) = range(len(REGISTER_COLUMNS))

AFNOR_LINE_LENGTH = 38
NATURAL_INVALID_EMAIL = 0.005  # of people with an email: typed wrong at a desk
# How far (in people) a duplicated row comes after its original.
_DUPLICATE_DISTANCE = (1, 300)


@cache
def _hostable(has_postcode: bool, is_represented: bool, is_permanent: bool) -> frozenset[str]:
    """The person-level faults a row can carry so that it breaks exactly the rule the fault names."""
    kinds = set(PERSON_FAULTS)
    if not has_postcode:
        kinds -= POSTAL_FAULTS
    if not is_represented:
        kinds -= REPRESENTED_FAULTS
    if not is_permanent:
        kinds -= PERMANENT_NIR_FAULTS
    return frozenset(kinds)


class RegisterExtract:
    """Writes people to register.csv, plants the faults that are due, and logs them in faults.csv."""

    def __init__(
        self,
        path: Path,
        population: Population,
        faults: FaultDispenser,
        natural: NaturalAnomalies,
        rng: Random,
        log: FaultLog,
    ) -> None:
        self._sink = CsvSink(path, REGISTER_COLUMNS)
        self._population = population
        self._faults = faults
        self._natural = natural
        self._rng = rng
        self._log = log
        self._written = 0
        # Copies of rows written again later in the file: (due after this many people, order, row).
        self._replays: list[tuple[int, int, list[str]]] = []
        self._replay_order = itertools.count()

    @property
    def rows(self) -> int:
        return self._sink.rows

    def write(self, person: Person) -> None:
        self._faults.tick()
        if person.fault is None and not person.represents:
            hostable = _hostable(
                bool(person.address.postcode), bool(person.representative), person.nir[0] in "12"
            )
            person.fault = self._faults.take(hostable)
            if (
                person.fault is None
                and person.email
                and self._natural.due("EMAIL_INVALID", NATURAL_INVALID_EMAIL)
            ):
                person.fault = "EMAIL_INVALID"
        row = person.row()
        if person.fault is not None:
            self._plant(person.fault, person, row)
        line = self._sink.write(row)
        if person.fault == "DUPLICATE_IN_FILE":
            self._schedule_copy(row)
        elif person.fault is not None:
            self._log.add(REGISTER_FILE, line, normalise(row[NIR]), person.fault)
        self._written += 1
        while self._replays and self._replays[0][0] <= self._written:
            self._replay(heapq.heappop(self._replays)[2])

    def close(self) -> None:
        while self._replays:
            self._replay(heapq.heappop(self._replays)[2])
        self._sink.close()

    def __enter__(self) -> RegisterExtract:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # Duplicates ---------------------------------------------------------------------------------

    def _schedule_copy(self, row: list[str]) -> None:
        copy = list(row)
        rng = self._rng
        # A second extract line for the same person often differs a little from the first.
        if rng.random() < 0.5 and copy[EMAIL]:
            local, domain = copy[EMAIL].split("@", 1)
            copy[EMAIL] = f"{local}{rng.randint(1, 9)}@{domain}"
        nir = normalise(copy[NIR])
        copy[NIR] = spaced(nir) if rng.random() < 0.3 else nir
        due = self._written + rng.randint(*_DUPLICATE_DISTANCE)
        heapq.heappush(self._replays, (due, next(self._replay_order), copy))

    def _replay(self, copy: list[str]) -> None:
        line = self._sink.write(copy)
        self._log.add(REGISTER_FILE, line, normalise(copy[NIR]), "DUPLICATE_IN_FILE")

    # Faults -------------------------------------------------------------------------------------

    def _plant(self, kind: str, person: Person, row: list[str]) -> None:
        """Alter the row so that it breaks exactly one rule, the one `kind` names."""
        rng = self._rng
        nir = person.nir
        birth = person.birth
        if kind == "NIR_KEY":
            key = int(nir[13:])
            row[NIR] = f"{nir[:13]}{(key - 1 + rng.randint(1, 96)) % 97 + 1:02d}"
        elif kind == "NIR_LENGTH":
            cut = rng.randrange(1, 15)
            row[NIR] = nir[:cut] + nir[cut + 1 :] if rng.random() < 0.6 else nir + str(rng.randrange(10))
        elif kind == "NIR_SHAPE":
            at = rng.randrange(7, 13)
            row[NIR] = f"{nir[:at]}{rng.choice('OIB')}{nir[at + 1 :]}"  # a letter typed for a digit
        elif kind == "NIR_PLACE":
            if rng.random() < 0.5 or nir[5:7] in ("2A", "2B"):
                row[NIR] = with_key(f"{nir[:5]}00{nir[7:13]}")  # birth département 00
            else:
                row[NIR] = with_key(f"{nir[:7]}000{nir[10:13]}")  # commune or country 000
        elif kind == "NIR_ORDER":
            row[NIR] = with_key(f"{nir[:10]}000")
        elif kind == "NIR_SEX":
            row[NIR] = with_key(rng.choice("034569") + nir[1:13])
        elif kind == "NIR_MONTH":
            row[NIR] = with_key(nir[:3] + rng.choice(("00", "13", "15", "19", "43", "48")) + nir[5:13])
        elif kind == "NIR_MISMATCH":
            if rng.random() < 0.5:
                row[SEXE] = "F" if person.sex == "M" else "M"
            else:
                row[DATE_NAISSANCE] = date(birth.year - 1, birth.month, min(birth.day, 28)).isoformat()
        elif kind == "MISSING_FIELD":
            row[rng.choice((NOM_NAISSANCE, PRENOMS))] = ""
        elif kind == "BAD_DATE":
            if rng.random() < 0.3:
                row[DATE_NAISSANCE] = birth.strftime("%d/%m/%Y")
            else:  # the day after the month's last day, in the month the NIR carries
                last_day = monthrange(birth.year, birth.month)[1]
                row[DATE_NAISSANCE] = f"{birth.year:04d}-{birth.month:02d}-{last_day + 1:02d}"
        elif kind == "BIRTH_IN_FUTURE":
            future = self._population.reference_date + timedelta(days=rng.randint(365, 3650))
            # A fresh NIR that agrees with the future date, so that only the date is wrong.
            row[NIR] = self._population.nirs.allocate(nir[0], future, person.birth_place)
            row[DATE_NAISSANCE] = future.isoformat()
            row[DATE_DECES] = ""
        elif kind == "DEATH_BEFORE_BIRTH":
            row[DATE_DECES] = (birth - timedelta(days=rng.randint(1, 3650))).isoformat()
        elif kind == "BAD_SEX":
            row[SEXE] = rng.choice(("X", "I", "?"))
        elif kind == "BAD_DEPARTEMENT":
            if rng.random() < 0.5:
                row[DEPARTEMENT] = "20"  # Corsica before 1976
                if row[CODE_POSTAL]:
                    row[CODE_POSTAL] = postcode(rng.choice(("2A", "2B")), rng)
            else:
                row[DEPARTEMENT] = "00"
        elif kind == "BAD_POSTCODE":
            code = row[CODE_POSTAL]
            # A spreadsheet drops the leading zero of 01000; a typist drops a digit of 75001.
            row[CODE_POSTAL] = code[1:] if code.startswith("0") else code[:4]
        elif kind == "BAD_BIRTH_PLACE":
            place = person.birth_place
            row[LIEU_NAISSANCE] = rng.choice((place[:4], f"1A{place[2:]}", "PARIS", f"{place}0"))
        elif kind == "BAD_REPRESENTATIVE_NIR":
            representative = normalise(person.representative)
            key = int(representative[13:])
            row[NIR_REPRESENTANT] = f"{representative[:13]}{key % 97 + 1:02d}"
        elif kind == "SELF_REPRESENTATIVE":
            row[NIR_REPRESENTANT] = nir
        elif kind == "EMAIL_INVALID":
            row[EMAIL] = self._invalid_email(person)
        elif kind == "ADDRESS_INVALID":
            row[ADRESSE_LIGNE4] = self._unprintable_street_line()

    def _invalid_email(self, person: Person) -> str:
        rng = self._rng
        first, last = mailbox_word(person.first_name), mailbox_word(person.nom_naissance)
        domain = person.email.split("@", 1)[1] if person.email else "orange.fr"
        shape = rng.randrange(5)
        if shape == 0:
            return f"{first}.{last}@@{domain}"
        if shape == 1:
            return f"{first}.{last}.{domain}"  # no @ at all
        if shape == 2:
            return f"{first} {last}@{domain}"
        if shape == 3:
            return f"{first}.{last}@{domain.replace('.', '..')}"
        return f"{first}.{last}@@exemple"

    def _unprintable_street_line(self) -> str:
        """A street line longer than 38 characters even once every AFNOR abbreviation is applied:
        its name is one hyphenated word longer than a line."""
        rng = self._rng
        parts: list[str] = []
        while len("-".join(parts)) <= AFNOR_LINE_LENGTH + 2:
            parts.append(mailbox_word(rng.choice(self._population.family_names)).title())
        return f"{rng.randint(1, 99)} rue {'-'.join(parts)}"
