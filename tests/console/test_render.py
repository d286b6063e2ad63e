"""The console's human output (tables with the numbers), its --json (unchanged), its help, and the
masking of personal data in every log record."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
from rich.console import Console

from console.cli import build_parser, main
from console.render import number, print_summary
from mes_rollout import logsafe
from mes_rollout.constants import WaveState
from tests.factories import person_row, write_csv

THIN = "\u202f"


def _squeezed(line: str) -> str:
    """A table row with its runs of plain spaces as one (thin spaces inside numbers stay)."""
    return re.sub(" +", " ", line).strip()


def _rendered(command: str, summary: dict) -> str:
    console = Console(file=io.StringIO(), width=200, record=True)
    print_summary(command, summary, console)
    return console.export_text()


def test_numbers_are_grouped_with_thin_spaces_and_enums_print_as_values() -> None:
    assert number(110032) == f"110{THIN}032"
    assert number(1234567) == f"1{THIN}234{THIN}567"
    assert number(0.019630484988452657) == "0.02"
    assert number(WaveState.APPROVED) == "approved"
    assert number(["01", "02"]) == "01, 02"
    text = _rendered("wave show", {"wave_id": "W1", "state": WaveState.APPROVED, "decided_by": None, "counts": {}})
    assert "approved" in text and "WaveState" not in text


def test_status_prints_tables_with_the_numbers(settings_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path / "register.csv", [person_row(), person_row(sexe="X")])
    assert main(["load", "register", str(path), "--date", "2022-01-20", "--json"]) == 0
    capsys.readouterr()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    lines = [_squeezed(line) for line in out.splitlines()]
    assert "in the register 1" in lines
    assert "register rows quarantined 1" in lines
    assert "migrated 0" in lines and "{" not in out and "'persons'" not in out
    # Large counts read with thin spaces, per channel and status.
    text = _rendered("status", {
        "persons": {"total": 300000, "quarantined_rows": 96},
        "enrolments": {"notified": 110032, "created": 879},
        "notifications": {"email": {"sent": 22000}, "letter": {"posted": 78}},
        "spaces": {},
        "dmp_documents": {"migrated": 842, "held_back": 17, "skipped": 22},
    })
    assert f"300{THIN}000" in text and f"110{THIN}032" in text and f"110{THIN}911" in text  # total
    row = next(_squeezed(line) for line in text.splitlines() if line.startswith("email"))
    assert row == f"email 0 22{THIN}000 22{THIN}000"


def test_status_json_is_the_same_dict(settings_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path / "register.csv", [person_row(), person_row(sexe="X")])
    assert main(["load", "register", str(path), "--date", "2022-01-20", "--json"]) == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "persons": {"total": 1, "quarantined_rows": 1},
        "enrolments": {},
        "notifications": {},
        "spaces": {},
        "dmp_documents": {"migrated": 0, "held_back": 0, "skipped": 0},
    }


@pytest.mark.slow
def test_send_json_keeps_its_keys_and_reports_counts(
    settings_env: Path, airflow_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(airflow_home))
    assert main(["send", "--date", "2022-01-20", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # The keys it always had, with their values' shapes.
    assert {"dag_run", "state", "tasks", "settle_stuck", "print_and_post_letters"} <= set(summary)
    assert summary["state"] == "success"
    assert summary["print_and_post_letters"]["letters_printed"] == 0
    assert summary["report"] == {
        "emails_sent": 0, "emails_bounced": 0, "emails_failed": 0, "emails_deferred": 0, "emails_left": 0,
        "letters_printed": 0, "letters_not_printable": 0, "letters_not_needed": 0, "batches_posted": [],
    }
    text = _rendered("send", summary)
    assert "emails sent" in text and "emails bounced" in text and "letters printed" in text


def test_help_has_examples_and_lists_benchmarks_apart(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    commands, _, benchmarks = text.partition("benchmarks (BENCHMARKS.md")
    assert "YYYY-MM-DD" in commands and "mes-rollout wave run W1 --departements 01,02" in commands
    assert "bench-emails" not in commands and "status" in commands
    assert "bench-emails" in benchmarks and "bench-intake" in benchmarks
    # The old names still run.
    args = build_parser().parse_args(["bench-letters", "--count", "10"])
    assert args.count == 10


def test_the_log_filter_masks_emails_nirs_and_sql_parameters() -> None:
    assert logsafe.mask_text("to jean.dupont@example.fr now") == "to <email> now"
    assert logsafe.mask_text("nir 185057800608436 and 1850578006084") == "nir 18505********** and 18505********"
    assert logsafe.mask_text("corsica 285032A12345678.") == "corsica 28503**********."
    assert logsafe.mask_text("run 12345678901234 ok") == "run 12345678901234 ok"  # 14 digits: not a NIR
    assert logsafe.mask_text("[SQL: INSERT]\n[parameters: ('DUPONT', 'Jean')]\n(x)") == (
        "[SQL: INSERT]\n[parameters: hidden]\n(x)"
    )
    stream = io.StringIO()
    handler = logsafe.install(logging.StreamHandler(stream))
    logger = logging.getLogger("tests.logsafe")
    logger.addHandler(handler)
    try:
        logger.warning("bounced %s for %s", "marie@example.org", "285037512345678")
        try:
            raise ValueError("row of paul@example.com")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    logged = stream.getvalue()
    assert "bounced <email> for 28503**********" in logged
    assert "row of <email>" in logged and "example" not in logged
