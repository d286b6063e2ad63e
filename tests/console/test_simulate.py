"""The rollout simulation, on a tiny population and the plan's first week, reconciles end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from console.projection import STAGES
from console.simulate import run_simulation
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


@pytest.fixture(scope="module")
def report(airflow_home: Path, var_dir: Path) -> dict:
    """One simulation for the module (about a minute and a half on a quiet machine)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MES_VAR_DIR", str(var_dir))
        patch.delenv("MES_DATABASE_URL", raising=False)
        # Deaths 30 times as frequent as in France: a few must fall among this small cohort's windows.
        return run_simulation(PERSONS, seed=7, waves=WAVES, rates=OutsideRates(death_per_month=0.03))


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
