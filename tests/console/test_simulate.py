"""The rollout simulation, on a tiny population and the plan's first week, reconciles end to end;
its shortcuts (the DAG folder parsed once, the days with nothing due not run) change nothing of
the end state."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from console import schedule
from console.projection import STAGES
from console.simulate import SIMULATED_DAILY_DAGS, run_simulation
from console.synth.rollout_inputs import OutsideRates

pytestmark = pytest.mark.slow

PERSONS = 1200
WAVES = 5  # 31 January to 4 February: départements 01 to 16, a quarter of the synthetic people


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("simulation") / "var"


@pytest.fixture
def simulation_env(airflow_home: Path, var_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MES_VAR_DIR", str(var_dir))
    monkeypatch.delenv("MES_DATABASE_URL", raising=False)
    return var_dir


# Deaths 30 times as frequent as in France: a few must fall among this small cohort's windows.
RATES = OutsideRates(death_per_month=0.03)
# Days skipped as 'nothing due' that the simulation below runs anyway, per daily DAG.
SKIPS_CHECKED_PER_DAG = 2


def rollout_state(engine: Engine) -> dict[str, Any]:
    """What a DAG run does to the rollout: people's enrolments, messages, letters, spaces, documents."""
    with engine.connect() as connection:

        def grouped(sql: str) -> dict[str, int]:
            return {" / ".join(str(part) for part in row[:-1]): int(row[-1]) for row in connection.execute(text(sql))}

        return {
            "enrolments": grouped("SELECT state, COUNT(*) FROM enrolments GROUP BY state"),
            "notifications": grouped(
                "SELECT channel, status, sent_at IS NOT NULL, COUNT(*) FROM notifications GROUP BY channel, status, sent_at IS NOT NULL"
            ),
            "spaces": grouped("SELECT state, creation_cause, COUNT(*) FROM spaces GROUP BY state, creation_cause"),
            **{
                table: int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
                for table in (
                    "notification_members",
                    "sending_attempts",
                    "print_batches",
                    "dmp_migrations",
                    "dmp_document_outcomes",
                    "migrated_documents",
                    "decisions",
                    "feedback_events",
                )
            },
        }


class SkipChecker:
    """Wraps `advance` as the simulation calls it (one daily DAG, one day): on the first day a DAG
    is skipped after it ran (the day most likely to hide work left over), a few times per DAG, the
    DAG is run all the same, at once, and what it changed of the rollout is kept (must be nothing)."""

    def __init__(self, per_dag: int) -> None:
        self.per_dag = per_dag
        self.just_ran: set[str] = set()
        self.checked: list[dict[str, Any]] = []

    def wrap(self, advance: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        def advance_and_check(to: dt.date, **kwargs: Any) -> dict[str, Any]:
            summary = advance(to, **kwargs)
            [dag_id] = kwargs["dag_ids"]
            if summary["runs"]:
                self.just_ran.add(dag_id)
            elif (
                summary["nothing_due"] == 1
                and summary["from"] == summary["to"] == to.isoformat()
                and dag_id in self.just_ran
                and sum(check["dag_id"] == dag_id for check in self.checked) < self.per_dag
            ):
                self.just_ran.discard(dag_id)
                self.checked.append(self.run_anyway(dag_id, to))
            return summary

        return advance_and_check

    @staticmethod
    def run_anyway(dag_id: str, day: dt.date) -> dict[str, Any]:
        from console.dagrun import run_dag
        from mes_rollout.db import get_engine

        before = rollout_state(get_engine())
        result = run_dag(dag_id, day, raise_on_failure=False)
        after = rollout_state(get_engine())
        changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
        return {"dag_id": dag_id, "day": day.isoformat(), "state": result.state, "changed": changed}


@pytest.fixture(scope="module")
def skip_checker() -> SkipChecker:
    return SkipChecker(SKIPS_CHECKED_PER_DAG)


@pytest.fixture(scope="module")
def report(airflow_home: Path, var_dir: Path, skip_checker: SkipChecker) -> dict:
    """One simulation for the module (about a minute on a quiet machine); on a few of the days each
    daily DAG was skipped (the first after one of its runs), the DAG is run all the same."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MES_VAR_DIR", str(var_dir))
        patch.delenv("MES_DATABASE_URL", raising=False)
        patch.setattr(schedule, "advance", skip_checker.wrap(schedule.advance))
        return run_simulation(PERSONS, seed=7, waves=WAVES, rates=RATES)


@pytest.fixture(scope="module")
def report_reparsing(airflow_home: Path, var_dir: Path) -> dict:
    """The same simulation, every DAG run parsing its DAG file as before the folder was kept."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MES_VAR_DIR", str(var_dir))
        patch.delenv("MES_DATABASE_URL", raising=False)
        return run_simulation(PERSONS, seed=7, waves=WAVES, rates=RATES, reuse_parsed_dags=False)


