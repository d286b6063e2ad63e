"""What a message says: the deadline in French words, who it is for, and headers that cannot be forged."""

from __future__ import annotations

import datetime as dt
import email
import email.policy

import pytest

from mes_rollout.config import OptOutWindow
from notifications.french_dates import date_in_words
from notifications.render import (
    Member,
    UnsafeRecipientAddress,
    build_email,
    letter_paragraphs,
    message_content,
    reference_of,
    render_text,
)

KEY = b"k" * 32
PARENT = Member("180037502300145", "Jean", "Dupont")
CHILD = Member("112057502300163", "Léa", "Dupont")


@pytest.mark.parametrize(
    ("day", "words"),
    [
        (dt.date(2022, 2, 28), "lundi 28 février 2022"),
        (dt.date(2022, 3, 1), "mardi 1er mars 2022"),
        (dt.date(2024, 2, 29), "jeudi 29 février 2024"),
        (dt.date(2022, 8, 15), "lundi 15 août 2022"),
        (dt.date(2022, 12, 25), "dimanche 25 décembre 2022"),
        (dt.date(2022, 1, 1), "samedi 1er janvier 2022"),
    ],
)
def test_dates_are_written_in_french_words(day: dt.date, words: str) -> None:
    assert date_in_words(day) == words


@pytest.mark.parametrize(
    ("window", "send_date", "last_day"),
    [
        (OptOutWindow(), dt.date(2022, 1, 31), "lundi 28 février 2022"),
        (OptOutWindow(), dt.date(2024, 1, 31), "jeudi 29 février 2024"),
        (OptOutWindow(months=0, weeks=6), dt.date(2022, 1, 31), "lundi 14 mars 2022"),
    ],
)
def test_the_message_states_the_last_day_of_the_window_set(
    window: OptOutWindow, send_date: dt.date, last_day: str
) -> None:
    content = message_content("ref-1", PARENT.nir, PARENT, [PARENT], KEY, send_date, window)
    assert f"au plus tard le {last_day}" in render_text(content)
    assert any(last_day in paragraph for paragraph in letter_paragraphs(content))


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([PARENT], "Votre espace Mon espace santé sera créé automatiquement"),
        ([PARENT, CHILD], "Ce message vous concerne, ainsi que la personne dont vous êtes le représentant légal"),
        ([CHILD], "Ce message concerne la personne dont vous êtes le représentant légal"),
    ],
)
def test_the_message_says_who_it_is_for(members: list[Member], expected: str) -> None:
    content = message_content("ref-1", PARENT.nir, PARENT, members, KEY, dt.date(2022, 1, 31), OptOutWindow())
    text_ = render_text(content)
    assert expected in text_
    assert text_.count(" : ") >= len(members)  # one code line per person
    assert PARENT.nir not in text_ and CHILD.nir not in text_


def test_an_address_that_could_forge_a_header_is_refused() -> None:
    content = message_content("ref-1", PARENT.nir, PARENT, [PARENT], KEY, dt.date(2022, 1, 31), OptOutWindow())
    for address in ("a@b.fr\r\nBcc: x@y.fr", "<a@b.fr>", "Jean <a@b.fr>", "", "a b@c.fr"):
        with pytest.raises(UnsafeRecipientAddress):
            build_email(content, address)


def test_every_attempt_carries_the_same_message_id_with_the_reference() -> None:
    content = message_content("0b6f1c2e-1111-4aaa-8bbb-123456789abc", PARENT.nir, PARENT, [PARENT], KEY,
                              dt.date(2022, 1, 31), OptOutWindow())
    first, second = (
        email.message_from_bytes(build_email(content, "a@b.fr", attempt=n), policy=email.policy.default)
        for n in (1, 2)
    )
    assert first["Message-ID"] == second["Message-ID"] == "<0b6f1c2e-1111-4aaa-8bbb-123456789abc@mes-rollout.invalid>"
    assert (first["X-Mes-Attempt"], second["X-Mes-Attempt"]) == ("1", "2")
    assert reference_of(first["Message-ID"]) == "0b6f1c2e-1111-4aaa-8bbb-123456789abc"
    assert first.get_body(("plain",)).get_content() == second.get_body(("plain",)).get_content()
