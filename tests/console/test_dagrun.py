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


sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_only
def test_the_runs_of_one_process_parse_and_write_the_dag_folder_once(
    airflow_home: Path, settings_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow.dag_processing.dagbag as dagbag_module
    from airflow import settings
    from sqlalchemy import text

    from console import dagrun

    parses: list[str] = []
    writes: list[str] = []
    real_bag, real_sync = dagbag_module.BundleDagBag, dagbag_module.sync_bag_to_db

    def counted_bag(*args: object, **kwargs: object) -> object:
        parses.append(str(kwargs.get("dag_folder")))
        return real_bag(*args, **kwargs)

    def counted_sync(*args: object, **kwargs: object) -> None:
        writes.append("sync")
        real_sync(*args, **kwargs)

    monkeypatch.setattr(dagbag_module, "BundleDagBag", counted_bag)
    monkeypatch.setattr(dagbag_module, "sync_bag_to_db", counted_sync)
    monkeypatch.setattr(dagrun, "_parsed_folders", {})
    missing = str(tmp_path / "never-written.csv")

    for day in (15, 16, 17):
        result = run_dag("decisions_intake", dt.date(2022, 2, day), {"decisions_file": missing}, raise_on_failure=False)
        assert result.state == "failed"
    # The folder was parsed and written to the metadata database by the first run only.
    assert len(parses) == 1 and len(writes) == 1
    # Each run is still a run of the DAG in Airflow, and fails as it did.
    assert [error.task for error in result.errors] == ["load_decisions"]

    # Parsed again for every run, and the whole folder written each time, as before.
    with dagrun.reparse_every_run():
        run_dag("decisions_intake", dt.date(2022, 2, 18), {"decisions_file": missing}, raise_on_failure=False)
        run_dag("decisions_intake", dt.date(2022, 2, 19), {"decisions_file": missing}, raise_on_failure=False)
    assert len(parses) == 3 and len(writes) == 3

    # The metadata database commits without waiting for the disk.
    assert settings.engine is not None
    with settings.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL


def test_a_kept_dag_folder_is_parsed_again_when_one_of_its_files_changes(tmp_path: Path) -> None:
    from console.dagrun import _parsed_folder

    folder = tmp_path / "dags"
    folder.mkdir()
    dag_file = folder / "tiny.py"

    def write(dag_id: str) -> None:
        dag_file.write_text(
            "import pendulum\n"
            "from airflow.sdk import DAG\n"
            "from airflow.providers.standard.operators.empty import EmptyOperator\n"
            f"with DAG(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2022, 1, 1)):\n"
            "    EmptyOperator(task_id='nothing')\n"
        )

    write("tiny")
    first = _parsed_folder(folder, "tiny-bundle")
    assert set(first.bag.dags) == {"tiny"}
    assert _parsed_folder(folder, "tiny-bundle") is first  # nothing changed: the same parse
    write("tiny_renamed")
    again = _parsed_folder(folder, "tiny-bundle")
    assert again is not first and set(again.bag.dags) == {"tiny_renamed"}
