"""The AFNOR NF Z10-011 address: many real French shapes, and the reasons an address cannot fit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mes_rollout import postal_address as pa
from mes_rollout.postal_address import PostalAddress, recipient_line


def _address(*lines: str | None, postcode: str | None, locality: str | None) -> PostalAddress:
    padded = (*lines, None, None, None, None)[:4]
    return PostalAddress.from_register(*padded, postcode, locality)


@pytest.mark.parametrize(
    ("lines", "postcode", "locality", "expected"),
    [
        # A street in a town.
        ((None, None, "12 rue des Lilas", None), "01000", "Bourg-en-Bresse",
         ("12 RUE DES LILAS", "01000 BOURG EN BRESSE")),
        # An apartment, a building and a street: the order of lines 2 to 4 is kept.
        (("Appartement 12, escalier B", "Résidence Les Tilleuls", "3 allée Jean-Moulin", None), "44300", "Nantes",
         ("APPARTEMENT 12 ESCALIER B", "RESIDENCE LES TILLEULS", "3 ALLEE JEAN MOULIN", "44300 NANTES")),
        # CEDEX: a post box and the CEDEX mention in the last line.
        ((None, None, None, "BP 90231"), "75381", "Paris Cedex 08", ("BP 90231", "75381 PARIS CEDEX 08")),
        ((None, "Service des courriers", None, "CS 70001"), "31059", "Toulouse cedex 9",
         ("SERVICE DES COURRIERS", "CS 70001", "31059 TOULOUSE CEDEX 9")),
        ((None, None, None, "TSA 30020"), "69945", "Lyon Cedex 20", ("TSA 30020", "69945 LYON CEDEX 20")),
        # Lieu-dit, no street: line 5 carries it.
        ((None, None, None, "Lieu-dit Les Granges"), "80120", "Rue", ("LIEU DIT LES GRANGES", "80120 RUE")),
        ((None, None, "Le Bourg", "Hameau de Kerguélen"), "29560", "Telgruc-sur-Mer",
         ("LE BOURG", "HAMEAU DE KERGUELEN", "29560 TELGRUC SUR MER")),
        # Corsica: départements 2A and 2B, postcodes 20xxx.
        ((None, None, "1 cours Napoléon", None), "20000", "Ajaccio", ("1 COURS NAPOLEON", "20000 AJACCIO")),
        ((None, None, "5 boulevard Paoli", None), "20200", "Bastia", ("5 BOULEVARD PAOLI", "20200 BASTIA")),
        ((None, None, "Lieu-dit Capo di Feno", None), "20167", "Mezzavia", ("LIEU DIT CAPO DI FENO", "20167 MEZZAVIA")),
        # Overseas départements 971-976, Saint-Barthélemy and Saint-Martin (971xx).
        ((None, None, "12 rue Schoelcher", None), "97100", "Basse-Terre", ("12 RUE SCHOELCHER", "97100 BASSE TERRE")),
        ((None, None, "Route de Redoute", None), "97200", "Fort-de-France",
         ("ROUTE DE REDOUTE", "97200 FORT DE FRANCE")),
        ((None, None, "2 avenue Léopold Héder", None), "97300", "Cayenne", ("2 AVENUE LEOPOLD HEDER", "97300 CAYENNE")),
        ((None, None, "Chemin Summer", None), "97400", "Saint-Denis", ("CHEMIN SUMMER", "97400 SAINT DENIS")),
        ((None, None, "Rue du Général de Gaulle", None), "97500", "Saint-Pierre",
         ("RUE DU GENERAL DE GAULLE", "97500 SAINT PIERRE")),
        ((None, None, "Rue de la Mairie", "Kawéni"), "97600", "Mamoudzou", ("RUE DE LA MAIRIE", "KAWENI", "97600 MAMOUDZOU")),
        ((None, None, "Rue Jeanne d'Arc", None), "97133", "Saint-Barthélemy",
         ("RUE JEANNE D ARC", "97133 SAINT BARTHELEMY")),
        # Monaco is served by La Poste.
        ((None, None, "1 avenue Princesse Grace", None), "98000", "Monaco", ("1 AVENUE PRINCESSE GRACE", "98000 MONACO")),
        # Accents, ligatures, apostrophes, punctuation, stray spaces and line breaks.
        ((None, "  chez  Mme  Lœtitia ", "4, rue de l'Église\n", None), "67000", "Strasbourg",
         ("CHEZ MME LOETITIA", "4 RUE DE L EGLISE", "67000 STRASBOURG")),
        # A postcode with a space in it.
        ((None, None, "8 place Bellecour", None), "69 002", "Lyon", ("8 PLACE BELLECOUR", "69002 LYON")),
    ],
)
def test_real_shapes_normalise_to_the_afnor_lines(
    lines: tuple[str | None, ...], postcode: str, locality: str, expected: tuple[str, ...]
) -> None:
    address = _address(*lines, postcode=postcode, locality=locality)
    assert address.problems == ()
    printed = address.printable_lines("Camille Martin")
    assert printed == ("CAMILLE MARTIN", *expected)
    assert len(printed) <= pa.MAX_LINES and all(len(line) <= pa.MAX_LINE_LENGTH for line in printed)
    assert all(line == line.upper() and line.isascii() and line.strip() == line for line in printed)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Résidence du Parc, Bâtiment C, Escalier 2, Appartement 34", "RES DU PARC BAT C ESCALIER 2 APT 34"),
        ("145 avenue du Maréchal de Lattre de Tassigny", "145 AV DU MAL DE LATTRE DE TASSIGNY"),
        ("12 boulevard du Général Leclerc de Hauteclocque", "12 BD DU GAL LECLERC DE HAUTECLOCQUE"),
    ],
)
def test_a_long_line_is_shortened_with_la_postes_abbreviations(line: str, expected: str) -> None:
    # Longest words first, and only as many as needed to fit.
    address = _address(None, None, line, None, postcode="75012", locality="Paris")
    assert address.body_lines == (expected,)
    assert len(expected) <= 38 and address.is_printable


def test_a_long_locality_is_shortened_with_st_and_ste() -> None:
    address = _address(None, None, "1 rue Haute", None, postcode="95320", locality="Saint-Leu-la-Forêt-Sainte-Honorine")
    assert address.last_line == "95320 SAINT LEU LA FORET STE HONORINE"  # as much as needed
    assert address.is_printable


@pytest.mark.parametrize(
    ("lines", "postcode", "locality", "reason"),
    [
        ((None, None, "1 rue Haute", None), None, "Paris", pa.NO_POSTCODE),
        ((None, None, "1 rue Haute", None), "7500", "Paris", pa.POSTCODE_NOT_FIVE_DIGITS),
        ((None, None, "1 rue Haute", None), "2A004", "Ajaccio", pa.POSTCODE_NOT_FIVE_DIGITS),
        ((None, None, "1 rue Haute", None), "00100", "Nulle-Part", pa.POSTCODE_UNKNOWN_AREA),
        ((None, None, "1 rue Haute", None), "96100", "Nulle-Part", pa.POSTCODE_UNKNOWN_AREA),
        ((None, None, "1 rue Haute", None), "20900", "Corte", pa.POSTCODE_UNKNOWN_AREA),
        ((None, None, "1 rue Haute", None), "97700", "Nulle-Part", pa.POSTCODE_UNKNOWN_AREA),
        ((None, None, "1 rue Haute", None), "75001", "  ", pa.NO_LOCALITY),
        ((None, None, None, None), "75001", "Paris", pa.NO_DELIVERY_LINE),
        ((None, None, "1 rue Haute", None), "51290", "Saint-Rémy-en-Bouzemont-Saint-Genest-et-Isson",
         pa.LAST_LINE_TOO_LONG),
        ((None, None, "12 chemin de la grande fontaine qui ne finit jamais de couler", None), "01000", "Bourg",
         "a line of 58 characters does not fit in 38"),
    ],
)
def test_an_address_that_cannot_fit_says_why(
    lines: tuple[str | None, ...], postcode: str | None, locality: str, reason: str
) -> None:
    address = _address(*lines, postcode=postcode, locality=locality)
    assert reason in address.problems
    assert not address.is_printable
    with pytest.raises(ValueError, match="cannot be printed"):
        address.printable_lines("Camille Martin")


def test_the_recipient_line_is_cut_at_a_word_and_never_longer_than_38() -> None:
    long_name = "Marie-Dominique-Bernadette Castelnau-Montmorency de la Tour"
    line = recipient_line(long_name)
    assert len(line) <= 38 and line == "MARIE DOMINIQUE BERNADETTE CASTELNAU"
    assert recipient_line("<b>O'Brien</b>\r\nBcc: x") == "B O BRIEN /B BCC X"


# The register intake relies on the shortcut of `problems`; it must never call printable an address
# that the full normalisation rejects.
_LINE_TEXT = st.text(
    alphabet=st.sampled_from(list("ABCdéèçôœŒßÆ¼×÷ -',./12390lieu-ditBPCEDEXrueµ\u00a0\u2019\u0301")), max_size=45
)


@given(
    lines=st.lists(st.one_of(st.none(), _LINE_TEXT), min_size=4, max_size=4),
    postcode=st.one_of(st.none(), st.sampled_from(["01000", "20000", "97411", "99999", "7500", "75 008", "98600"])),
    locality=st.one_of(st.none(), _LINE_TEXT),
)
@settings(max_examples=2000, deadline=None)
def test_the_shortcut_agrees_with_the_full_check(
    lines: list[str | None], postcode: str | None, locality: str | None
) -> None:
    address = PostalAddress(tuple(lines), postcode, locality)
    assert address.problems == address.full_problems()
