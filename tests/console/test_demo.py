"""The whole lifecycle through the real DAGs, as `make demo` runs it, checked against the rules;
each demo in a clean folder of its own, and no personal data in any log or output it leaves."""

from __future__ import annotations

import csv
import datetime as dt
import email
import json
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from console.cli import main, run_quietly
from console.demo import CREATION_DATE, DEMO_HOLDBACK_THRESHOLD, SEND_DATE, WAVE_ID, run_demo
from console.logfile import current_log_file
from console.status import pipeline_status
from mes_rollout.config import load_settings
from mes_rollout.db import as_date


def _register(folder: Path) -> list[dict[str, str]]:
    with (folder / "extract" / "register.csv").open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream, delimiter=";"))


@pytest.mark.slow
def test_demo_runs_the_rollout_to_the_letter(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MES_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("MES_DATABASE_URL", raising=False)
    assert main(["demo", "--persons", "1500", "--seed", "11", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    folder = Path(summary["folder"])
    assert folder.parent == tmp_path / "var" and folder.name.startswith("demo-")
    status = summary["status"]
    engine = create_engine(summary["database"])
    monkeypatch.setenv("MES_VAR_DIR", str(folder))  # the demo's own settings, for the checks below
    monkeypatch.setenv("MES_DATABASE_URL", summary["database"])
    monkeypatch.setenv("MES_HOLDBACK_THRESHOLD", DEMO_HOLDBACK_THRESHOLD)
    with engine.connect() as connection:
        # Nobody who opposed has a space; every active space was activated or waited out its window.
        opposed_with_space = connection.execute(
            text(
                "SELECT COUNT(*) FROM enrolments e JOIN spaces s ON s.nir = e.nir"
                " WHERE e.state IN ('opposed', 'late_opposed') AND s.state = 'active'"
            )
        ).scalar_one()
        spaces = connection.execute(
            text(
                "SELECT s.nir, s.creation_cause, s.created_on, e.state, e.opt_out_deadline"
                " FROM spaces s JOIN enrolments e ON e.nir = s.nir"
            )
        ).all()
        # Minors were written to their representatives.
        minors = connection.execute(
            text(
                "SELECT p.nir, p.date_naissance, p.nir_representant, n.recipient_nir"
                " FROM persons p JOIN notification_members m ON m.nir = p.nir"
                " JOIN notifications n ON n.notification_id = m.notification_id"
                " WHERE p.nir_representant IS NOT NULL"
            )
        ).all()
        sent_emails = connection.execute(
            text("SELECT COUNT(*) FROM notifications WHERE channel = 'email' AND status = 'sent'")
        ).scalar_one()
        nirs = connection.execute(text("SELECT nir FROM persons")).scalars().all()
    assert opposed_with_space == 0
    assert spaces, "the demo created no space"
    for _nir, cause, created_on, state, deadline in spaces:
        assert state == "created"
        if cause == "automatic":
            assert as_date(created_on) == CREATION_DATE
            assert deadline is not None and str(deadline)[:10] == "2022-02-28"
    assert minors and all(recipient == representative for _, _, representative, recipient in minors)

    # Each sent email is in the outbox exactly once, carries its notification id, and no NIR.
    outbox = Path(summary["emails_kept_in"])
    messages = sorted(outbox.glob("*.eml"))
    assert len(messages) == sent_emails > 0
    nir_set = set(nirs)
    for path in messages[:50]:
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        content = body.get_content()
        assert "3422" in content and "28 février 2022" in content
        assert not any(nir in path.read_text(errors="replace") for nir in nir_set)

    # The DMP carry-over reconciles, and its compliance report names no NIR in clear.
    reports = sorted(Path(summary["reports_in"]).glob("**/migration/*/report.json"))
    assert reports
    for report_path in reports:
        report = json.loads(report_path.read_text())
        documents = report["documents"]
        assert documents["source"] == documents["migrated"] + documents["held_back"] + documents["skipped"]
        raw = report_path.read_text() + report_path.with_name("report.html").read_text()
        assert not any(nir in raw for nir in nir_set)
    assert status["dmp_documents"]["migrated"] > 0

    # Running the days again changes nothing.
    assert main(["advance", "--from", SEND_DATE.isoformat(), "--to", CREATION_DATE.isoformat(), "--json"]) == 0
    with engine.connect() as connection:
        assert pipeline_status(connection) == status
        assert connection.execute(text("SELECT COUNT(*) FROM waves WHERE wave_id = :w"), {"w": WAVE_ID}).scalar_one() == 1
    assert len(list(outbox.glob("*.eml"))) == len(messages)
    assert dt.date(2022, 3, 1) == CREATION_DATE

    # The summary tells the funnel and where things are.
    funnel = summary["funnel"]
    assert funnel["persons"] == status["persons"]["total"]
    assert funnel["emails_sent"] == sent_emails and funnel["documents_migrated"] == status["dmp_documents"]["migrated"]
    assert Path(summary["report"]).is_file() and summary["report"].endswith("report.html")
    assert Path(summary["data_docs"]).name == "index.html"
    assert "mes-rollout airflow up" in summary["airflow"]
    engine.dispose()


@pytest.mark.slow
def test_no_log_line_of_a_demo_carries_an_email_a_nir_or_a_name(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MES_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("MES_DATABASE_URL", raising=False)
    # Small synthetic extracts hold back more than the demo's 5 % now and then: not the point here.
    monkeypatch.setenv("MES_HOLDBACK_THRESHOLD", "0.5")
    runs_before = set((airflow_home / "logs").rglob("*.log"))
    assert main(["demo", "--persons", "1500", "--seed", "11"]) == 0
    console_output = capsys.readouterr()
    assert "Open Airflow" in console_output.out and "report.html" in console_output.out
    folder = next((tmp_path / "var").glob("demo-*"))
    register = _register(folder)
    secrets = {row["email"] for row in register if "@" in row["email"]}
    secrets |= {row["nir"] for row in register if len(row["nir"]) >= 13}
    secrets |= {row["nom_naissance"] for row in register if len(row["nom_naissance"]) >= 6}
    assert len(secrets) > 1500
    log_file = current_log_file()
    assert log_file is not None and log_file.stat().st_mode & 0o077 == 0
    airflow_logs = set((airflow_home / "logs").rglob("*.log")) - runs_before
    assert len(airflow_logs) >= 5  # the wave, sending, decisions, space creation, migration
    texts = {"stdout": console_output.out, "stderr": console_output.err, str(log_file): log_file.read_text()}
    texts.update({str(path): path.read_text(errors="replace") for path in airflow_logs})
    assert "[DAG TEST]" in texts[str(log_file)]  # the libraries' records are there, masked
    for where, content in texts.items():
        leaked = sorted(secret for secret in secrets if secret in content)
        assert not leaked, f"{where} carries {len(leaked)} personal values, e.g. {leaked[:1]}"
    # Files at rest are owner-only: the database, keys, documents, kept emails, print files,
    # reports and Data Docs (the libraries' working files too), and every folder.
    for kind in ("mes-rollout.db", "keys", "documents", "outbox", "print", "reports"):
        assert (folder / kind).exists(), kind
    opened = [
        f"{path.relative_to(folder)} {path.stat().st_mode & 0o777:o}"
        for path in [folder, *folder.rglob("*")]
        if path.stat().st_mode & 0o077
    ]
    assert not opened, f"{len(opened)} files or folders readable by others, e.g. {opened[:3]}"


def _demo_counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        persons = connection.execute(text("SELECT COUNT(*) FROM persons")).scalar_one()
        waves = connection.execute(text("SELECT COUNT(*) FROM waves")).scalar_one()
    return persons, waves


@pytest.mark.slow
def test_two_demos_in_a_row_each_start_clean(airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MES_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("MES_DATABASE_URL", raising=False)
    monkeypatch.setenv("MES_HOLDBACK_THRESHOLD", "0.5")
    first = run_demo(persons=800, seed=3, run_command=run_quietly)
    second = run_demo(persons=500, seed=4, run_command=run_quietly)
    assert first["folder"] != second["folder"] and first["database"] != second["database"]
    for summary, persons in ((first, 800), (second, 500)):
        rows = _register(Path(summary["folder"]))
        engine = create_engine(summary["database"])
        loaded, waves = _demo_counts(engine)
        engine.dispose()
        accepted = summary["funnel"]["persons"]
        # Its own register only: the second demo's counts are not the first's plus its own.
        assert loaded == accepted == summary["status"]["persons"]["total"]
        assert summary["funnel"]["register_rows"] == len(rows)
        assert persons * 0.95 <= accepted <= len(rows) and waves == 1
        assert len(list(Path(summary["emails_kept_in"]).glob("*.eml"))) == summary["funnel"]["emails_sent"]
    # The caller's settings are back after a demo.
    assert load_settings().var_dir == tmp_path / "var"
