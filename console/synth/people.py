"""Synthetic people, household by household: consistent NIRs, names, addresses, families."""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from itertools import accumulate
from random import Random

from console.synth.faults import HOUSEHOLD_FAULTS, FaultDispenser
from console.synth.nirs import SEX_DIGITS, TEMPORARY_SEX_DIGITS, NirAllocator, spaced
from console.synth.places import birth_place, is_abroad, postcode, residence_departement
from console.synth.pools import LIEUX_DITS, RESIDENCE_NAMES, Pools

# Minors are people under 18 on the first sending day of the rollout: they get a representative.
ROLLOUT_START = date(2022, 1, 31)
ADULT_AGE = 18

# Household shapes (cumulative draw): lone adult, couple, couple with children, lone parent, and a
# protected adult with the person who represents them. They give about a fifth of minors.
_LONE_ADULT = 0.40
_COUPLE = 0.70
_COUPLE_WITH_CHILDREN = 0.90
_LONE_PARENT = 0.98

# Adult ages (from, to) and their weights, roughly the French population of 2022.
_ADULT_AGE_BANDS = ((18, 30), (30, 45), (45, 60), (60, 75), (75, 90), (90, 100))
_ADULT_AGE_CUMULATIVE = tuple(accumulate((17, 24, 25, 22, 10, 2)))

_SAME_SEX_COUPLE = 0.03
_MARRIED_NAME = 0.5  # share of women in a couple who use their partner's name
_TEMPORARY_NIR = 0.03  # share of people born abroad still on a temporary number (7/8)
_SPACED_NIR = 0.02  # extracts sometimes carry the NIR as printed: "1 85 05 78 006 084 36"
_NO_BIRTH_PLACE = 0.01
_ODD_NAME = 0.003  # markup, quotes, apostrophes, accents, a line break: the pipeline must cope
_EMAIL_ONLY = 0.05  # lone adults with an email and no postal address at all


