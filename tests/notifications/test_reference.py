"""Message references (enrolment/references.py): the alphabet, the check symbol worked by hand, every
single wrong symbol and every swap caught, what a person may type, and one reference per message
on both databases, through the planning and the look-up a phone agent runs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from enrolment.references import (
    ALPHABET,
    LENGTH,
    BadReference,
    check_symbol,
    draw,
    free_references,
    grouped,
    is_valid,
    parse,
)
from mes_rollout.config import OptOutWindow
from notifications.lookup import find_message
from notifications.render import Member, letter_paragraphs, message_content, render_text
from tests.enrolment.builders import load_people as load_register_rows
from tests.enrolment.builders import plan_wave
from tests.factories import person_row
from tests.notifications.factories import create_wave

# Two ids whose first draws are the same reference (found by drawing 1.2 million ids): the clash
# that free_references must resolve.
CLASHING = ("message-745479", "message-1218900")
CLASH = "USVR7H3NN"


def test_the_alphabet_has_no_ambiguous_symbol_and_references_are_nine_symbols() -> None:
    assert ALPHABET == "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
    assert not set("0O1IL") & set(ALPHABET)
    assert len(ALPHABET) == 31 and all(31 % n for n in range(2, 31))  # prime: the check's proof needs it
    assert LENGTH == 9 and 8 <= LENGTH <= 10
    references = [draw(f"notification-{n}") for n in range(2000)]
    assert {len(reference) for reference in references} == {9}
    assert set("".join(references)) == set(ALPHABET)  # every symbol is used, no other
    assert all(is_valid(reference) for reference in references)


@pytest.mark.parametrize(
    ("body", "check"),
    [
        # Values: 2..9 -> 0..7, A -> 8 ... Z -> 30. The check c makes 1*v1 + ... + 8*v8 + 9*c = 0 (mod 31);
        # 9 * 7 = 63 = 1 (mod 31), so c = -7 * (1*v1 + ... + 8*v8) mod 31.
        ("22222222", "2"),  # sum 0: c = 0 -> '2'
        ("23456789", "4"),  # 1*0 + 2*1 + ... + 8*7 = 168 = 13 (mod 31); -7 * 13 = -91 = 2 (mod 31) -> '4'
        ("ABCDEFGH", "3"),  # 1*8 + 2*9 + ... + 8*15 = 456 = 22 (mod 31); -7 * 22 = -154 = 1 (mod 31) -> '3'
        ("Z2222222", "9"),  # 1*30 = 30; -7 * 30 = -210 = 7 (mod 31) -> '9'
    ],
)
def test_the_check_symbol_worked_by_hand(body: str, check: str) -> None:
    assert check_symbol(body) == check
    assert is_valid(body + check)


def test_a_wrong_symbol_or_two_swapped_symbols_are_caught_worked_by_hand() -> None:
    assert is_valid("234567894")
    # One symbol misheard: 3 for 2 at position 1 adds 1*1; 5 for 4 at position 9 adds 9*1: not 0 (mod 31).
    for misheard in ("334567894", "234567895", "23456789Z", "Z34567894"):
        assert not is_valid(misheard), misheard
    # Two neighbours swapped: 2<->3 at positions 1-2 adds (1-2)*(1-0) = -1; 9<->4 at 8-9 adds (8-9)*(2-7) = 5.
    for swapped in ("324567894", "234567849", "243567894"):
        assert not is_valid(swapped), swapped
    with pytest.raises(BadReference, match="check symbol does not match"):
        parse("3245-6789-4")


def _single_errors(reference: str) -> list[str]:
    substitutions = [
        reference[:position] + symbol + reference[position + 1 :]
        for position in range(len(reference))
        for symbol in ALPHABET
        if symbol != reference[position]
    ]
    swaps = [
        reference[:position] + reference[position + 1] + reference[position] + reference[position + 2 :]
        for position in range(len(reference) - 1)
        if reference[position] != reference[position + 1]
    ]
    return substitutions + swaps


def test_every_single_substitution_and_adjacent_swap_of_a_sample_is_caught() -> None:
    sample = [draw(f"sample-{n}") for n in range(300)] + ["234567894", "ABCDEFGH3", "222222222", CLASH]
    for reference in sample:
        errors = _single_errors(reference)
        assert len(errors) >= 9 * 30  # every position, every other symbol, plus the swaps
        caught = [error for error in errors if not is_valid(error)]
        assert caught == errors, (reference, set(errors) - set(caught))


@given(
    body=st.text(alphabet=ALPHABET, min_size=8, max_size=8),
    position=st.integers(min_value=0, max_value=8),
    replacement=st.sampled_from(ALPHABET),
    swap_at=st.integers(min_value=0, max_value=7),
)
def test_any_reference_catches_any_single_wrong_symbol_and_any_adjacent_swap(
    body: str, position: int, replacement: str, swap_at: int
) -> None:
    reference = body + check_symbol(body)
    assert is_valid(reference)
    misread = reference[:position] + replacement + reference[position + 1 :]
    assert is_valid(misread) == (misread == reference)
    swapped = reference[:swap_at] + reference[swap_at + 1] + reference[swap_at] + reference[swap_at + 2 :]
    assert is_valid(swapped) == (swapped == reference)


def test_a_reference_is_read_as_typed_and_printed_in_groups() -> None:
    assert grouped("234567894") == "2345-6789-4"
    for typed in ("2345-6789-4", " 2345 6789 4 ", "234567894", "2345.6789/4"):
        assert parse(typed) == "234567894"
    assert parse("abcd-efgh-3") == "ABCDEFGH3"
    with pytest.raises(BadReference, match="9 symbols, not 8"):
        parse("2345-6789")
    with pytest.raises(BadReference, match="no 0, O, 1, I or L"):
        parse("2345-6789-O")
    with pytest.raises(BadReference, match="no 0, O, 1, I or L"):
        parse("1BCD-EFGH-3")
    # Drawn from the id: the same every time, another on the next attempt.
    assert draw(CLASHING[0]) == draw(CLASHING[1]) == CLASH
    assert draw(CLASHING[1], 1) != CLASH and is_valid(draw(CLASHING[1], 1))


def _insert(connection: Connection, notification_id: str, wave_id: str, reference: str) -> None:
    connection.execute(
        text(
            "INSERT INTO notifications (notification_id, wave_id, recipient_nir, channel, status, reference,"
            " created_at, updated_at) VALUES (:id, :wave, '180037502300145', 'letter', 'created', :reference,"
            " :now, :now)"
        ),
        {"id": notification_id, "wave": wave_id, "reference": reference, "now": dt.datetime(2022, 1, 31, tzinfo=dt.UTC)},
    )


def test_two_notifications_never_share_a_reference(engine: Engine, settings_env: Path) -> None:
    wave = create_wave(engine, settings_env)
    with engine.begin() as connection:
        # In one call, the second id of a clashing pair gets its next draw.
        given_together = free_references(connection, list(CLASHING))
        assert given_together == {CLASHING[0]: CLASH, CLASHING[1]: draw(CLASHING[1], 1)}
        _insert(connection, CLASHING[0], wave, CLASH)
    with engine.begin() as connection:
        # Against the database: taken by another message -> next draw; held by the message itself -> kept.
        assert free_references(connection, [CLASHING[1]]) == {CLASHING[1]: draw(CLASHING[1], 1)}
        assert free_references(connection, [CLASHING[0]]) == {CLASHING[0]: CLASH}
    # The UNIQUE index refuses a second message with the same reference, whatever the code does.
    with pytest.raises(IntegrityError), engine.begin() as connection:
        _insert(connection, CLASHING[1], wave, CLASH)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM notifications")).scalar_one() == 1


def test_planning_gives_every_message_its_own_reference_and_the_agent_finds_it(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    parent = person_row(departement="02", sexe="M")
    people = [person_row(departement="02") for _ in range(6)] + [
        parent,
        person_row(departement="02", date_naissance="2012-05-06", nir_representant=parent["nir"], email=""),
    ]
    load_register_rows(engine, people, tmp_path / "register")
    plan_wave(engine, settings_env, "W-REF", ["02"], dt.date(2022, 1, 31), shard_size=3)

    with engine.connect() as connection:
        rows = connection.execute(text("SELECT notification_id, reference FROM notifications")).all()
        assert len(rows) == 7  # six adults, and the father for himself and his child
        references = [row.reference for row in rows]
        assert len(set(references)) == 7 and all(is_valid(reference) for reference in references)
        # Drawn from the id (no clash in so few): the same reference when planning is re-run.
        assert {row.reference for row in rows} == {draw(row.notification_id) for row in rows}
        father = connection.execute(
            text("SELECT notification_id, reference FROM notifications WHERE recipient_nir = :nir"),
            {"nir": parent["nir"]},
        ).one()
        found = find_message(connection, grouped(father.reference).lower().replace("-", " "))
    assert found["found"] is True and found["notification_id"] == father.notification_id
    assert found["reference"] == grouped(father.reference) and found["channel"] == "email"
    assert [person["nir"] for person in found["people"]] == sorted(
        f"{nir[:5]}**********" for nir in (parent["nir"], people[-1]["nir"])
    )
    assert {event["action"] for event in found["events"]} <= {"status_changed", "notification_created"}
    shown = repr(found)
    assert parent["nir"] not in shown and parent["email"] not in shown and parent["nom_naissance"] not in shown


def test_the_look_up_names_a_misread_reference_and_an_unknown_one(engine: Engine, settings_env: Path) -> None:
    with engine.connect() as connection:
        with pytest.raises(BadReference):
            find_message(connection, "2345-6789-5")
        assert find_message(connection, "2345-6789-4") == {"reference": "2345-6789-4", "found": False}


def test_a_representative_is_named_as_the_recipients_sex_says() -> None:
    key = b"k" * 32
    mother = Member("280037502300192", "Zoé", "Martin", "F")
    father = Member("180037502300145", "Jean", "Dupont", "M")
    child = Member("212057502300199", "Noé", "Martin", "M")
    for recipient, members, sentence in (
        (mother, [child], "Ce message concerne la personne dont vous êtes la représentante légale."),
        (father, [child], "Ce message concerne la personne dont vous êtes le représentant légal."),
        (mother, [mother, child], "Ce message vous concerne, ainsi que la personne dont vous êtes la représentante légale."),
        (father, [father, child], "Ce message vous concerne, ainsi que la personne dont vous êtes le représentant légal."),
    ):
        content = message_content("id", recipient.nir, recipient, members, key, dt.date(2022, 1, 31), OptOutWindow(),
                                  reference="234567894")
        assert sentence in render_text(content)
        assert any(paragraph.startswith(sentence) for paragraph in letter_paragraphs(content))
    # Without a known sex (no persons row behind an email), the masculine of the law's text.
    unknown = Member(father.nir, "Jean", "Dupont")
    content = message_content("id", unknown.nir, unknown, [child], key, dt.date(2022, 1, 31), OptOutWindow(),
                              reference="234567894")
    assert "dont vous êtes le représentant légal." in render_text(content)
