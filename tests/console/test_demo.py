"""The whole lifecycle through the real DAGs, as `make demo` runs it, checked against the rules."""

from __future__ import annotations

import datetime as dt
import email
import json
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import text

from console.cli import main
from console.demo import CREATION_DATE, DEMO_HOLDBACK_THRESHOLD, SEND_DATE, WAVE_ID, run_demo
from console.status import pipeline_status
from mes_rollout.config import load_settings
from mes_rollout.db import as_date, get_engine


def test_demo_runs_the_rollout_to_the_letter(
    airflow_home: Path, settings_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set here so that the demo's own default does not leak into the other tests of this process.
    monkeypatch.setenv("MES_HOLDBACK_THRESHOLD", DEMO_HOLDBACK_THRESHOLD)
    summary = run_demo(persons=1500, seed=11, run_command=main)
    status = summary["status"]
    engine = get_engine()
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
    outbox = load_settings().outbox_dir
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
    reports = sorted((load_settings().reports_dir / "migration").glob("*/report.json"))
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