@cache
def mailbox_word(name: str) -> str:
    """A name as it appears in an email address: ASCII, lower case, letters and hyphens."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-") or "contact"


@cache
def _register_name(name: str, keep_accents: bool) -> str:
    """Birth names in capitals; the RNIPP mostly drops accents."""
    upper = name.upper()
    if keep_accents:
        return upper
    return unicodedata.normalize("NFKD", upper).encode("ascii", "ignore").decode()


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@dataclass(frozen=True, slots=True)
class Address:
    """AFNOR lines 2 to 5 and the postcode and locality of line 6 (line 1 is the recipient's name)."""

    line2: str = ""
    line3: str = ""
    line4: str = ""
    line5: str = ""
    postcode: str = ""
    commune: str = ""


NO_ADDRESS = Address()


@dataclass(slots=True)
class Person:
    """One person of the register, with the true traits; a planted fault only alters the written row."""

    nir: str
    sex: str  # M or F
    birth: date
    birth_place: str  # INSEE code, 5 characters
    nom_naissance: str
    prenoms: str
    departement: str
    address: Address
    nom_usage: str = ""
    email: str = ""
    representative: str = ""  # the representative's NIR as written in the row
    death: date | None = None
    represents: bool = False  # somebody's legal representative: never carries a fault
    fault: str | None = None
    nir_spaced: bool = False
    shows_birth_place: bool = True

    @property
    def first_name(self) -> str:
        return self.prenoms.split(" ", 1)[0]

    def row(self) -> list[str]:
        """The register.csv row, in REGISTER_COLUMNS order."""
        address = self.address
        return [
            spaced(self.nir) if self.nir_spaced else self.nir,
            self.nom_naissance,
            self.nom_usage,
            self.prenoms,
            self.birth.isoformat(),
            self.sex,
            self.birth_place if self.shows_birth_place else "",
            self.email,
            address.line2,
            address.line3,
            address.line4,
            address.line5,
            address.postcode,
            address.commune,
            self.departement,
            self.representative,
            self.death.isoformat() if self.death else "",
        ]


class Population:
    """Streams the register's people, household by household, in a stable order for one seed."""

    def __init__(self, pools: Pools, seed: int, reference_date: date, faults: FaultDispenser) -> None:
        self._pools = pools
        self._rng = Random(seed)
        self._faults = faults
        self.nirs = NirAllocator(seed)
        self.reference_date = reference_date
        # Who counts as a minor is fixed by the rollout start, or by a later extract date.
        adulthood_day = max(reference_date, ROLLOUT_START)
        self._latest_adult_birth = years_before(adulthood_day, ADULT_AGE)
        self._adulthood_day = adulthood_day
        self._last_birth = reference_date - timedelta(days=1)

    @property
    def family_names(self) -> tuple[str, ...]:
        return self._pools.family_names

    def households(self, persons: int) -> Iterator[list[Person]]:
        remaining = persons
        while remaining > 0:
            members = self._household(remaining)
            remaining -= len(members)
            # Shuffled, so that a child often comes before its representative in the file.
            self._rng.shuffle(members)
            yield members

    # Households ---------------------------------------------------------------------------------

    def _household(self, remaining: int) -> list[Person]:
        hostable: Collection[str] = HOUSEHOLD_FAULTS if remaining >= 2 else ("UNKNOWN_REPRESENTATIVE",)
        fault = self._faults.take(hostable)
        if fault == "UNKNOWN_REPRESENTATIVE":
            return self._child_of_unlisted_parent()
        if fault == "DECEASED_REPRESENTATIVE":
            return self._children_of_deceased_parent(remaining)
        draw = self._rng.random()
        if draw < _LONE_ADULT or remaining == 1:
            return self._lone_adult()
        if draw < _COUPLE or (draw < _COUPLE_WITH_CHILDREN and remaining == 2):
            return self._couple()
        if draw < _COUPLE_WITH_CHILDREN:
            return self._couple_with_children(remaining)
        if draw < _LONE_PARENT:
            return self._lone_parent(remaining)
        return self._protected_adult()

    def _lone_adult(self) -> list[Person]:
        rng = self._rng
        departement = residence_departement(rng)
        person = self._person(rng.choice("MF"), self._adult_birth(), self._family_name(), departement, None)
        if person.email and rng.random() < _EMAIL_ONLY:
            person.address = NO_ADDRESS
        else:
            person.address = self._address(departement)
        self._maybe_die(person)
        return [person]

    def _couple(self) -> list[Person]:
        rng = self._rng
        departement = residence_departement(rng)
        address = self._address(departement)
        first_sex = rng.choice("MF")
        second_sex = first_sex if rng.random() < _SAME_SEX_COUPLE else ("F" if first_sex == "M" else "M")
        first_birth = self._adult_birth()
        first = self._person(first_sex, first_birth, self._family_name(), departement, address)
        second = self._person(
            second_sex, self._partner_birth(first_birth), self._family_name(), departement, address
        )
        self._married_name(first, second)
        for partner in (first, second):
            self._maybe_die(partner)
        return [first, second]

    def _couple_with_children(self, remaining: int) -> list[Person]:
        rng = self._rng
        children_births = self._children_births(min(rng.choice((1, 1, 1, 2, 2, 2, 3)), remaining - 2))
        departement = residence_departement(rng)
        address = self._address(departement)
        father_birth = self._parent_birth(children_births)
        father = self._person("M", father_birth, self._family_name(), departement, address)
        mother_birth = min(self._partner_birth(father_birth), years_before(min(children_births), ADULT_AGE))
        mother = self._person("F", mother_birth, self._family_name(), departement, address)
        self._married_name(father, mother)
        representative = rng.choice((father, mother))
        other_parent = mother if representative is father else father
        self._maybe_die(other_parent)
        children = self._children(children_births, father.nom_naissance, representative, departement, address)
        return [father, mother, *children]

    def _lone_parent(self, remaining: int) -> list[Person]:
        rng = self._rng
        children_births = self._children_births(min(rng.choice((1, 1, 1, 2, 2)), remaining - 1))
        departement = residence_departement(rng)
        address = self._address(departement)
        sex = "F" if rng.random() < 0.8 else "M"
        parent = self._person(
            sex, self._parent_birth(children_births), self._family_name(), departement, address
        )
        children = self._children(children_births, parent.nom_naissance, parent, departement, address)
        return [parent, *children]

    def _protected_adult(self) -> list[Person]:
        """An adult under guardianship: an elderly parent represented by a grown-up child, or a
        young adult represented by a parent."""
        rng = self._rng
        departement = residence_departement(rng)
        family_name = self._family_name()
        if rng.random() < 0.7:
            protected_birth = self._latest_adult_birth - timedelta(days=rng.randint(57 * 365, 80 * 365))
            representative_birth = protected_birth + timedelta(days=rng.randint(20 * 365, 40 * 365))
        else:
            protected_birth = self._latest_adult_birth - timedelta(days=rng.randint(0, 17 * 365))
            representative_birth = protected_birth - timedelta(days=rng.randint(20 * 365, 40 * 365))
        representative = self._person(
            rng.choice("MF"), representative_birth, family_name, departement, self._address(departement)
        )
        protected = self._person(
            rng.choice("MF"), protected_birth, family_name, departement, self._address(departement)
        )
        self._represent(protected, representative)
        self._maybe_die(protected)
        return [protected, representative]

    def _child_of_unlisted_parent(self) -> list[Person]:
        """A minor whose representative's NIR is valid but nowhere in the file (fault)."""
        rng = self._rng
        departement = residence_departement(rng)
        birth = self._minor_birth()
        child = self._person(
            rng.choice("MF"), birth, self._family_name(), departement, self._address(departement)
        )
        parent_birth = self._parent_birth([birth])
        parent_nir = self.nirs.allocate(rng.choice("12"), parent_birth, birth_place(departement, rng))
        child.representative = parent_nir
        child.fault = "UNKNOWN_REPRESENTATIVE"
        return [child]

    def _children_of_deceased_parent(self, remaining: int) -> list[Person]:
        """Minors whose listed representative has died (fault on each child; the parent's row is clean)."""
        rng = self._rng
        children_births = self._children_births(min(rng.choice((1, 1, 2)), remaining - 1))
        departement = residence_departement(rng)
        address = self._address(departement)
        parent = self._person(
            rng.choice("MF"), self._parent_birth(children_births), self._family_name(), departement, address
        )
        last_child = max(children_births)
        parent.death = last_child + timedelta(
            days=rng.randint(0, max(0, (self._last_birth - last_child).days))
        )
        children = self._children(children_births, parent.nom_naissance, parent, departement, address)
        for child in children:
            child.fault = "DECEASED_REPRESENTATIVE"
        return [parent, *children]

    def _children(
        self, births: list[date], family_name: str, representative: Person, departement: str, address: Address
    ) -> list[Person]:
        children = []
        for birth in births:
            child = self._person(
                self._rng.choice("MF"), birth, family_name, departement, address, registered=True
            )
            self._represent(child, representative)
            children.append(child)
        return children

    def _represent(self, person: Person, representative: Person) -> None:
        representative.represents = True
        nir = representative.nir
        person.representative = spaced(nir) if self._rng.random() < _SPACED_NIR else nir

    # People -------------------------------------------------------------------------------------

    def _person(
        self,
        sex: str,
        birth: date,
        family_name: str,
        departement: str,
        address: Address | None,
        *,
        registered: bool = False,
    ) -> Person:
        """One person; `registered` family names are already in register form (a child's)."""
        rng = self._rng
        place = birth_place(departement, rng)
        temporary = is_abroad(place) and rng.random() < _TEMPORARY_NIR
        sex_digit = (TEMPORARY_SEX_DIGITS if temporary else SEX_DIGITS)[sex]
        nom = family_name if registered else _register_name(family_name, rng.random() < 0.4)
        first_names = self._pools.male_first_names if sex == "M" else self._pools.female_first_names
        prenoms = rng.choice(first_names)
        if rng.random() < 0.45:
            prenoms += " " + rng.choice(first_names)
            if rng.random() < 0.3:
                prenoms += " " + rng.choice(first_names)
        person = Person(
            nir=self.nirs.allocate(sex_digit, birth, place),
            sex=sex,
            birth=birth,
            birth_place=place,
            nom_naissance=nom,
            prenoms=prenoms,
            departement=departement,
            address=address or NO_ADDRESS,
            nir_spaced=rng.random() < _SPACED_NIR,
            shows_birth_place=rng.random() >= _NO_BIRTH_PLACE,
        )
        if rng.random() < self._email_probability(birth):
            person.email = self.email_address(person.first_name, family_name)
        if rng.random() < _ODD_NAME:
            self._odd_name(person)
        return person

    def _email_probability(self, birth: date) -> float:
        age = age_on(birth, self._adulthood_day)
        if age >= 75:
            return 0.6
        if age >= ADULT_AGE:
            return 0.9
        return 0.4 if age >= 13 else 0.0

    def email_address(self, first_name: str, family_name: str) -> str:
        rng = self._rng
        first, last = mailbox_word(first_name), mailbox_word(family_name)
        shape = rng.random()
        if shape < 0.5:
            local = f"{first}.{last}"
        elif shape < 0.7:
            local = f"{first}.{last}{rng.randint(1, 99)}"
        elif shape < 0.85:
            local = f"{first[0]}{last}"
        else:
            local = f"{first}_{last}{rng.randint(1950, 2015)}"
        return f"{local}@{rng.choice(self._pools.email_domains)}"

    def _odd_name(self, person: Person) -> None:
        rng = self._rng
        shape = rng.randrange(6)
        rest = person.prenoms[len(person.first_name) :]
        if shape == 0:
            person.prenoms = f"<b>{person.first_name}</b>{rest}"
        elif shape == 1:
            person.nom_naissance = rng.choice(("O'CONNOR", "D'ALMEIDA", "N'DIAYE", "L'HERMITE", "D'ARTAGNAN"))
        elif shape == 2:
            person.prenoms = f'{person.first_name} "{rng.choice(("Dédé", "Loulou", "Mimi", "Jojo"))}"{rest}'
        elif shape == 3:
            person.nom_usage = f"{person.nom_naissance}\n{_register_name(self._family_name(), False)}"
        elif shape == 4:
            person.nom_naissance = rng.choice(("MÜLLER-ÉTIÉVANT", "ŒUVRARD", "GARÇON", "NGUYỄN", "ÇELIK"))
            person.prenoms = "Maëlys Chloé" if person.sex == "F" else "Loïc Noël"
        else:
            person.nom_naissance = f"de La {person.nom_naissance.title()}"

    def _married_name(self, first: Person, second: Person) -> None:
        for person, partner in ((first, second), (second, first)):
            if person.sex == "F" and partner.sex == "M" and self._rng.random() < _MARRIED_NAME:
                person.nom_usage = partner.nom_naissance

    def _maybe_die(self, person: Person) -> None:
        """About 1 % of people have a death date, mostly the eldest; representatives never do."""
        if person.represents:
            return
        age = age_on(person.birth, self._adulthood_day)
        probability = 0.08 if age >= 80 else 0.018 if age >= 60 else 0.003
        if self._rng.random() < probability:
            earliest = max(person.birth + timedelta(days=1), date(2015, 1, 1))
            span = (self._last_birth - earliest).days
            if span > 0:
                person.death = earliest + timedelta(days=self._rng.randint(0, span))

    # Dates, names, addresses --------------------------------------------------------------------

    def _adult_birth(self) -> date:
        """A birth date for an adult, ages drawn from a rough French age pyramid (18 to 100)."""
        rng = self._rng
        youngest, oldest = _ADULT_AGE_BANDS[
            bisect(_ADULT_AGE_CUMULATIVE, rng.random() * _ADULT_AGE_CUMULATIVE[-1])
        ]
        years_over_18 = rng.uniform(youngest, oldest) - ADULT_AGE
        return self._latest_adult_birth - timedelta(days=int(years_over_18 * 365.25))

    def _minor_birth(self) -> date:
        span = (self._last_birth - self._latest_adult_birth).days
        return self._latest_adult_birth + timedelta(days=self._rng.randint(1, span))

    def _children_births(self, count: int) -> list[date]:
        return [self._minor_birth() for _ in range(max(count, 1))]

    def _parent_birth(self, children_births: list[date]) -> date:
        eldest = min(children_births)
        return eldest - timedelta(days=self._rng.randint(20 * 365, 42 * 365))

    def _partner_birth(self, birth: date) -> date:
        partner = birth + timedelta(days=self._rng.randint(-6 * 365, 6 * 365))
        return min(partner, self._latest_adult_birth)

    def _family_name(self) -> str:
        return self._rng.choice(self._pools.family_names)

    def _address(self, departement: str) -> Address:
        rng = self._rng
        pools = self._pools
        suffix = " bis" if rng.random() < 0.03 else ""
        line4 = f"{rng.randint(1, 150)}{suffix} {rng.choice(pools.streets)}"
        line2 = line3 = line5 = ""
        if rng.random() < 0.12:
            line2 = rng.choice(
                (
                    f"Appartement {rng.randint(1, 60)}",
                    f"Appt {rng.randint(1, 9)}{rng.choice('ABC')}",
                    f"Chez M. {_register_name(self._family_name(), False)}",
                    f"Porte {rng.randint(1, 12)}",
                )
            )
        if rng.random() < 0.12:
            line3 = rng.choice(
                (
                    f"Bâtiment {rng.choice('ABCDE')}",
                    f"Résidence {rng.choice(RESIDENCE_NAMES)}",
                    f"Entrée {rng.randint(1, 4)}",
                    # Typed by hand at a desk: the separator inside a field must be quoted.
                    f"Bâtiment {rng.choice('ABC')}; escalier {rng.randint(1, 3)}",
                )
            )
        if rng.random() < 0.08:
            if rng.random() < 0.6:
                line5 = f"Lieu-dit {rng.choice(LIEUX_DITS)}"
                if rng.random() < 0.4:
                    line4 = ""  # in the countryside the lieu-dit is the whole address
            else:
                line5 = f"BP {rng.randint(1, 999)}"
        if rng.random() < 0.5:
            line2, line3, line4, line5 = line2.upper(), line3.upper(), line4.upper(), line5.upper()
        commune = rng.choice(pools.communes)
        if rng.random() < 0.55:
            commune = commune.upper()
        return Address(line2, line3, line4, line5, postcode(departement, rng), commune)
