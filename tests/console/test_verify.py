"""`mes-rollout verify`: a print batch or a report altered after it was written is listed as
altered, a deleted one as missing, and the command exits 1; untouched evidence passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine

from console import cli, cli_verify
from mes_rollout.config import load_settings
from tests.mes_rollout.test_evidence import one_rollout


def _flip_a_byte(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))


@pytest.mark.slow
def test_verify_lists_altered_and_missing_evidence(
    engine: Engine, settings_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if cli_verify not in cli.COMMAND_MODULES:  # until console/cli.py lists it
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, cli_verify))
    found = one_rollout(engine, load_settings(), tmp_path)
    assert cli.main(["verify", "--json"]) == 0
    intact = json.loads(capsys.readouterr().out)
    assert intact["ok"] is True and intact["missing"] == [] and intact["altered"] == []
    assert intact["checked"] == intact["intact"] > 10

    _flip_a_byte(found["pdf"])
    html_report = found["report"].with_name("report.html")
    _flip_a_byte(html_report)
    found["manifest"].unlink()

    assert cli.main(["verify", "--json"]) == 1
    checked = json.loads(capsys.readouterr().out)
    assert checked["ok"] is False
    assert sorted((item["path"], item["kind"]) for item in checked["altered"]) == sorted(
        [(str(found["pdf"]), "print_pdf"), (str(html_report), "migration_report_html")]
    )
    assert [(item["path"], item["kind"]) for item in checked["missing"]] == [(str(found["manifest"]), "print_manifest")]
    assert checked["intact"] == intact["intact"] - 3
    altered_pdf = next(item for item in checked["altered"] if item["kind"] == "print_pdf")
    assert altered_pdf["sha256"] == found["pdf_sha256"] != altered_pdf["found_sha256"]
    # Only one run's files: the migration run's report is altered, its print batch is not its own.
    assert cli.main(["verify", "--run", found["run_id"], "--json"]) == 1
    of_run = json.loads(capsys.readouterr().out)
    assert [item["kind"] for item in of_run["altered"]] == ["migration_report_html"] and of_run["missing"] == []
