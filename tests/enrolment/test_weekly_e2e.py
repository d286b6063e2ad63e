"""End to end through the DAGs: a small rollout to 28 March 2022, then three monthly register
extracts (April to June) and the weekly waves that `advance` runs on Mondays. Each new eligible
person is told once, the person whose letter came back is told again (a new window) once the
register brings a new address, and nobody else is; the window setting changes on 1 April.

The people (13 in the end), département and what becomes of them:
  01  A1 adult, email          W-01 (31 Jan), space 1 Mar; parent of the April newborn Bb
  01  A2 adult, email          W-01, space 1 Mar; moves to 02 in April: not told again
  01  P  parent, email         W-01 with K (born 2015), spaces 1 Mar; representative of C2 from May
  01  N  letter only           W-01 letter returned (NPAI); new address in April: weekly W14, space 17 May
  01  C2 minor, no representative in January (excluded); P named in May: weekly W18, through P
  02  B1 email                 W-02 (28 Mar, window P1M: 28 Apr), space 29 Apr; parent of Bb2 (May)
  02  B2 letter only           W-02, opposes in April; an email in May does not bring a message
  02→01 Mv moves on 1 March    between the two waves: in neither; weekly W14, space 17 May
  new in April: Bb (born 15 March, A1's), Ni (newly insured, 02; dies 20 April: cancelled)
  new in May: Bb2 (B1's); new in June: Ni2 (newly insured, letter only)
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from console.cli import main
from console.schedule import advance
from mes_rollout.db import as_date, as_datetime, get_engine
from tests.enrolment.builders import decision, write_decisions
from tests.factories import person_row, write_csv

pytestmark = pytest.mark.slow
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
WEEKLY_DAYS = [dt.date(2022, 4, 4) + dt.timedelta(weeks=n) for n in range(10)]  # 4 April .. 6 June


def _cli(capfd: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    capfd.readouterr()
    assert main([*argv, "--json"]) == 0
    out = capfd.readouterr().out
    return dict(json.loads(out[out.index("{") :]))


def _told_by_wave(wave_id: str) -> set[str]:
    with get_engine().connect() as connection:
        return set(
            connection.execute(
                text(
                    "SELECT m.nir FROM notification_members m JOIN notifications n"
                    " ON n.notification_id = m.notification_id WHERE n.wave_id = :w"
                ),
                {"w": wave_id},
            ).scalars()
        )


@sqlite_only
def test_weekly_waves_tell_newcomers_once_and_the_npai_person_again(
    airflow_home: Path, settings_env: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("MES_OPT_OUT_WINDOW", "P1M;2022-04-01=P6W")
    a1, a2, p = (person_row(email=f"{name}@example.fr") for name in ("a1", "a2", "p"))
    k = person_row(date_naissance="2015-06-01", email="", nir_representant=p["nir"])
    n = person_row(email="")
    c2 = person_row(date_naissance="2012-02-02", sexe="M", email="")
    b1 = person_row(departement="02", email="b1@example.fr", code_postal="02000", commune="Laon")
    b2 = person_row(departement="02", email="", code_postal="02000", commune="Laon")
    mv = person_row(departement="02", email="mv@example.fr", code_postal="02000", commune="Laon")
    january = [a1, a2, p, k, n, c2, b1, b2, mv]
    folder = tmp_path / "extracts"

    def load(name: str, rows: list[dict[str, str]], day: str) -> None:
        loaded = _cli(capfd, "load", "register", str(write_csv(folder / f"{name}.csv", rows)), "--date", day)
        assert loaded["rows"]["quarantined"] == 0, loaded

    # -- The rollout: 01 on 31 January, 02 on 28 March; Mv moves from 02 to 01 in between.
    load("2022-01", january, "2022-01-28")
    _cli(capfd, "wave", "run", "W-01", "--departements", "01", "--date", "2022-01-31", "--approve")
    advance(dt.date(2022, 2, 9), start=dt.date(2022, 1, 31))
    with get_engine().connect() as connection:
        npai_letter = connection.execute(
            text("SELECT notification_id FROM notifications WHERE recipient_nir = :n"), {"n": n["nir"]}
        ).scalar_one()
    feedback = write_csv(
        tmp_path / "feedback.csv",
        [{"notification_id": npai_letter, "status": "returned", "occurred_at": "2022-02-08T10:00:00+01:00", "detail": "NPAI"}],
        ("notification_id", "status", "occurred_at", "detail"),
    )
    _cli(capfd, "load", "feedback", str(feedback), "--date", "2022-02-10")
    mv = {**mv, "departement": "01", "code_postal": "01000", "commune": "Bourg-en-Bresse"}
    load("2022-03", [mv], "2022-03-01")
    _cli(capfd, "wave", "run", "W-02", "--departements", "02", "--date", "2022-03-28", "--approve")
    advance(dt.date(2022, 3, 31))
    assert _told_by_wave("W-01") == {a1["nir"], a2["nir"], p["nir"], k["nir"], n["nir"]}  # C2: no representative
    assert _told_by_wave("W-02") == {b1["nir"], b2["nir"]}  # Mv had left 02

    # -- April: a newborn, a newly insured person, N's new address, A2 moves; B1 is absent from
    # the extract (left alone). B2 opposes.
    bb = person_row(date_naissance="2022-03-15", sexe="M", email="", nir_representant=a1["nir"])
    ni = person_row(departement="02", email="ni@example.fr", code_postal="02000", commune="Laon")
    n = {**n, "adresse_ligne4": "3 place Neuve"}
    a2 = {**a2, "departement": "02", "code_postal": "02000", "commune": "Laon"}
    load("2022-04", [a1, a2, p, k, n, c2, b2, mv, bb, ni], "2022-04-01")
    opposition = write_decisions(tmp_path / "decisions.csv", [decision("O-1", b2["nir"], "opposition", "2022-04-10T09:00:00+02:00", "mail")])
    assert _cli(capfd, "load", "decisions", str(opposition), "--date", "2022-04-11")["outcomes"] == {"opposed": 1}
    april = advance(dt.date(2022, 4, 30))

    # -- May: Ni's death (20 April), C2's representative, B1's newborn, an email for the opposed B2.
    ni = {**ni, "date_deces": "2022-04-20"}
    c2 = {**c2, "nir_representant": p["nir"]}
    bb2 = person_row(date_naissance="2022-04-02", email="", departement="02", nir_representant=b1["nir"])
    b2 = {**b2, "email": "b2@example.fr"}
    load("2022-05", [a1, a2, p, k, n, c2, b1, b2, mv, bb, ni, bb2], "2022-05-01")
    may = advance(dt.date(2022, 5, 31))

    # -- June: a newly insured person with a letter only.
    ni2 = person_row(email="")
    load("2022-06", [a1, a2, p, k, n, c2, b1, b2, mv, bb, ni, bb2, ni2], "2022-06-01")
    june = advance(dt.date(2022, 6, 6))

    # The weekly waves ran every Monday from 4 April, and each told exactly the new eligible people.
    weekly_runs = [run for summary in (april, may, june) for run in summary["runs"] if run["dag_id"] == "weekly_wave"]
    assert [run["day"] for run in weekly_runs] == [day.isoformat() for day in WEEKLY_DAYS]
    assert all(run["results"]["settle"]["state"] == "approved" for run in weekly_runs)
    told = {day: _told_by_wave(f"weekly-2022-W{day.isocalendar()[1]:02d}") for day in WEEKLY_DAYS}
    assert told.pop(dt.date(2022, 4, 4)) == {bb["nir"], ni["nir"], n["nir"], mv["nir"]}
    assert told.pop(dt.date(2022, 5, 2)) == {c2["nir"], bb2["nir"]}
    assert told.pop(dt.date(2022, 6, 6)) == {ni2["nir"]}
    assert all(people == set() for people in told.values())
    everyone = [a1, a2, p, k, n, c2, b1, b2, mv, bb, ni, bb2, ni2]
    with get_engine().connect() as connection:
        memberships = Counter(connection.execute(text("SELECT nir FROM notification_members")).scalars())
        recipients = dict(
            connection.execute(
                text(
                    "SELECT m.nir, n.recipient_nir FROM notification_members m"
                    " JOIN notifications n ON n.notification_id = m.notification_id WHERE n.wave_id LIKE 'weekly-%'"
                )
            ).all()
        )
        enrolment = {
            row.nir: (row.state, as_datetime(row.opt_out_deadline))
            for row in connection.execute(text("SELECT nir, state, opt_out_deadline FROM enrolments"))
        }
        created_on = {row[0]: as_date(row[1]) for row in connection.execute(text("SELECT nir, created_on FROM spaces"))}
    assert memberships == Counter({person["nir"]: 2 if person is n else 1 for person in everyone})
    assert recipients[bb["nir"]] == a1["nir"] and recipients[c2["nir"]] == p["nir"] and recipients[bb2["nir"]] == b1["nir"]
    # Windows: P1M for the messages sent before 1 April (B1's, sent 28 March, still ends 28 April),
    # P6W after (4 April + 6 weeks = 16 May; 2 May + 6 weeks = 13 June).
    assert created_on == {
        a1["nir"]: dt.date(2022, 3, 1), a2["nir"]: dt.date(2022, 3, 1), p["nir"]: dt.date(2022, 3, 1),
        k["nir"]: dt.date(2022, 3, 1), b1["nir"]: dt.date(2022, 4, 29), n["nir"]: dt.date(2022, 5, 17),
        mv["nir"]: dt.date(2022, 5, 17), bb["nir"]: dt.date(2022, 5, 17),
    }  # fmt: skip
    paris = dt.timezone(dt.timedelta(hours=2))  # summer time
    for person in (c2, bb2):
        assert enrolment[person["nir"]] == ("notified", dt.datetime(2022, 6, 13, 23, 59, 59, 999_999, tzinfo=paris))
    assert enrolment[ni2["nir"]] == ("notified", dt.datetime(2022, 7, 18, 23, 59, 59, 999_999, tzinfo=paris))
    assert enrolment[ni["nir"]][0] == "cancelled_deceased" and enrolment[b2["nir"]][0] == "opposed"

    # The counts reconcile in `mes-rollout status`.
    status = _cli(capfd, "status")
    assert status["persons"] == {"total": 13, "quarantined_rows": 0}
    assert status["enrolments"] == {"cancelled_deceased": 1, "created": 8, "notified": 3, "opposed": 1}
    assert status["notifications"] == {"email": {"sent": 9}, "letter": {"posted": 3, "returned": 1}}
    assert status["spaces"] == {"active": 8}
