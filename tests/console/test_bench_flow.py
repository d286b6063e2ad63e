"""`mes-rollout bench-flow`: a tiny run of the whole flow on a throw-away PostgreSQL database, each
stage's counts consistent with the one before, each baseline measured, and `--no-analyze` honoured."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest

from console import bench_flow
from console.commands import Commands
from tests.conftest import POSTGRES_ADMIN_URL, skip_or_fail_without_postgres

pytestmark = pytest.mark.postgres


def _run(argv: list[str]) -> dict[str, Any]:
    """The command through its own `add_commands`, as the CLI hangs it."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true")
    parser = argparse.ArgumentParser(prog="mes-rollout")
    top = parser.add_subparsers(dest="command", required=True)
    load = top.add_parser("load").add_subparsers()
    bench_flow.add_commands(Commands(top, load, common))
    args = parser.parse_args(argv)
    summary: dict[str, Any] = args.handler(args)
    return summary


@pytest.fixture
def bench_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    skip_or_fail_without_postgres()
    monkeypatch.setenv("MES_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("MES_ANALYZE_AFTER_WRITES", raising=False)
    return tmp_path / "var"


def test_a_tiny_flow_runs_every_stage_with_consistent_counts(bench_var: Path) -> None:
    summary = _run(["bench-flow", "--persons", "300", "--database-url", POSTGRES_ADMIN_URL, "--json"])
    stages = summary["stages"]
    assert list(stages) == list(bench_flow.STAGES)
    assert summary["analyze_after_writes"] is True
    for name, stage in stages.items():
        assert stage["seconds"] >= 0 and stage["peak_mib"] > 0, name

    intake = stages["intake"]["counts"]
    assert intake["read"] == summary["extract"]["register_rows"] == 300
    assert intake["persons"] == intake["accepted"] == intake["read"] - intake["quarantined"]
    planning = stages["planning"]["counts"]
    assert 0 < planning["people_planned"] <= intake["persons"]
    assert planning["people_planned"] + planning["unreachable"] + sum(planning["not_eligible"].values()) <= intake["persons"]
    sending = stages["sending"]
    assert sending["counts"]["sent"] == planning["emails"]
    assert sending["server_received"] == planning["emails"] + sending["baseline"]["emails"]
    assert stages["letters"]["counts"]["printed"] == planning["letters"]
    decisions = stages["decisions"]["counts"]
    assert decisions["applied"] == decisions["rows"] == decisions["outcomes"].get("opposed", 0)
    spaces = stages["spaces"]["counts"]
    assert spaces["notified_before"] == planning["people_planned"] - decisions["applied"]  # the opposed are not
    assert spaces["spaces_created"] == spaces["notified_before"] - spaces["cancelled_deceased"]
    dmp = stages["dmp_intake"]["counts"]
    assert dmp["documents"]["read"] == summary["extract"]["documents"]
    assert 0 < stages["migration"]["counts"]["migrated"] <= dmp["documents"]["accepted"]

    for name in bench_flow.REFERENCE_RATIOS:
        assert stages[name]["ratio_to_baseline"] > 0, name
        assert stages[name]["reference_ratio"] == bench_flow.REFERENCE_RATIOS[name]
    assert not list((bench_var / "bench").iterdir())  # the work folder is removed


def test_no_analyze_turns_the_statistics_step_off_for_the_run_only(bench_var: Path) -> None:
    summary = _run(
        ["bench-flow", "--persons", "200", "--until", "planning", "--no-analyze", "--database-url", POSTGRES_ADMIN_URL]
    )
    assert summary["analyze_after_writes"] is False
    assert list(summary["stages"]) == ["intake", "planning"]
    assert summary["stages"]["planning"]["counts"]["people_planned"] > 0
    assert "MES_ANALYZE_AFTER_WRITES" not in os.environ
