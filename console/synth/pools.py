"""Pools of French names, streets and communes, drawn once from Faker and then picked with the RNG."""

from __future__ import annotations

from dataclasses import dataclass

from faker import Faker
from faker.providers.internet.fr_FR import Provider as FrenchInternet

# Faker is slow next to random.choice: a few thousand draws once, then picks from the pools.
_POOL_SIZE = 3000
# The last AFNOR line is "POSTCODE LOCALITY" in at most 38 characters; a street line is the
# number (up to 7 characters, "123 bis") and the street name.
_MAX_COMMUNE = 30  # leaves room for a ligature written out (Œ -> OE)
_MAX_STREET = 30

# Faker's fr_FR first names are all simple; real registers are full of compound ones.
_COMPOUND_MALE = ("Jean-Pierre", "Jean-Claude", "Jean-Luc", "Pierre-Yves", "Jean-Baptiste", "Marc-Antoine")
_COMPOUND_FEMALE = (
    "Marie-Claire",
    "Anne-Sophie",
    "Marie-Thérèse",
    "Marie-Noëlle",
    "Anne-Laure",
    "Marie-Hélène",
)

RESIDENCE_NAMES = (
    "Les Tilleuls",
    "Les Glycines",
    "Le Clos Fleuri",
    "Les Érables",
    "Les Jardins de la Gare",
    "Le Parc Saint-Jean",
    "Les Hauts de Seine",
    "La Roseraie",
)
LIEUX_DITS = (
    "Les Granges",
    "La Croix Blanche",
    "Le Moulin",
    "Les Bruyères",
    "La Forge",
    "Le Pré Haut",
    "Les Aulnes",
)


@dataclass(frozen=True)
class Pools:
    family_names: tuple[str, ...]
    male_first_names: tuple[str, ...]
    female_first_names: tuple[str, ...]
    streets: tuple[str, ...]
    communes: tuple[str, ...]
    email_domains: tuple[str, ...]

    @classmethod
    def draw(cls, seed: int) -> Pools:
        faker = Faker("fr_FR")
        faker.seed_instance(seed)
        family_names = tuple(faker.last_name() for _ in range(_POOL_SIZE))
        male = tuple(faker.first_name_male() for _ in range(_POOL_SIZE)) + _COMPOUND_MALE
        female = tuple(faker.first_name_female() for _ in range(_POOL_SIZE)) + _COMPOUND_FEMALE
        streets = tuple(
            street
            for street in (faker.street_name() for _ in range(_POOL_SIZE))
            if len(street) <= _MAX_STREET
        )
        communes = tuple(
            commune for commune in (faker.city() for _ in range(_POOL_SIZE)) if len(commune) <= _MAX_COMMUNE
        )
        # French mailbox providers only: the people are insured in France.
        domains = tuple(
            domain
            for domain in FrenchInternet.free_email_domains
            if domain.endswith(".fr") or domain == "laposte.net"
        )
        return cls(family_names, male, female, streets, communes, domains)
