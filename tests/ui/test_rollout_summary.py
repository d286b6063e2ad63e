"""The summary refresh's SQL on both databases, and the reports folder's path check (fast tests)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Engine, text

from console.rollout_pages import report_file
from enrolment.waves import CohortOutcome
from mes_rollout import rollout_summary


def test_cohort_outcomes_match_the_enrolment_enum() -> None:
    assert {rollout_summary.COHORT_NOTIFY, rollout_summary.COHORT_UNREACHABLE, rollout_summary.COHORT_EXCLUDED} == {
        outcome.value for outcome in CohortOutcome
    }


def test_refresh_runs_twice_and_records_who_refreshed(engine: Engine) -> None:
    now = dt.datetime(2022, 2, 1, 8, 0, tzinfo=dt.UTC)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO waves (wave_id, departements, send_date, state, dry_run, created_at, updated_at)"
                " VALUES ('W1', '01', :day, 'approved', FALSE, :now, :now)"
            ),
            {"day": dt.date(2022, 1, 31), "now": now},
        )
    for run in ("first", "second"):  # idempotent: a re-run replaces, never adds
        rollout_summary.refresh(engine, source="test", run_id=run, now=now)
    with engine.connect() as connection:
        waves = connection.execute(text("SELECT wave_id, selected, emails FROM rollout_summary_waves")).all()
        refreshed = connection.execute(text("SELECT run_id, source FROM rollout_summary_refresh")).all()
    assert [tuple(row) for row in waves] == [("W1", 0, 0)]
    assert [tuple(row) for row in refreshed] == [("second", "test")]


def test_report_file_stays_inside_the_reports_folder(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    (reports / "run").mkdir(parents=True)
    (reports / "run" / "report.html").write_text("ok")
    (tmp_path / "secret.db").write_text("secret")
    (reports / "out").symlink_to(tmp_path / "secret.db")
    assert report_file(reports, "run/report.html") == (reports / "run" / "report.html").resolve()
    for attempt in ("../secret.db", "run/../../secret.db", str(tmp_path / "secret.db"), "out", "run", "", "run\\..\\x"):
        assert report_file(reports, attempt) is None, attempt
