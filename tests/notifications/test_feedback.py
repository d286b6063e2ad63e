"""feedback.csv: statuses moved as the file says, each consequence (letter instead of a bounced
email, NPAI), the same line twice changing nothing, quarantine with reasons, whole-file failures,
and people told again once the register brings them a usable channel."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from mes_rollout.config import load_settings
from mes_rollout.csvfile import InputFileError
from mes_rollout.db import as_datetime
from notifications.email_client import SmtpTarget
from notifications.fallback import fallback_letter_id
from notifications.feedback import load_feedback
from notifications.letters import post_printed_batches, print_letters
from notifications.loopback_smtp import serving
from notifications.sending import RetryPolicy, send_emails
from tests.factories import write_csv
from tests.notifications.factories import adult, create_notification, create_wave, fetch, load_people, scalar
from tests.notifications.relay import ScriptedRelay

SEND_DAY = dt.date(2022, 1, 31)
LOAD_DAY = dt.date(2022, 2, 7)  # the logical day of the loads: every line of these files is on or before it
COLUMNS = ("notification_id", "status", "occurred_at", "detail")


@pytest.fixture
def relay() -> Iterator[SmtpTarget]:
    with serving(ScriptedRelay()) as target:
        yield target


def _feedback(folder: Path, name: str, lines: list[tuple[str, str, str, str]]) -> Path:
    return write_csv(folder / name, [dict(zip(COLUMNS, line, strict=True)) for line in lines], COLUMNS)


def _load(engine: Engine, path: Path, as_of: dt.date = LOAD_DAY) -> Any:
    return load_feedback(
        engine, path, window=load_settings().opt_out_window, as_of=as_of, run_id=f"feedback-{path.name}"
    )


def _snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    tables = ("notifications", "notification_members", "enrolments", "persons", "feedback_events", "audit_trail")
    with engine.connect() as connection:
        return {
            table: sorted(tuple(map(str, row)) for row in connection.execute(text(f"SELECT * FROM {table}")))  # noqa: S608
            for table in tables
        }


def _sent_wave(engine: Engine, var_dir: Path, folder: Path, relay: SmtpTarget) -> dict[str, Any]:
    """Four emails sent and one letter posted, all on 31 January."""
    people = {name: adult(email=f"{name}@example.fr") for name in ("delivered", "bounced", "full", "late", "dead_end")}
    people["letter"] = adult(email="")
    people["dead_end"].update(adresse_ligne4="", code_postal="", commune="")
    load_people(engine, folder, list(people.values()))
    wave = create_wave(engine, var_dir)
    ids = {
        name: create_notification(engine, var_dir, wave, person, channel="letter" if name == "letter" else "email")
        for name, person in people.items()
    }
    settings = load_settings()
    send_emails(engine, settings, relay, logical_date=SEND_DAY, run_id="send", shard=None, retry=RetryPolicy())
    print_letters(engine, settings, logical_date=SEND_DAY, run_id="print")
    post_printed_batches(engine, settings, logical_date=SEND_DAY, run_id="post")
    return {"people": people, "ids": ids, "wave": wave}


def test_feedback_moves_statuses_and_each_consequence_follows(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: SmtpTarget
) -> None:
    wave = _sent_wave(engine, settings_env, tmp_path, relay)
    ids, people = wave["ids"], wave["people"]
    path = _feedback(tmp_path, "feedback.csv", [
        (ids["delivered"], "delivered", "2022-01-31T10:00:00+01:00", "250 OK"),
        (ids["bounced"], "permanent_failure", "2022-01-31T10:05:00+01:00", "550 5.1.1 user unknown"),
        (ids["full"], "temporary_failure", "2022-02-03T10:00:00+01:00", "452 mailbox full, gave up"),
        (ids["dead_end"], "permanent_failure", "2022-01-31T11:00:00Z", "550"),
        (ids["letter"], "returned", "2022-02-07T09:00:00+01:00", "NPAI"),
    ])

    summary = _load(engine, path)

    assert (summary.read, summary.accepted, summary.quarantined, summary.applied) == (5, 5, 0, 5)
    assert summary.letters_queued == 2 and summary.unreachable_messages == 2
    statuses = dict(fetch(engine, "SELECT notification_id, status FROM notifications"))
    assert statuses[ids["delivered"]] == "delivered" and statuses[ids["late"]] == "sent"
    assert statuses[ids["bounced"]] == statuses[ids["dead_end"]] == "permanent_failure"
    assert statuses[ids["full"]] == "temporary_failure" and statuses[ids["letter"]] == "returned"
    assert statuses[fallback_letter_id(ids["bounced"])] == statuses[fallback_letter_id(ids["full"])] == "created"
    persons = {row.nir: row for row in fetch(engine, "SELECT nir, email_bounced, address_returned FROM persons")}
    assert persons[people["bounced"]["nir"]].email_bounced in (True, 1)
    assert persons[people["full"]["nir"]].email_bounced in (False, 0)  # the address is fine, the box was full
    assert persons[people["letter"]["nir"]].address_returned in (True, 1)
    enrolments = {row.nir: row for row in fetch(engine, "SELECT nir, state, opt_out_deadline FROM enrolments")}
    for name in ("bounced", "full"):  # the window stops until the letter is posted
        assert enrolments[people[name]["nir"]].state == "planned"
        assert enrolments[people[name]["nir"]].opt_out_deadline is None
    for name in ("dead_end", "letter"):
        assert enrolments[people[name]["nir"]].state == "unreachable"
    assert enrolments[people["delivered"]["nir"]].state == "notified"

    # The fallback letters go in the next batch, and posting them starts a new window.
    settings = load_settings()
    next_day = dt.date(2022, 2, 8)
    print_letters(engine, settings, logical_date=next_day, run_id="print-2")
    post_printed_batches(engine, settings, logical_date=next_day, run_id="post-2")
    bounced = fetch(engine, "SELECT state, opt_out_deadline FROM enrolments WHERE nir = :nir",
                    nir=people["bounced"]["nir"])[0]
    assert bounced.state == "notified" and as_datetime(bounced.opt_out_deadline).date() == dt.date(2022, 3, 8)


def test_the_same_lines_again_change_nothing(engine: Engine, settings_env: Path, tmp_path: Path, relay: SmtpTarget) -> None:
    ids = _sent_wave(engine, settings_env, tmp_path, relay)["ids"]
    lines = [
        (ids["bounced"], "permanent_failure", "2022-01-31T10:05:00+01:00", "550"),
        (ids["letter"], "returned", "2022-02-07T09:00:00+01:00", "NPAI"),
        (ids["bounced"], "permanent_failure", "2022-01-31T09:05:00Z", "the same instant, written in UTC"),
    ]
    first = _load(engine, _feedback(tmp_path, "a.csv", lines))
    assert (first.applied, first.seen_before) == (2, 1)
    before = _snapshot(engine)

    again = _load(engine, _feedback(tmp_path, "a.csv", lines))
    assert again.already_loaded and again.read == 3
    other_file = _load(engine, _feedback(tmp_path, "b.csv", [*lines, (ids["delivered"], "delivered",
                                                                       "2022-01-31T12:00:00+01:00", "")]))
    assert (other_file.read, other_file.applied, other_file.seen_before) == (4, 1, 3)
    after = _snapshot(engine)
    assert after["persons"] == before["persons"] and after["enrolments"] == before["enrolments"]
    assert len(after["notifications"]) == len(before["notifications"])  # no second fallback letter
    # A later report with the status the message already has is recorded, and changes nothing.
    no_change = _load(engine, _feedback(tmp_path, "c.csv", [(ids["delivered"], "delivered",
                                                               "2022-02-01T12:00:00+01:00", "")]))
    assert (no_change.applied, no_change.no_change) == (0, 1)


def test_lines_that_break_a_rule_are_quarantined_with_a_reason(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: SmtpTarget
) -> None:
    ids = _sent_wave(engine, settings_env, tmp_path, relay)["ids"]
    path = _feedback(tmp_path, "feedback.csv", [
        ("no-such-message", "delivered", "2022-01-31T10:00:00+01:00", ""),
        (ids["delivered"], "returned", "2022-01-31T10:00:00+01:00", "returned on an email"),
        (ids["letter"], "delivered", "2022-01-31T10:00:00+01:00", "delivered on a letter"),
        (ids["late"], "bounced", "2022-01-31T10:00:00+01:00", ""),
        (ids["late"], "delivered", "2022-01-31 10:00:00", "no offset"),
        (ids["late"], "delivered", "yesterday", ""),
        ("", "delivered", "2022-01-31T10:00:00+01:00", ""),
        (ids["bounced"], "permanent_failure", "2022-01-31T10:05:00+01:00", "550"),
        (ids["bounced"], "delivered", "2022-01-31T10:06:00+01:00", "delivered after a bounce"),
        (ids["delivered"], "delivered", "2022-01-31T10:00:00+01:00", "the one good line"),
    ])

    summary = _load(engine, path)

    assert (summary.read, summary.accepted, summary.quarantined) == (10, 2, 8)
    assert summary.as_dict()["quarantine_reasons"] == {
        "BAD_STATUS": 1, "BAD_TIMESTAMP": 2, "IMPOSSIBLE_TRANSITION": 3, "MISSING_FIELD": 1,
        "UNKNOWN_NOTIFICATION": 1,
    }
    quarantined = {row.line_no: row for row in fetch(engine, "SELECT * FROM quarantine WHERE file_kind = 'feedback'")}
    assert quarantined[3].reason_code == "IMPOSSIBLE_TRANSITION" and "email" in quarantined[3].detail
    assert quarantined[10].reason_code == "IMPOSSIBLE_TRANSITION"  # delivered after the bounce on line 9
    counts = fetch(engine, "SELECT rows_read, rows_accepted, rows_quarantined FROM input_files WHERE kind = 'feedback'")
    assert tuple(counts[0]) == (10, 2, 8)
    assert dict(fetch(engine, "SELECT notification_id, status FROM notifications"))[ids["delivered"]] == "delivered"


def test_a_line_dated_after_the_load_day_in_paris_is_quarantined(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: SmtpTarget
) -> None:
    ids = _sent_wave(engine, settings_env, tmp_path, relay)["ids"]
    path = _feedback(tmp_path, "feedback.csv", [
        (ids["delivered"], "delivered", "2022-02-01T23:59:00+01:00", "23:59 in Paris on the day: in time"),
        (ids["bounced"], "permanent_failure", "2022-02-02T00:00:00+01:00", "midnight in Paris: the next day"),
        (ids["full"], "temporary_failure", "2022-02-01T23:00:00Z", "23:00 UTC is 00:00 in Paris: the next day"),
        (ids["late"], "delivered", "2022-02-01T22:59:59Z", "23:59:59 in Paris: in time"),
        (ids["letter"], "returned", "2022-03-01T09:00:00+01:00", "a month ahead"),
    ])

    summary = _load(engine, path, as_of=dt.date(2022, 2, 1))

    assert (summary.read, summary.accepted, summary.quarantined, summary.applied) == (5, 2, 3, 2)
    assert summary.as_dict()["quarantine_reasons"] == {"OCCURRED_IN_FUTURE": 3}
    quarantined = fetch(engine, "SELECT line_no, reason_code FROM quarantine WHERE file_kind = 'feedback'")
    assert sorted(tuple(row) for row in quarantined) == [
        (3, "OCCURRED_IN_FUTURE"), (4, "OCCURRED_IN_FUTURE"), (6, "OCCURRED_IN_FUTURE")
    ]
    statuses = dict(fetch(engine, "SELECT notification_id, status FROM notifications"))
    assert (statuses[ids["delivered"]], statuses[ids["late"]]) == ("delivered", "delivered")
    assert (statuses[ids["bounced"]], statuses[ids["full"]], statuses[ids["letter"]]) == ("sent", "sent", "posted")
    assert scalar(engine, "SELECT COUNT(*) FROM notifications WHERE channel = 'letter'") == 1  # no fallback queued

    # Loaded again on the next day, as a new file, the lines held back apply.
    later = _load(engine, _feedback(tmp_path, "later.csv", [
        (ids["bounced"], "permanent_failure", "2022-02-02T00:00:00+01:00", ""),
    ]), as_of=dt.date(2022, 2, 2))
    assert (later.accepted, later.applied) == (1, 1)


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"notification_id;status\nx;delivered\n", 1),
        (b'notification_id;status;occurred_at\nA;delivered;2022-01-31T10:00:00Z\n"B;delivered\n', 3),
        (b"notification_id;status;occurred_at\nA;delivered;2022-01-31T10:00:00Z\nB;delivered\n", 3),
    ],
)
def test_an_unreadable_file_fails_whole_and_applies_nothing(
    engine: Engine, settings_env: Path, tmp_path: Path, relay: SmtpTarget, content: bytes, line: int
) -> None:
    ids = _sent_wave(engine, settings_env, tmp_path, relay)["ids"]
    before = _snapshot(engine)
    path = tmp_path / "feedback.csv"
    path.write_bytes(content.replace(b"A;", ids["bounced"].encode() + b";"))
    with pytest.raises(InputFileError) as raised:
        _load(engine, path)
    assert raised.value.line == line and str(path) in str(raised.value)
    assert _snapshot(engine) == before
    assert scalar(engine, "SELECT COUNT(*) FROM input_files WHERE kind = 'feedback'") == 0


def test_delivered_while_still_sending_starts_the_window(engine: Engine, settings_env: Path, tmp_path: Path) -> None:
    person = adult()
    load_people(engine, tmp_path, [person])
    wave = create_wave(engine, settings_env)
    notification = create_notification(engine, settings_env, wave, person)
    with engine.begin() as connection:  # the sender died after the relay took it
        connection.execute(
            text("UPDATE notifications SET status = 'sending', attempts = 1, send_date = :d WHERE notification_id = :id"),
            {"d": SEND_DAY, "id": notification},
        )
    _load(engine, _feedback(tmp_path, "f.csv", [(notification, "delivered", "2022-01-31T10:00:00+01:00", "")]))
    enrolment = fetch(engine, "SELECT state, opt_out_deadline FROM enrolments")[0]
    assert enrolment.state == "notified" and as_datetime(enrolment.opt_out_deadline).date() == dt.date(2022, 2, 28)
