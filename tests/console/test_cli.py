"""The command line as an operator uses it: subcommands, --json summaries, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from console.cli import build_parser, main
from tests.factories import person_row, write_csv


def _subcommand_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(parser: object, prefix: list[str]) -> None:
        for action in getattr(parser, "_actions", []):
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):
                for name, child in choices.items():
                    paths.append([*prefix, name])
                    walk(child, [*prefix, name])

    walk(build_parser(), [])
    return paths


def test_every_subcommand_has_help_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    paths = _subcommand_paths()
    assert ["load", "register"] in paths and ["status"] in paths and ["db", "upgrade"] in paths
    for path in paths:
        with pytest.raises(SystemExit) as exited:
            main([*path, "--help"])
        assert exited.value.code == 0
        help_text = capsys.readouterr().out
        is_group = any(other[: len(path)] == path and len(other) > len(path) for other in paths)
        if not is_group:
            assert "--json" in help_text, f"{' '.join(path)} has no --json"


def test_load_register_then_status_as_json(settings_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path / "register.csv", [person_row(), person_row(sexe="X")])
    assert main(["load", "register", str(path), "--date", "2022-01-20", "--json"]) == 0
    loaded = json.loads(capsys.readouterr().out)
    assert loaded["rows"] == {"read": 2, "accepted": 1, "quarantined": 1}
    assert loaded["quarantine_reasons"] == {"BAD_SEX": 1}
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["persons"] == {"total": 1, "quarantined_rows": 1}
    assert status["enrolments"] == {} and status["notifications"] == {} and status["spaces"] == {}
    assert status["dmp_documents"] == {"migrated": 0, "held_back": 0, "skipped": 0}


def test_an_unreadable_file_exits_2_naming_file_and_line(settings_env: Path, tmp_path: Path) -> None:
    path = tmp_path / "register.csv"
    path.write_text("nir;nom\n1;2\n", encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-m", "console.cli", "load", "register", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 2
    assert f"{path}, line 1: missing column(s)" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_json_output_is_only_json_when_a_command_runs_a_dag(
    settings_env: Path, airflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `send` runs the notification_sending DAG in-process; Airflow logs its task runs on stdout,
    # which must not mix with the summary a script parses.
    monkeypatch.setenv("AIRFLOW_HOME", str(airflow_home))
    done = subprocess.run(
        [sys.executable, "-m", "console.cli", "send", "--date", "2022-01-20", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["print_and_post_letters"]["letters_printed"] == 0
    # The run's logs went to its own log file under the Airflow home, not to the terminal.
    assert "[DAG TEST]" not in done.stdout + done.stderr
    logs = list((airflow_home / "logs" / "mes-rollout" / "notification_sending").glob("2022-01-20_*.log"))
    assert logs and any("notification_sending" in log.read_text() for log in logs)
