"""Sending emails to a real SMTP server on loopback (aiosmtpd), on SQLite and PostgreSQL: what the
messages say, parsed back with the `email` package; retries, bounces, drops, re-runs and settling."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from enrolment.codes import formatted, provisional_code, wave_key
from enrolment.references import grouped
from enrolment.window import opt_out_deadline
from mes_rollout.config import load_settings
from mes_rollout.db import as_datetime
from notifications import dao
from notifications.email_client import RelayUnreachableError, SmtpTarget
from notifications.fallback import fallback_letter_id
from notifications.loopback_smtp import free_port, serving
from notifications.render import reference_of
from notifications.sending import RetryPolicy, in_flight_limit, send_emails, settle_stuck
from tests.notifications.factories import (
    adult,
    create_notification,
    create_wave,
    family,
    fetch,
    load_people,
    scalar,
)
from tests.notifications.relay import ScriptedRelay

SEND_DAY = dt.date(2022, 1, 31)
FAST = RetryPolicy(max_attempts=3, first_delay=0.05)


@pytest.fixture
def relay() -> Iterator[tuple[ScriptedRelay, SmtpTarget]]:
    handler = ScriptedRelay()
    with serving(handler) as target:
        yield handler, target


def _send(engine: Engine, target: SmtpTarget, day: dt.date = SEND_DAY, shard: int | None = None) -> dict[str, int]:
    return send_emails(
        engine, load_settings(), target, logical_date=day, run_id=f"run-{day}", shard=shard, retry=FAST
    ).as_dict()


def _status(engine: Engine, notification_id: str) -> tuple[str, int]:
    row = fetch(engine, "SELECT status, attempts FROM notifications WHERE notification_id = :id", id=notification_id)[0]
    return row[0], int(row[1])


def test_each_email_says_what_it_must_and_nothing_it_must_not(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: tuple[ScriptedRelay, SmtpTarget]
) -> None:
    handler, target = relay
    single = adult(email="camille@example.fr")
    load_people(engine, tmp_path, [single])
    parent, kids = family(tmp_path, engine, children=2, email="parent@example.fr")
    wave = create_wave(engine, settings_env)
    own = create_notification(engine, settings_env, wave, single)
    for_family = create_notification(engine, settings_env, wave, parent, [parent, *kids])

    summary = _send(engine, target)

    assert summary["sent"] == 2 and summary["permanent_failures"] == 0
    key = wave_key(settings_env, wave)
    by_to = {message["To"]: message for message in handler.messages()}
    assert set(by_to) == {"camille@example.fr", "parent@example.fr"}
    shown = {row.notification_id: grouped(row.reference) for row in fetch(engine, "SELECT * FROM notifications")}
    for message, reference, people in ((by_to["camille@example.fr"], own, [single]),
                                       (by_to["parent@example.fr"], for_family, [parent, *kids])):
        assert message["Subject"] == "Mon espace santé : votre espace santé personnel"
        assert message["From"].addresses[0].addr_spec == "ne-pas-repondre@mes-rollout.invalid"
        assert reference_of(message["Message-ID"]) == reference
        assert message["Date"] is not None
        assert message.get_content_type() == "multipart/alternative"
        plain = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        for part in (plain, html):
            assert "lundi 28 février 2022" in part  # 31 January + one month, in words
            assert "3422" in part
            assert f"Référence du message : {shown[reference]}" in part  # K7QX-M4RT-9: read out on the 3422 line
            assert reference not in part  # the notification id stays in the Message-ID
            for person in people:
                assert formatted(provisional_code(key, person["nir"])) in part
        raw = message.as_bytes()
        for person in people:
            assert person["nir"].encode() not in raw and person["nir"] not in plain + html
    family_plain = by_to["parent@example.fr"].get_body(("plain",)).get_content()
    assert "dont vous êtes la représentante légale." in family_plain and "Codes provisoires" in family_plain
    assert "Enfant0 MARTIN" in family_plain and "Enfant1 MARTIN" in family_plain

    assert _status(engine, own) == ("sent", 1)
    deadline = opt_out_deadline(SEND_DAY, load_settings().opt_out_window)
    states = fetch(engine, "SELECT nir, state, opt_out_deadline FROM enrolments")
    assert {row.state for row in states} == {"notified"} and len(states) == 4
    assert {as_datetime(row.opt_out_deadline) for row in states} == {deadline}
    assert scalar(engine, "SELECT COUNT(*) FROM sending_attempts WHERE outcome = 'sent' AND smtp_code = 250") == 2
    audit = fetch(engine, "SELECT entity_id, from_state, to_state FROM audit_trail WHERE entity = 'notification'")
    assert {(row.from_state, row.to_state) for row in audit if row.entity_id == own} == {
        ("created", "sending"), ("sending", "sent")
    }
    assert scalar(engine, "SELECT COUNT(*) FROM audit_trail WHERE action = 'window_started'") == 4


def test_names_with_markup_quotes_and_line_breaks_render_harmlessly(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: tuple[ScriptedRelay, SmtpTarget]
) -> None:
    handler, target = relay
    hostile = adult(
        prenoms='<script>alert("x")</script> Zoé',
        nom_naissance="O'Brien\r\nBcc: victime@example.org\r\n\r\n<b>gras</b>",
        email="zoe@example.fr",
    )
    load_people(engine, tmp_path, [hostile])
    wave = create_wave(engine, settings_env)
    create_notification(engine, settings_env, wave, hostile)

    _send(engine, target)

    [message] = handler.messages()
    assert message["Bcc"] is None and message["To"] == "zoe@example.fr"
    assert sorted(set(message.keys())) == sorted(
        {"From", "To", "Subject", "Date", "Message-ID", "X-Mes-Attempt", "MIME-Version", "Content-Language",
         "Content-Type"}
    )
    html = message.get_body(("html",)).get_content()
    plain = message.get_body(("plain",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;B&gt;GRAS&lt;/B&gt;" in html
    greeting = next(line for line in plain.splitlines() if line.startswith("Bonjour"))
    assert "BCC: VICTIME@EXAMPLE.ORG" in greeting  # the line break became a space: the name stays one line
    assert not re.search(r"^Bcc:", plain, re.MULTILINE)


def test_a_relay_answering_451_then_250_is_retried_and_the_message_sent_once(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: tuple[ScriptedRelay, SmtpTarget]
) -> None:
    handler, target = relay
    person = adult(email="busy@example.fr")
    load_people(engine, tmp_path, [person])
    wave = create_wave(engine, settings_env)
    notification = create_notification(engine, settings_env, wave, person)
    handler.answer("busy@example.fr", "451", "451")

    summary = _send(engine, target)

    assert summary["sent"] == 1 and summary["temporary_attempts"] == 2
    assert len(handler.to("busy@example.fr")) == 1 and handler.attempts["busy@example.fr"] == 3
    assert _status(engine, notification) == ("sent", 3)
    attempts = fetch(engine, "SELECT attempt, outcome, smtp_code FROM sending_attempts ORDER BY attempt")
    assert [tuple(row) for row in attempts] == [(1, "temporary_failure", 451), (2, "temporary_failure", 451),
                                                (3, "sent", 250)]


def test_a_dropped_connection_is_retried(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: tuple[ScriptedRelay, SmtpTarget]
) -> None:
    handler, target = relay
    people = [adult(email="drop@example.fr"), adult(email="fine@example.fr")]
    load_people(engine, tmp_path, people)
    wave = create_wave(engine, settings_env)
    dropped = create_notification(engine, settings_env, wave, people[0])
    create_notification(engine, settings_env, wave, people[1])
    handler.answer("drop@example.fr", "drop")

    summary = _send(engine, target)

    assert summary["sent"] == 2
    assert len(handler.to("drop@example.fr")) == 1
    assert _status(engine, dropped) == ("sent", 2)


def test_550_on_the_recipient_bounces_the_address_and_queues_a_letter(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: tuple[ScriptedRelay, SmtpTarget]
) -> None:
    handler, target = relay
    parent, kids = family(tmp_path, engine, children=1, email="gone@example.fr")
    homeless = adult(email="nowhere@example.fr", adresse_ligne4="", code_postal="", commune="")
    load_people(engine, tmp_path, [homeless])
    wave = create_wave(engine, settings_env)
    bounced = create_notification(engine, settings_env, wave, parent, [parent, *kids])
    unreachable = create_notification(engine, settings_env, wave, homeless)
    handler.answer("gone@example.fr", "550")
    handler.answer("nowhere@example.fr", "550")

    summary = _send(engine, target)

    assert summary["permanent_failures"] == 2 and summary["letters_queued"] == 1
    assert summary["unreachable_messages"] == 1 and handler.received == []
    assert _status(engine, bounced)[0] == "permanent_failure"
    assert scalar(engine, "SELECT email_bounced FROM persons WHERE nir = :nir", nir=parent["nir"]) in (True, 1)
    letter = fetch(engine, "SELECT * FROM notifications WHERE replaces_notification_id = :id", id=bounced)
    assert len(letter) == 1 and letter[0].notification_id == fallback_letter_id(bounced)
    pointed = fetch(engine, "SELECT DISTINCT notification_id FROM enrolments WHERE nir IN (:a, :b)", a=parent["nir"],
                    b=kids[0]["nir"])
    assert [row.notification_id for row in pointed] == [letter[0].notification_id]
    assert (letter[0].channel, letter[0].status, letter[0].wave_id) == ("letter", "created", wave)
    members = fetch(engine, "SELECT nir FROM notification_members WHERE notification_id = :id", id=letter[0].notification_id)
    assert {row.nir for row in members} == {parent["nir"], kids[0]["nir"]}
    states = dict(fetch(engine, "SELECT nir, state FROM enrolments"))
    assert states[parent["nir"]] == states[kids[0]["nir"]] == "planned"  # no window on a bounced email
    assert states[homeless["nir"]] == "unreachable"
    assert _status(engine, unreachable)[0] == "permanent_failure"

    # Sending again sends nothing: the bounced email stays bounced, its letter waits for printing.
    again = _send(engine, target)
    assert again["sent"] == again["permanent_failures"] == 0 and handler.received == []


def test_temporary_failures_to_the_end_are_a_technical_failure_and_a_letter_without_bounce(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: tuple[ScriptedRelay, SmtpTarget]
) -> None:
    handler, target = relay
    person = adult(email="full@example.fr")
    load_people(engine, tmp_path, [person])
    wave = create_wave(engine, settings_env)
    notification = create_notification(engine, settings_env, wave, person)
    handler.answer("full@example.fr", "451", "451", "451")

    summary = _send(engine, target)

    assert summary["technical_failures"] == 1 and summary["letters_queued"] == 1
    assert _status(engine, notification) == ("technical_failure", 3)
    assert scalar(engine, "SELECT email_bounced FROM persons WHERE nir = :nir", nir=person["nir"]) in (False, 0)


def test_a_relay_that_cannot_be_reached_stops_the_run_and_turns_nothing_into_letters(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    people = [adult(email=f"u{i}@example.fr") for i in range(2)]
    load_people(engine, tmp_path, people)
    wave = create_wave(engine, settings_env)
    ids = [create_notification(engine, settings_env, wave, person) for person in people]
    nobody = SmtpTarget("127.0.0.1", free_port(), timeout=2)

    with pytest.raises(RelayUnreachableError):
        send_emails(engine, load_settings(), nobody, logical_date=SEND_DAY, run_id="down", shard=None,
                    retry=RetryPolicy(max_attempts=2, first_delay=0.01))

    # Both given back `sending`, marked so. The run stopped as soon as one failed its last attempt
    # (2); the other's second try may not have been claimed by then (its retry fell due a few
    # milliseconds later, which a loaded machine makes a later step): 1 or 2 attempts.
    statuses = [_status(engine, i) for i in ids]
    assert {status for status, _ in statuses} == {"sending"}
    assert sorted(attempts for _, attempts in statuses) in ([1, 2], [2, 2])
    details = {row[0] for row in fetch(engine, "SELECT status_detail FROM notifications")}
    assert details == {dao.RELAY_UNREACHABLE}
    assert scalar(engine, "SELECT COUNT(*) FROM notifications WHERE channel = 'letter'") == 0
    handler = ScriptedRelay()
    with serving(handler) as relay_back:
        again = send_emails(engine, load_settings(), relay_back, logical_date=SEND_DAY, run_id="up", shard=None,
                            retry=FAST)
    assert again.sent == 2 and again.resent_after_crash == 2 and len(handler.received) == 2


def test_only_approved_waves_due_on_the_run_date_are_sent(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: tuple[ScriptedRelay, SmtpTarget]
) -> None:
    handler, target = relay
    people = [adult(email=f"p{i}@example.fr") for i in range(3)]
    load_people(engine, tmp_path, people)
    due = create_wave(engine, settings_env)
    later = create_wave(engine, settings_env, send_date=dt.date(2022, 2, 7))
    waiting = create_wave(engine, settings_env, state="awaiting_approval")
    create_notification(engine, settings_env, due, people[0])
    create_notification(engine, settings_env, later, people[1])
    create_notification(engine, settings_env, waiting, people[2])

    assert _send(engine, target)["sent"] == 1
    assert [m["To"] for m in handler.messages()] == ["p0@example.fr"]
    assert _send(engine, target, day=dt.date(2022, 2, 7))["sent"] == 1
    assert scalar(engine, "SELECT COUNT(*) FROM notifications WHERE status = 'created'") == 1


def test_a_rerun_never_sends_what_is_sent_and_resends_what_a_crash_left_sending(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: tuple[ScriptedRelay, SmtpTarget]
) -> None:
    handler, target = relay
    people = [adult(email=f"r{i}@example.fr") for i in range(4)]
    load_people(engine, tmp_path, people)
    wave = create_wave(engine, settings_env)
    ids = [create_notification(engine, settings_env, wave, person, shard=index % 2) for index, person in
           enumerate(people)]
    # A sender claimed two messages of shard 0 an hour ago and died before recording anything.
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with engine.begin() as connection:
        pending = dao.pending_emails(connection, logical_date=SEND_DAY, status=dao.Status.CREATED, after_id="",
                                     limit=10, now=an_hour_ago, shard=0)
        dao.claim_for_sending(connection, pending, send_date=SEND_DAY, now=an_hour_ago, run_id="dead",
                              lease=dao.Lease("dead-sender", an_hour_ago + dt.timedelta(minutes=10)))
    assert {_status(engine, i)[0] for i in ids[0::2]} == {"sending"}

    first = _send(engine, target)
    assert first["sent"] == 4 and first["resent_after_crash"] == 2
    assert {_status(engine, i) for i in ids[0::2]} == {("sent", 2)}
    second = _send(engine, target)
    assert second["sent"] == 0 and len(handler.received) == 4


def test_settle_resends_only_messages_whose_lease_passed_and_gives_up_after_the_last_attempt(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: tuple[ScriptedRelay, SmtpTarget]
) -> None:
    handler, target = relay
    people = [adult(email=f"s{i}@example.fr") for i in range(3)]
    load_people(engine, tmp_path, people)
    wave = create_wave(engine, settings_env)
    stale, fresh, worn = (create_notification(engine, settings_env, wave, person) for person in people)
    passed = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    running = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    with engine.begin() as connection:
        for notification_id, lease_until, attempts in ((stale, passed, 1), (fresh, running, 1),
                                                       (worn, passed, FAST.max_attempts)):
            connection.execute(
                text("UPDATE notifications SET status = 'sending', attempts = :a, send_date = :d,"
                     " claimed_by = 'another-sender', lease_until = :until WHERE notification_id = :id"),
                {"a": attempts, "d": SEND_DAY, "until": lease_until, "id": notification_id},
            )

    summary = settle_stuck(engine, load_settings(), target, logical_date=dt.date(2022, 2, 1), run_id="settle",
                           retry=FAST)

    assert summary.sent == 1 and summary.technical_failures == 1 and summary.letters_queued == 1
    assert _status(engine, stale) == ("sent", 2)
    assert _status(engine, fresh) == ("sending", 1)  # its sender's lease runs: it is alive
    assert _status(engine, worn)[0] == "technical_failure"
    [message] = handler.messages()
    assert reference_of(message["Message-ID"]) == stale
    # The copy sent again states the deadline of its first send date, not the settle run's.
    assert "lundi 28 février 2022" in message.get_body(("plain",)).get_content()


def test_the_rate_limit_spaces_hand_overs(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: tuple[ScriptedRelay, SmtpTarget],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler, target = relay
    people = [adult(email=f"t{i}@example.fr") for i in range(6)]
    load_people(engine, tmp_path, people)
    wave = create_wave(engine, settings_env)
    for person in people:
        create_notification(engine, settings_env, wave, person)
    monkeypatch.setenv("MES_SMTP_RATE", "20")
    started = time.monotonic()
    assert _send(engine, target)["sent"] == 6
    assert time.monotonic() - started >= 5 / 20
    assert len(handler.received) == 6


def test_the_in_flight_limit_is_connections_times_two_hundred() -> None:
    assert in_flight_limit(8) == 1600 and in_flight_limit(1) == 200
