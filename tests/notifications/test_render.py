"""What a message says: the deadline in French words, who it is for, and headers that cannot be forged."""

from __future__ import annotations

import datetime as dt
import email
import email.message
import email.policy

import pytest

from mes_rollout.config import OptOutWindow
from notifications.french_dates import date_in_words
from notifications.render import (
    DEFAULT_SENDER,
    SENDER_NAME,
    SUBJECT,
    Member,
    UnsafeRecipientAddress,
    build_email,
    letter_paragraphs,
    message_content,
    reference_of,
    render_html,
    render_text,
)

KEY = b"k" * 32
PARENT = Member("180037502300145", "Jean", "Dupont", "M")
CHILD = Member("112057502300163", "Léa", "Dupont", "F")
# Stored references (enrolment/references.py), worked by hand in tests/notifications/test_reference.py.
REFERENCE, OTHER_REFERENCE = "234567894", "ABCDEFGH3"


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
    content = message_content("ref-1", PARENT.nir, PARENT, [PARENT], KEY, send_date, window, reference=REFERENCE)
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
    content = message_content("ref-1", PARENT.nir, PARENT, members, KEY, dt.date(2022, 1, 31), OptOutWindow(),
                              reference=REFERENCE)
    text_ = render_text(content)
    assert expected in text_
    assert text_.count(" : ") >= len(members)  # one code line per person
    assert PARENT.nir not in text_ and CHILD.nir not in text_


def test_an_address_that_could_forge_a_header_is_refused() -> None:
    content = message_content("ref-1", PARENT.nir, PARENT, [PARENT], KEY, dt.date(2022, 1, 31), OptOutWindow(),
                              reference=REFERENCE)
    for address in ("a@b.fr\r\nBcc: x@y.fr", "<a@b.fr>", "Jean <a@b.fr>", "", "a b@c.fr"):
        with pytest.raises(UnsafeRecipientAddress):
            build_email(content, address)


def test_every_attempt_carries_the_same_message_id_with_the_reference() -> None:
    content = message_content("0b6f1c2e-1111-4aaa-8bbb-123456789abc", PARENT.nir, PARENT, [PARENT], KEY,
                              dt.date(2022, 1, 31), OptOutWindow(), reference=REFERENCE)
    first, second = (
        email.message_from_bytes(build_email(content, "a@b.fr", attempt=n), policy=email.policy.default)
        for n in (1, 2)
    )
    assert first["Message-ID"] == second["Message-ID"] == "<0b6f1c2e-1111-4aaa-8bbb-123456789abc@mes-rollout.invalid>"
    assert (first["X-Mes-Attempt"], second["X-Mes-Attempt"]) == ("1", "2")
    assert reference_of(first["Message-ID"]) == "0b6f1c2e-1111-4aaa-8bbb-123456789abc"
    assert first.get_body(("plain",)).get_content() == second.get_body(("plain",)).get_content()
    # The body shows the short reference, grouped for reading aloud, never the notification id.
    for subtype in ("plain", "html"):
        body = first.get_body((subtype,)).get_content()
        assert "Référence du message : 2345-6789-4" in body
        assert "0b6f1c2e" not in body


TRICKY_NAMES = [
    ("Léa <script>alert(1)</script>", "O'Brien & \"Fils\""),
    ("Jean\r\nBcc: pirate@example.org", "Dupont\u2028Subject: faux"),
    ("=?utf-8?q?Fake?=", "x" * 120),
    ("Maëlys 😀", "Ñúñez-Ÿ\tÉ" * 12),
    ("", None),
]


def _email_package_message(content_text: str, content_html: str, headers: dict[str, str]) -> bytes:
    """The same email built the slow, standard way, as the reference the hand-built bytes must match."""
    message = email.message.EmailMessage(policy=email.policy.SMTP)
    for name, value in headers.items():
        message[name] = value
    message.set_content(content_text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(content_html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message.as_bytes()


@pytest.mark.parametrize(("prenom", "nom"), TRICKY_NAMES)
@pytest.mark.parametrize("people", [1, 3])
def test_the_hand_built_email_says_what_the_email_package_builds(prenom: str, nom: str | None, people: int) -> None:
    recipient = Member(PARENT.nir, prenom, nom)
    members = [recipient] + [Member(f"11205750230{index:04d}", nom, prenom) for index in range(people - 1)]
    content = message_content("0b6f1c2e-1111-4aaa-8bbb-123456789abc", recipient.nir, recipient, members, KEY,
                              dt.date(2022, 1, 31), OptOutWindow(), reference=REFERENCE)
    fast = email.message_from_bytes(build_email(content, "a@b.fr", attempt=2), policy=email.policy.default)
    expected_text, expected_html = render_text(content), render_html(content)
    reference = email.message_from_bytes(
        _email_package_message(
            expected_text,
            expected_html,
            {"From": f"{SENDER_NAME} <{DEFAULT_SENDER}>", "To": "a@b.fr", "Subject": SUBJECT,
             "Message-ID": f"<{content.notification_id}@mes-rollout.invalid>"},
        ),
        policy=email.policy.default,
    )
    for header in ("From", "To", "Subject", "Message-ID"):
        assert str(fast[header]) == str(reference[header])
    assert fast.get_content_type() == reference.get_content_type() == "multipart/alternative"
    for subtype in ("plain", "html"):
        fast_part, reference_part = fast.get_body((subtype,)), reference.get_body((subtype,))
        assert fast_part.get_content_charset() == "utf-8"
        assert fast_part.get_content().replace("\r\n", "\n") == reference_part.get_content().replace("\r\n", "\n")
    # Names are data: escaped in HTML, on one line, never in a header.
    html = fast.get_body(("html",)).get_content()
    assert "<script>" not in html and "Bcc" not in str(fast.keys())
    assert set(fast.keys()) == {"From", "To", "Subject", "Date", "Message-ID", "X-Mes-Attempt", "MIME-Version",
                                "Content-Language", "Content-Type"}


def test_a_message_renders_the_same_with_the_wording_cached_or_not() -> None:
    """The bodies are rendered once per wording with slots for the names: a second message of the
    same wording must carry its own names, codes and reference, not the first one's; a mother's
    message is not a father's wording with her name in it."""
    first = message_content("ref-1", PARENT.nir, PARENT, [PARENT, CHILD], KEY, dt.date(2022, 1, 31), OptOutWindow(),
                            reference=REFERENCE)
    other_parent = Member("280037502300192", "Zoé", "Martin", "F")
    other_child = Member("212057502300199", "Noé", "Martin", "M")
    second = message_content("ref-2", other_parent.nir, other_parent, [other_parent, other_child], KEY,
                             dt.date(2022, 1, 31), OptOutWindow(), reference=OTHER_REFERENCE)
    for content, reference, wording in ((first, "2345-6789-4", "le représentant légal"),
                                        (second, "ABCD-EFGH-3", "la représentante légale")):
        parsed = email.message_from_bytes(build_email(content, "a@b.fr"), policy=email.policy.default)
        assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == render_text(content)
        assert parsed.get_body(("html",)).get_content().replace("\r\n", "\n") == render_html(content)
        assert f"Référence du message : {reference}" in render_text(content)
        assert f"dont vous êtes {wording}." in render_text(content)
