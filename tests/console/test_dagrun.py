"""A failed in-process DAG run names its real log file and its tasks' first error line."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from console.cli import main
from console.dagrun import DagRunFailed, run_dag


def test_a_failed_run_names_its_log_file_and_the_first_line_of_the_error(
    airflow_home: Path, settings_env: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "decisions-never-written.csv"
    with pytest.raises(DagRunFailed) as failed:
        run_dag("decisions_intake", dt.date(2022, 2, 15), {"decisions_file": str(missing)})
    error = failed.value
    assert error.failed_tasks[0] == "load_decisions"
    assert error.log_path is not None and error.log_path.is_absolute() and error.log_path.is_file()
    assert error.log_path.is_relative_to(Path(os.environ["AIRFLOW_HOME"]).resolve() / "logs")
    assert [failure.task for failure in error.errors] == ["load_decisions"]
    assert "InputFileError" in error.errors[0].error and "no such file" in error.errors[0].error
    message = str(error)
    assert "$AIRFLOW_HOME" not in message and str(error.log_path) in message
    # What the task logged is in that file, not on the terminal.
    assert "load_decisions" in error.log_path.read_text()


def test_the_command_line_prints_the_expanded_log_path(
    airflow_home: Path, settings_env: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.csv"
    assert main(["load", "decisions", str(missing), "--date", "2022-02-15"]) == 1
    printed = capfd.readouterr().err
    assert "$AIRFLOW_HOME" not in printed
    log_line = next(line for line in printed.splitlines() if line.strip().startswith("log: "))
    assert Path(log_line.split("log: ", 1)[1]).is_file()
    assert "load_decisions: " in printed and "no such file" in printed
