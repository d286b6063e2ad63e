"""End to end through the real DAGs (dag.test()): 5 000 synthetic people, a wave over 01 and 02,
decisions, and creation the day after the deadline. Then every DAG run is re-run: nothing changes.

Sending belongs to the notifications package: here the messages are "sent" on the send date by
calling enrolment.window.start_window for each created notification of the approved wave, which
is exactly what the sending DAG calls (the integrator switches this to the real sending DAG).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from console.approval import APPROVE, run_wave, wave_outcome
from console.dagrun import run_dag
from console.schedule import advance
from enrolment.planning import adult_born_by
from enrolment.waves import WaveRequest
from mes_rollout.config import OptOutWindow
from mes_rollout.db import as_date, get_engine
from tests.enrolment.builders import decision, send_wave, spaces, states, write_decisions
from tests.factories import REGISTER_COLUMNS, make_nir, person_row, write_csv

pytestmark = pytest.mark.slow

SEND = dt.date(2022, 1, 31)
WAVE = "W-2022-01-31"
SCOPE = ("01", "02")


def _expected_routing(engine: Engine) -> dict[str, Any]:
    """An oracle written in Python from the register, independent of the SQL that plans."""
    with engine.connect() as connection:
        people = {row.nir: row for row in connection.execute(text("SELECT * FROM persons"))}
    adult_by = adult_born_by(SEND)
    routed: dict[str, tuple[str, str | None, str | None]] = {}  # nir -> (outcome, recipient, channel/reason)
    for nir, person in people.items():
        if person.departement not in SCOPE:
            continue
        death = as_date(person.date_deces)
        if death is not None and death <= SEND:
            continue
        minor = as_date(person.date_naissance) > adult_by  # type: ignore[operator]
        recipient_nir = person.nir_representant if (person.nir_representant or minor) else nir
        if recipient_nir is None:
            routed[nir] = ("excluded", None, "REPRESENTATIVE_MISSING")
            continue
        recipient = people.get(recipient_nir)
        if recipient is None:
            routed[nir] = ("excluded", recipient_nir, "REPRESENTATIVE_UNKNOWN")
            continue
        if recipient.date_deces is not None:
            routed[nir] = ("excluded", recipient_nir, "REPRESENTATIVE_DECEASED")
            continue
        if recipient.email and not recipient.email_bounced:
            routed[nir] = ("notify", recipient_nir, "email")
        elif recipient.address_problem is None and not recipient.address_returned:
            routed[nir] = ("notify", recipient_nir, "letter")
        else:
            routed[nir] = ("unreachable", recipient_nir, None)
    notify = {nir: route for nir, route in routed.items() if route[0] == "notify"}
    recipients = {route[1]: route[2] for route in notify.values()}
    return {
        "routed": routed,
        "planned": set(notify),
        "unreachable": {nir for nir, route in routed.items() if route[0] == "unreachable"},
        "excluded": Counter(route[2] for route in routed.values() if route[0] == "excluded"),
        "email": sum(1 for channel in recipients.values() if channel == "email"),
        "letter": sum(1 for channel in recipients.values() if channel == "letter"),
        "minors": {nir for nir in notify if as_date(people[nir].date_naissance) > adult_by},  # type: ignore[operator]
    }


def _snapshot(engine: Engine) -> dict[str, Any]:
    tables = {
        "persons": "nir",
        "waves": "wave_id",
        "enrolments": "nir",
        "notifications": "notification_id",
        "notification_members": "notification_id, nir",
        "decisions": "reference",
        "spaces": "nir",
        "wave_cohort": "wave_id, nir",
        "wave_shards": "wave_id, shard",
        "input_files": "id",
        "quarantine": "id",
    }
    with engine.connect() as connection:
        snapshot: dict[str, Any] = {
            table: [tuple(row) for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY {key}"))]  # noqa: S608
            for table, key in tables.items()
        }
        snapshot["audit_trail"] = connection.execute(text("SELECT COUNT(*) FROM audit_trail")).scalar_one()
    return snapshot


def test_a_wave_from_register_to_spaces_through_the_dags(
    settings_env: Path, airflow_home: Path, tmp_path: Path
) -> None:
    from console.synth import generate

    runs: list[tuple[str, dt.date, dict[str, Any]]] = []

    def run(dag_id: str, day: dt.date, conf: dict[str, Any]) -> dict[str, Any]:
        runs.append((dag_id, day, conf))
        return run_dag(dag_id, day, conf).xcom_returns

    # -- The register: 5 000 synthetic people, a few hundred of them in 01 and 02.
    extract = generate(5000, 2022, tmp_path / "extract", with_dmp=False)
    run("register_intake", dt.date(2022, 1, 28), {"register_file": str(extract.paths["register"])})
    # Two people of 01 with neither an email nor a postal address: unreachable.
    nowhere = [person_row(email="", adresse_ligne4="", code_postal="", commune="", sexe=sex) for sex in "MF"]
    run("register_intake", dt.date(2022, 1, 28), {"register_file": str(write_csv(tmp_path / "nowhere.csv", nowhere))})
    engine = get_engine()
    expected = _expected_routing(engine)
    assert 300 <= len(expected["planned"]) <= 700 and expected["minors"] and expected["unreachable"]

    # -- A dry run counts exactly what the wave will do, and writes nothing for the people.
    request = WaveRequest.from_params({"wave_id": WAVE, "departements": list(SCOPE)}, SEND)
    dry = wave_outcome(run_wave(WaveRequest(**{**request.__dict__, "dry_run": True}), SEND))
    assert dry["state"] == "dry_run"
    assert dry["counts"]["people"]["to_notify"] == len(expected["planned"])
    assert dry["counts"]["recipients"] == {"email": expected["email"], "letter": expected["letter"], "total": expected["email"] + expected["letter"]}
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM enrolments")).scalar_one() == 0
        assert connection.execute(text("SELECT COUNT(*) FROM notifications")).scalar_one() == 0

    # -- The wave, approved through Airflow's human-in-the-loop request.
    outcome = wave_outcome(run_wave(request, SEND, decision=APPROVE, comment="counts checked"))
    runs.append(("enrolment_wave", SEND, request.as_conf()))
    assert outcome["state"] == "approved"
    counts = outcome["counts"]
    assert counts["people"]["planned"] == len(expected["planned"])
    assert counts["people"]["unreachable"] == len(expected["unreachable"])
    assert counts["excluded"] == dict(expected["excluded"])
    assert counts["recipients"]["email"] == expected["email"] and counts["recipients"]["letter"] == expected["letter"]
    with engine.connect() as connection:
        members = connection.execute(
            text(
                "SELECT m.nir, n.recipient_nir, n.channel FROM notification_members m"
                " JOIN notifications n ON n.notification_id = m.notification_id WHERE n.wave_id = :w"
            ),
            {"w": WAVE},
        ).all()
        told = {nir: (recipient, channel) for nir, recipient, channel in members}
        assert set(told) == expected["planned"]
        assert all(told[nir] == expected["routed"][nir][1:] for nir in told)
        # Minors were written to their representatives, one message per recipient.
        assert expected["minors"] and all(told[nir][0] != nir for nir in expected["minors"])
        per_recipient = connection.execute(
            text("SELECT recipient_nir, COUNT(*) FROM notifications WHERE wave_id = :w GROUP BY recipient_nir HAVING COUNT(*) > 1"),
            {"w": WAVE},
        ).all()
        assert per_recipient == []
        wave_row = connection.execute(text("SELECT state, decided_by FROM waves WHERE wave_id = :w"), {"w": WAVE}).one()
        assert wave_row[0] == "approved" and wave_row[1].endswith("(mes-rollout CLI)")

    # -- Sending (the notifications package's part, simulated): every window starts on the send date.
    assert send_wave(engine, WAVE, SEND, OptOutWindow()) == len(expected["planned"])
    planned = sorted(expected["planned"])
    adults = [nir for nir in planned if nir not in expected["minors"]]

    # -- A register update during the window: two people die before creation.
    deceased = adults[-2:]
    with engine.connect() as connection:
        rows = [
            dict(row._mapping)
            for row in connection.execute(text("SELECT * FROM persons WHERE nir IN (:a, :b)"), {"a": deceased[0], "b": deceased[1]})
        ]
    update = []
    for row in rows:
        person = {column: "" if row.get(column) is None else str(row.get(column)) for column in REGISTER_COLUMNS}
        person["prenoms"], person["date_deces"] = str(row["prenoms"]), "2022-02-09"
        update.append(person)
    run("register_intake", dt.date(2022, 2, 10), {"register_file": str(write_csv(tmp_path / "update.csv", update))})

    # -- Decisions.
    in_time, on_deadline, late, activated = adults[:20], adults[20], adults[21:26], adults[26:36]
    changed_mind = adults[36]  # opposes in time, then activates: their own choice wins
    first = [decision(f"D{i:03d}", nir, "opposition", "2022-02-05T10:00:00+01:00") for i, nir in enumerate(in_time)]
    first.append(decision("D100", on_deadline, "opposition", "2022-02-28T23:59:59+01:00", "mail"))
    first += [decision(f"A{i:03d}", nir, "activation", "2022-02-10T09:30:00+01:00", "phone") for i, nir in enumerate(activated)]
    first += [
        decision("C001", changed_mind, "opposition", "2022-02-03T10:00:00+01:00"),
        decision("C002", changed_mind, "activation", "2022-02-20T10:00:00+01:00"),
        decision("D000", in_time[0], "opposition", "2022-02-05T10:00:00+01:00"),  # the same row again: ignored
        decision("D001", adults[41], "opposition", "2022-02-05T10:00:00+01:00"),  # the same reference, another person
        decision("U001", make_nir("1", 1950, 3, "75056", 999), "opposition", "2022-02-05T10:00:00+01:00"),  # not in the register
        decision("X001", adults[40], "closure", "2022-02-05T10:00:00+01:00"),  # no space to close
    ]
    first_file = write_decisions(tmp_path / "decisions-1.csv", first)
    loaded = run("decisions_intake", dt.date(2022, 2, 28), {"decisions_file": str(first_file)})["load_decisions"]
    assert loaded["rows"] == {"read": 37, "accepted": 34, "quarantined": 3}
    assert loaded["ignored_seen_before"] == 1
    assert loaded["outcomes"] == {"activated": 11, "opposed": 22}
    assert loaded["quarantine_reasons"] == {"NO_SPACE": 1, "REFERENCE_CONFLICT": 1, "UNKNOWN_NIR": 1}

    # -- February passes: nothing is due before the deadline (and it must be quick).
    began = time.monotonic()
    february = advance(dt.date(2022, 2, 28), start=dt.date(2022, 2, 1))
    february_seconds = time.monotonic() - began
    assert february["days"] == 28 and february_seconds < 60
    # the deaths (dated 9 February) are the only work of February: that day's run cancels them
    assert [run_["day"] for run_ in february["runs"]] == ["2022-02-09"]
    assert february["runs"][0]["results"]["create_spaces"]["cancelled_deceased"] == 2
    assert all(state != "created" or nir in activated or nir == changed_mind for nir, state in states(engine).items())

    # -- 1 March: late oppositions (after the deadline, before creation), one a second after it.
    second = [decision(f"L{i:03d}", nir, "opposition", "2022-03-01T08:00:00+01:00") for i, nir in enumerate(late)]
    second[0] = decision("L000", late[0], "opposition", "2022-03-01T00:00:00+01:00")
    second += [decision("D001", in_time[1], "opposition", "2022-02-05T10:00:00+01:00")]  # seen in the first file
    loaded = run("decisions_intake", dt.date(2022, 3, 1), {"decisions_file": str(write_decisions(tmp_path / "decisions-2.csv", second))})[
        "load_decisions"
    ]
    assert loaded["outcomes"] == {"late_opposed": 5} and loaded["ignored_seen_before"] == 1

    # -- Creation the day after the deadline.
    march = advance(dt.date(2022, 3, 1))
    assert [run_["day"] for run_ in march["runs"]] == ["2022-03-01"]
    opposed = set(in_time) | {on_deadline}
    no_space = opposed | set(late) | set(deceased)
    created = march["runs"][0]["results"]["create_spaces"]["spaces_created"]
    assert created == len(expected["planned"]) - len(no_space) - len(activated) - 1
    final_states = states(engine)
    final_spaces = spaces(engine)
    assert Counter(final_states[nir] for nir in expected["planned"]) == Counter(
        {
            "created": len(expected["planned"]) - len(no_space),
            "opposed": len(opposed),
            "late_opposed": len(late),
            "cancelled_deceased": len(deceased),
        }
    )
    assert not no_space & set(final_spaces), "an opposed, late-opposed or deceased person has a space"
    assert not expected["unreachable"] & set(final_spaces), "an unreachable person has a space"
    assert Counter(cause for _, cause in final_spaces.values()) == {"automatic": created, "activation": len(activated) + 1}

    # -- After creation: an opposition is a closure, a deletion schedules the purge.
    closing, deleting = adults[50], adults[51]
    third = [
        decision("Z001", closing, "opposition", "2022-03-03T11:00:00+01:00"),
        decision("Z002", deleting, "deletion", "2022-03-03T11:00:00+01:00", "cpam"),
    ]
    run("decisions_intake", dt.date(2022, 3, 3), {"decisions_file": str(write_decisions(tmp_path / "decisions-3.csv", third))})
    with engine.connect() as connection:
        closed = connection.execute(
            text("SELECT nir, state, archive_until, purge_by FROM spaces WHERE nir IN (:a, :b) ORDER BY state"),
            {"a": closing, "b": deleting},
        ).all()
    assert [(row[0], row[1], as_date(row[2]), as_date(row[3])) for row in closed] == [
        (closing, "closed", dt.date(2032, 3, 3), None),
        (deleting, "purge_scheduled", None, dt.date(2022, 6, 3)),
    ]

    # -- Every DAG run again: nothing changes.
    before = _snapshot(engine)
    for dag_id, day, conf in runs:
        if dag_id == "enrolment_wave":
            run_wave(WaveRequest.from_params(conf, day), day)
        else:
            run_dag(dag_id, day, conf)
    for day in (dt.date(2022, 2, 9), dt.date(2022, 2, 28), dt.date(2022, 3, 1), dt.date(2022, 3, 3)):
        run_dag("space_creation", day)
    assert _snapshot(engine) == before