def test_the_simulation_reconciles_and_times_every_stage(report: dict, var_dir: Path) -> None:
    counts = report["reconciliation"]
    enrolments = counts["enrolments"]
    assert report["failures"] == []
    # Everyone in the waves' départements was selected (but the dead), and everyone selected was
    # told or found unreachable; no window is left open at the end, and nobody was reached twice.
    assert counts["in_scope"] > 200
    assert counts["not_selected_alive"] == 0
    assert counts["in_scope"] - 10 <= counts["selected"] <= counts["in_scope"]
    assert sum(enrolments.values()) == counts["cohort_outcomes"].get("notify", 0) + counts["cohort_outcomes"].get("unreachable", 0)
    assert "planned" not in enrolments and "notified" not in enrolments
    assert counts["told_twice"] == 0
    # (the told who died before their message left have theirs cancelled)
    assert counts["reached_by_a_message"] >= counts["told"] - enrolments.get("cancelled_deceased", 0)
    # Every decision the people sent was applied as what it is, none quarantined.
    written = report["decisions_written"]
    assert counts["quarantined"] == {"decisions": 0, "feedback": 0}
    assert enrolments.get("opposed", 0) + enrolments.get("late_opposed", 0) == written["opposition"]
    assert enrolments.get("closed", 0) == written["late_opposition"]
    assert counts["spaces"]["by_cause"].get("activation", 0) == written["activation"]
    # Oppositions about the set rate (1.5 %): within three standard deviations of a binomial draw.
    told = counts["told"]
    expected = told * report["rates"]["opposition"]
    assert abs(written["opposition"] - expected) <= 3 * math.sqrt(expected) + 1
    # Spaces: told − opposed − deceased − closed, and nobody opposed or dead has an active one.
    assert counts["spaces"]["active"] == counts["spaces_expected"] == enrolments["created"]
    assert enrolments.get("cancelled_deceased", 0) >= 1  # the monthly extracts carried deaths
    assert counts["opposed_or_deceased_with_active_space"] == 0
    # Bounced emails were followed by letters; the feedback was read.
    assert report["files"]["feedback"] and report["files"]["decisions"]
    # The DMP carry-over: every document of the DMPs taken on has one outcome.
    documents = counts["dmp_documents"]
    assert documents["source"] == documents["migrated"] + documents["held_back"] + documents["skipped"]
    assert documents["source"] == documents["staged_for_dmps_taken_on"] > 0
    # Every stage ran and has a throughput.
    assert set(report["stages"]) == set(STAGES)
    for stage, values in report["stages"].items():
        assert values["items"] > 0 and values["seconds"] > 0 and values["per_second"] > 0, stage
    # A day with nothing due starts no DAG: each daily DAG runs on far fewer days than replayed.
    assert report["nothing_due_days"] > report["dag_runs"]["notification_sending"]
    assert report["dag_runs"]["enrolment_wave"] == WAVES
    # The projection was made from the measured rates.
    assert report["projection"]["from_simulation"]["machine_hours"] > 0

    # The report is written under MES_REPORTS_DIR/simulation/<run id>/, without any NIR.
    folder = Path(report["folders"]["report"])
    assert folder.parent == var_dir / "reports" / "simulation"
    assert json.loads((folder / "report.json").read_text())["run_id"] == report["run_id"]
    summary = (folder / "report.md").read_text()
    assert "| migration |" in summary
    register = Path(report["folders"]["var"]) / "extract" / "register.csv"
    nirs = {line.split(";", 1)[0] for line in register.read_text().splitlines()[1:200]}
    raw = (folder / "report.json").read_text() + summary
    assert not any(nir in raw for nir in nirs if len(nir) >= 13)


def test_each_run_has_a_folder_and_database_of_its_own(report: dict, simulation_env: Path) -> None:
    again = run_simulation(60, seed=7, waves=1)
    assert again["run_id"] != report["run_id"]
    assert again["folders"]["var"] != report["folders"]["var"]
    assert again["reconciliation"]["persons"] == 60  # not the first run's 1 200


def test_the_days_skipped_had_nothing_to_do(report: dict, skip_checker: SkipChecker) -> None:
    # Each daily DAG was run on days its due check called idle: it succeeded and changed nothing.
    assert {check["dag_id"] for check in skip_checker.checked} == set(SIMULATED_DAILY_DAGS)
    for check in skip_checker.checked:
        assert check["state"] == "success" and check["changed"] == {}, check
    # The report names every day skipped, by DAG, and nothing else was skipped.
    skipped = report["skipped_runs"]
    assert sum(len(skipped[dag_id]) for dag_id in SIMULATED_DAILY_DAGS) == report["nothing_due_days"]
    assert {check["day"] for check in skip_checker.checked} <= {day for dag_id in SIMULATED_DAILY_DAGS for day in skipped[dag_id]}
    file_days = {entry["day"] for entry in report["files"]["decisions"]} | set(skipped["decisions_intake"])
    assert file_days == {entry["day"] for entry in report["files"]["feedback"]} | set(skipped["delivery_feedback"])
    summary = (Path(report["folders"]["report"]) / "report.md").read_text()
    assert "## Runs skipped (nothing to do that day)" in summary
    assert f"- dmp_migration: {len(skipped['dmp_migration'])} days" in summary


def test_keeping_the_parsed_dags_changes_nothing_of_the_end_state(report: dict, report_reparsing: dict) -> None:
    assert report["airflow"]["dag_parsing"] == "once for the run"
    assert report_reparsing["airflow"]["dag_parsing"] == "every DAG run"
    assert report_reparsing["failures"] == report["failures"] == []
    # The same seed gives the same rollout, whichever way the DAGs were parsed (and with the
    # skipped days run anyway in the first one): the same counts, files, runs and days skipped.
    for key in ("reconciliation", "decisions_written", "deaths_written", "files", "waves", "dag_runs", "skipped_runs"):
        assert report_reparsing[key] == report[key], key
    for stage, values in report["stages"].items():
        assert report_reparsing["stages"][stage]["items"] == values["items"], stage
