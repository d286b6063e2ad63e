"""Decisions intake on both databases: every rule of decisions.csv, quarantine with reasons,
references seen before (the same content ignored, other content quarantined), answers before the
message, and the state changes they make."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from enrolment.dao import start_window
from enrolment.decisions import load_decisions
from enrolment.spaces import create_due_spaces
from mes_rollout.config import OptOutWindow
from mes_rollout.csvfile import InputFileError
from mes_rollout.db import as_date
from tests.enrolment.builders import (
    decision,
    load_people,
    plan_wave,
    send_wave,
    spaces,
    states,
    write_decisions,
)
from tests.factories import make_nir, person_row, write_csv

SEND = dt.date(2022, 1, 31)


@pytest.fixture
def notified(engine: Engine, tmp_path: Path) -> list[str]:
    """Ten adults of 01 told on 31 January (deadline 28 February, end of day, Paris), and one of 03 never in a wave."""
    people = [person_row() for _ in range(10)] + [person_row(departement="03")]
    load_people(engine, people, tmp_path / "register")
    plan_wave(engine, tmp_path / "var", "W1", ["01"], SEND)
    send_wave(engine, "W1", SEND)
    return [person["nir"] for person in people]


def _load(engine: Engine, path: Path, day: dt.date) -> dict:
    return load_decisions(engine, path, as_of=day, run_id=f"decisions-{day}").as_dict()


def test_a_file_is_checked_row_by_row_and_reconciles(engine: Engine, notified: list[str], tmp_path: Path) -> None:
    a, b, c, d, e, f = notified[:6]
    outsider = notified[10]
    rows = [
        decision("R01", a, "opposition", "2022-02-10T09:00:00+01:00"),
        decision("R02", b, "opposition", "2022-02-28T23:59:59.999999+01:00", "mail"),  # the last instant in time
        decision("R03", c, "opposition", "2022-03-01T00:00:00+01:00", "phone"),  # one microsecond late
        decision("R04", d, "activation", "2022-02-15T10:00:00+01:00", "cpam"),
        decision("R05", e, "ACTIVATION ", "2022-02-15T10:00:00Z"),
        decision("R01", a, "opposition", "2022-02-10T09:00:00+01:00"),  # a reference seen before, same row: ignored
        decision("R06", f, "closure", "2022-02-10T09:00:00+01:00"),  # no space to close
        decision("R07", outsider, "opposition", "2022-02-10T09:00:00+01:00"),  # in no wave yet
        decision("R08", make_nir("1", 1960, 4, "75056", 997), "opposition", "2022-02-10T09:00:00+01:00"),
        decision("R09", "1234", "opposition", "2022-02-10T09:00:00+01:00"),
        decision("R10", f, "refusal", "2022-02-10T09:00:00+01:00"),
        decision("R11", f, "opposition", "2022-02-10T09:00:00"),  # no offset
        decision("R12", f, "opposition", "10/02/2022"),
        decision("R13", f, "opposition", "2022-02-10T09:00:00+01:00", "fax"),
        decision("", f, "opposition", "2022-02-10T09:00:00+01:00"),
        decision("R14", f, "opposition", "2022-03-05T09:00:00+01:00"),  # after the day of the run
    ]
    summary = _load(engine, write_decisions(tmp_path / "decisions.csv", rows), dt.date(2022, 3, 1))
    assert summary["rows"] == {"read": 16, "accepted": 6, "quarantined": 10}
    assert summary["ignored_seen_before"] == 1
    assert summary["outcomes"] == {"activated": 2, "late_opposed": 1, "opposed": 2}
    assert summary["quarantine_reasons"] == {
        "BAD_CHANNEL": 1,
        "BAD_EVENT": 1,
        "BAD_NIR": 1,
        "BAD_TIMESTAMP": 2,
        "MISSING_FIELD": 1,
        "NOT_ENROLLED": 1,
        "NO_SPACE": 1,
        "RECEIVED_IN_FUTURE": 1,
        "UNKNOWN_NIR": 1,
    }
    now = states(engine)
    assert (now[a], now[b], now[c], now[d], now[e], now[f]) == ("opposed", "opposed", "late_opposed", "created", "created", "notified")
    assert spaces(engine) == {d: ("active", "activation"), e: ("active", "activation")}
    with engine.connect() as connection:
        created_on = connection.execute(text("SELECT DISTINCT created_on FROM spaces")).scalars().all()
        quarantined = connection.execute(text("SELECT COUNT(*) FROM quarantine WHERE file_kind = 'decisions'")).scalar_one()
        audited = connection.execute(
            text("SELECT COUNT(*) FROM audit_trail WHERE input_file_id IS NOT NULL AND entity IN ('enrolment', 'space')")
        ).scalar_one()
        outcomes = dict(connection.execute(text("SELECT reference, outcome FROM decisions")).all())
    assert [as_date(day) for day in created_on] == [dt.date(2022, 3, 1)]  # the run's logical date
    assert quarantined == 10 and audited == 5 + 2
    assert outcomes == {"R01": "opposed", "R02": "opposed", "R03": "late_opposed", "R04": "activated", "R05": "activated"}

    # The same file again changes nothing; a new file repeating a reference with the same row ignores it.
    again = _load(engine, write_decisions(tmp_path / "decisions.csv", rows), dt.date(2022, 3, 1))
    assert again["already_loaded"] and again["rows"]["read"] == 16
    repeat = _load(engine, write_decisions(tmp_path / "repeat.csv", [decision("R04", d, "activation", "2022-02-15T10:00:00+01:00", "cpam")]), dt.date(2022, 3, 1))
    assert repeat["ignored_seen_before"] == 1 and repeat["rows"] == {"read": 1, "accepted": 1, "quarantined": 0}
    assert repeat["outcomes"] == {} and states(engine)[d] == "created"


def test_a_reference_seen_before_with_other_content_is_quarantined(
    engine: Engine, notified: list[str], tmp_path: Path
) -> None:
    a, b, c, d = notified[:4]
    first = _load(engine, write_decisions(tmp_path / "first.csv", [decision("R1", a, "opposition", "2022-02-10T09:00:00+01:00")]), dt.date(2022, 2, 20))
    assert first["outcomes"] == {"opposed": 1}
    rows = [
        decision("R1", a, "opposition", "2022-02-10T08:00:00Z"),  # line 2: the same instant: the same row, ignored
        decision("R1", b, "opposition", "2022-02-10T09:00:00+01:00"),  # line 3: another person
        decision("R1", a, "activation", "2022-02-10T09:00:00+01:00"),  # line 4: another event
        decision("R1", a, "opposition", "2022-02-10T09:00:01+01:00"),  # line 5: another time
        decision("R1", a, "opposition", "2022-02-10T09:00:00+01:00", "phone"),  # line 6: another channel
        decision("R2", c, "opposition", "2022-02-11T09:00:00+01:00"),  # line 7: first seen here: applied
        decision("R2", c, "opposition", "2022-02-11T09:00:00+01:00"),  # line 8: the same again: ignored
        decision("R2", d, "opposition", "2022-02-11T09:00:00+01:00"),  # line 9: another person than line 7
        decision("R2", c, " Opposition", "2022-02-11T09:00:00+01:00", "WEB"),  # line 10: the same, as cleaned
    ]
    summary = _load(engine, write_decisions(tmp_path / "second.csv", rows), dt.date(2022, 2, 20))
    assert summary["rows"] == {"read": 9, "accepted": 4, "quarantined": 5}
    assert (summary["applied"], summary["ignored_seen_before"]) == (1, 3)
    assert summary["outcomes"] == {"opposed": 1}
    assert summary["quarantine_reasons"] == {"REFERENCE_CONFLICT": 5}
    now = states(engine)
    assert (now[a], now[b], now[c], now[d]) == ("opposed", "notified", "opposed", "notified")
    with engine.connect() as connection:
        quarantined = connection.execute(
            text("SELECT line_no, reason_code, detail FROM quarantine WHERE file_kind = 'decisions' ORDER BY line_no")
        ).all()
        recorded = dict(connection.execute(text("SELECT reference, nir FROM decisions")).all())
    assert [(line, reason) for line, reason, _ in quarantined] == [(n, "REFERENCE_CONFLICT") for n in (3, 4, 5, 6, 9)]
    assert all(b not in detail and d not in detail for _, _, detail in quarantined)  # no NIR in the detail
    assert recorded == {"R1": a, "R2": c}


def test_an_answer_received_before_the_message_was_sent_is_quarantined(engine: Engine, tmp_path: Path) -> None:
    people = [person_row() for _ in range(5)]
    load_people(engine, people, tmp_path / "register")
    plan_wave(engine, tmp_path / "var", "W1", ["01"], SEND)
    early, on_the_day, planned, planned_too, paris_day = (person["nir"] for person in people)
    sent_on = dt.date(2022, 2, 2)  # the messages of three of them go two days after the planned date
    with engine.begin() as connection:
        messages = dict(connection.execute(text("SELECT nir, notification_id FROM enrolments")).all())
        for nir in (early, on_the_day, paris_day):
            start_window(connection, messages[nir], sent_on, OptOutWindow(), run_id="sender", now=dt.datetime(2022, 2, 2, 8, tzinfo=dt.UTC))
    rows = [
        decision("B1", early, "opposition", "2022-02-01T23:59:59+01:00"),  # the evening before the send day
        decision("B2", on_the_day, "opposition", "2022-02-02T00:00:00+01:00"),  # the first instant of the send day
        decision("B3", planned, "opposition", "2022-02-05T10:00:00+01:00"),  # still planned: no message sent yet
        decision("B4", planned_too, "activation", "2022-02-05T10:00:00+01:00"),
        decision("B5", early, "activation", "2022-01-30T10:00:00+01:00"),
        decision("B6", paris_day, "opposition", "2022-02-01T23:30:00Z"),  # 2 February 00:30 in Paris: the send day
    ]
    summary = _load(engine, write_decisions(tmp_path / "decisions.csv", rows), dt.date(2022, 2, 10))
    assert summary["rows"] == {"read": 6, "accepted": 2, "quarantined": 4}
    assert summary["quarantine_reasons"] == {"BEFORE_MESSAGE": 4}
    assert summary["outcomes"] == {"opposed": 2} and summary["spaces_created"] == 0
    now = states(engine)
    assert (now[early], now[on_the_day], now[planned], now[planned_too], now[paris_day]) == (
        "notified", "opposed", "planned", "planned", "opposed",
    )  # fmt: skip
    assert spaces(engine) == {}
    with engine.connect() as connection:
        lines = connection.execute(
            text("SELECT line_no FROM quarantine WHERE reason_code = 'BEFORE_MESSAGE' ORDER BY line_no")
        ).scalars().all()
    assert lines == [2, 4, 5, 6]

    # Quarantined, the reference is not taken: sent again once the message is out, it applies.
    with engine.begin() as connection:
        start_window(connection, messages[planned], dt.date(2022, 2, 4), OptOutWindow(), run_id="sender", now=dt.datetime(2022, 2, 4, 8, tzinfo=dt.UTC))
    again = _load(engine, write_decisions(tmp_path / "again.csv", [rows[2]]), dt.date(2022, 2, 10))
    assert again["outcomes"] == {"opposed": 1} and again["ignored_seen_before"] == 0
    assert states(engine)[planned] == "opposed"


def test_decisions_after_creation_close_purge_or_withdraw(engine: Engine, notified: list[str], tmp_path: Path) -> None:
    a, b, c, d, e = notified[:5]
    early = [decision("E1", d, "opposition", "2022-02-03T10:00:00+01:00"), decision("E2", d, "activation", "2022-02-20T10:00:00+01:00")]
    _load(engine, write_decisions(tmp_path / "early.csv", early), dt.date(2022, 2, 20))
    assert create_due_spaces(engine, dt.date(2022, 3, 1), run_id="creation", now=dt.datetime(2022, 3, 1, 6, tzinfo=dt.UTC))["spaces_created"] == 9
    rows = [
        decision("P1", a, "opposition", "2022-03-02T10:00:00+01:00"),  # after creation: closure
        decision("P2", b, "deletion", "2022-03-02T10:00:00+01:00"),
        decision("P3", c, "closure", "2022-03-02T10:00:00+01:00"),
        decision("P4", c, "deletion", "2022-03-03T10:00:00+01:00"),  # a closed space, then its deletion
        # an opposition received in time but loaded after the automatic creation: it wins
        decision("P5", e, "opposition", "2022-02-28T18:00:00+01:00", "mail"),
        decision("P6", d, "opposition", "2022-02-25T10:00:00+01:00"),  # d activated themselves: closure
    ]
    summary = _load(engine, write_decisions(tmp_path / "after.csv", rows), dt.date(2022, 3, 3))
    assert summary["outcomes"] == {"closed": 3, "purge_scheduled": 2, "withdrawn": 1}
    with engine.connect() as connection:
        found = {
            nir: (state, as_date(archive), as_date(purge))
            for nir, state, archive, purge in connection.execute(text("SELECT nir, state, archive_until, purge_by FROM spaces"))
        }
    assert found[a] == ("closed", dt.date(2032, 3, 2), None)
    assert found[b] == ("purge_scheduled", None, dt.date(2022, 6, 2))
    assert found[c] == ("purge_scheduled", dt.date(2032, 3, 2), dt.date(2022, 6, 3))
    assert found[e] == ("deleted", None, None)
    assert found[d][0] == "closed"
    now = states(engine)
    assert (now[a], now[b], now[c], now[d], now[e]) == ("closed", "closed", "closed", "closed", "opposed")


def test_a_file_that_cannot_be_read_changes_nothing(engine: Engine, notified: list[str], tmp_path: Path) -> None:
    good = decision("G1", notified[0], "opposition", "2022-02-10T09:00:00+01:00")
    path = write_decisions(tmp_path / "broken.csv", [good])
    path.write_text(path.read_text() + "G2;" + notified[1] + ";opposition\n")  # a row cut short
    with pytest.raises(InputFileError, match="line 3"):
        _load(engine, path, dt.date(2022, 3, 1))
    wrong_header = write_csv(tmp_path / "header.csv", [{"reference": "G3", "nir": notified[2]}], ("reference", "nir"))
    with pytest.raises(InputFileError, match="missing column"):
        _load(engine, wrong_header, dt.date(2022, 3, 1))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM input_files WHERE kind = 'decisions'")).scalar_one() == 0
        assert connection.execute(text("SELECT COUNT(*) FROM decisions")).scalar_one() == 0
    assert set(states(engine).values()) == {"notified"}
