"""The compliance report of a migration run: report.json and report.html beside its Data Docs.

Counts by outcome and reason, by document type and by confidentiality; the quality gate's verdict;
the validations and a link to the Data Docs; the DMPs with held-back documents, NIRs masked. Never
a title, never content. Written atomically (a reader never sees half a report).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine, text

from mes_rollout.config import Settings
from mes_rollout.constants import DocumentOutcome
from mes_rollout.db import as_date, as_datetime, load_query
from mes_rollout.dmp_codes import TYPE_CODES_FILE
from mes_rollout.nir import mask
from validation.migration_checks import run_folder

TEMPLATES = Path(__file__).with_name("templates")
HELD_BACK_DMPS_LISTED = 500  # the JSON and HTML list at most this many DMPs; counts cover all
OUTCOMES = tuple(outcome.value for outcome in DocumentOutcome)


def _type_labels() -> dict[str, str]:
    import csv

    with TYPE_CODES_FILE.open(encoding="utf-8", newline="") as stream:
        return {row["type_code"]: row["label"] for row in csv.DictReader(stream, delimiter=";")}


def _pivot(rows: Sequence[Any], key_name: str) -> list[dict[str, Any]]:
    table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    for key, outcome, count in rows:
        table[key][outcome] += int(count)
    return [{key_name: key, **counts, "total": sum(counts.values())} for key, counts in sorted(table.items())]


def build_report(engine: Engine, run_id: str) -> dict[str, Any]:
    with engine.connect() as connection:
        run = connection.execute(text("SELECT * FROM migration_runs WHERE run_id = :r"), {"r": run_id}).mappings().one()
        reasons: dict[str, dict[str, int]] = {outcome: {} for outcome in OUTCOMES}
        totals = dict.fromkeys(OUTCOMES, 0)
        for outcome, reason, count in connection.execute(
            text(load_query("migration_decision_counts.sql")), {"run_id": run_id}
        ):
            totals[outcome] += int(count)
            if reason:
                reasons[outcome][reason] = int(count)
        by_type = _pivot(connection.execute(text(load_query("migration_report_by_type.sql")), {"run_id": run_id}).all(), "type_code")
        by_confidentiality = _pivot(
            connection.execute(text(load_query("migration_report_by_confidentiality.sql")), {"run_id": run_id}).all(),
            "confidentiality",
        )
        held: dict[str, dict[str, Any]] = {}
        dmps_with_held_back, previous = 0, None
        for dmp_id, nir, reason, count in connection.execute(
            text(load_query("migration_report_held_back_dmps.sql")), {"run_id": run_id}
        ):
            if dmp_id != previous:
                dmps_with_held_back, previous = dmps_with_held_back + 1, dmp_id
            if dmp_id not in held and len(held) >= HELD_BACK_DMPS_LISTED:
                continue
            entry = held.setdefault(dmp_id, {"dmp_id": dmp_id, "nir": mask(nir), "held_back": 0, "reasons": {}})
            entry["held_back"] += int(count)
            entry["reasons"][reason] = int(count)
        committed = connection.execute(
            text("SELECT COUNT(*) FROM dmp_document_outcomes WHERE migration_run_id = :r"), {"r": run_id}
        ).scalar_one()
    labels = _type_labels()
    for row in by_type:
        row["label"] = labels.get(row["type_code"], "(unknown type code)")
    validation = run["validation"]
    if isinstance(validation, str):
        validation = json.loads(validation)
    source = sum(totals.values())
    docs_link = None
    for key in ("committed", "decisions"):
        if validation and key in validation:
            docs_link = validation[key].get("data_docs")
            break
    return {
        "run": {
            "run_id": run_id,
            "logical_date": str(as_date(run["logical_date"])),
            "state": run["state"],
            "dag_run_id": run["dag_run_id"],
            "started_at": str(as_datetime(run["started_at"])),
            "finished_at": str(as_datetime(run["finished_at"])) if run["finished_at"] else None,
            "stop_reason": run["stop_reason"],
        },
        "quality_gate": {
            "threshold": float(run["holdback_threshold"]),
            "holdback_rate": float(run["holdback_rate"]) if run["holdback_rate"] is not None else None,
            "passed": None if run["holdback_rate"] is None else float(run["holdback_rate"]) <= float(run["holdback_threshold"]),
            "stop_reason": run["stop_reason"],
        },
        "documents": {"source": source, **totals, "committed": int(committed)},
        "dmps": {"in_scope": int(run["dmps"]), "with_held_back_documents": dmps_with_held_back},
        "reasons": reasons,
        "by_type": by_type,
        "by_confidentiality": by_confidentiality,
        "held_back_dmps": list(held.values()),
        "held_back_dmps_truncated": dmps_with_held_back > len(held),
        "validation": validation or {},
        "data_docs": docs_link,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _write_atomically(path: Path, content: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(content, encoding="utf-8")
    os.replace(temporary, path)


def write_report(engine: Engine, settings: Settings, run_id: str) -> Path:
    """Write report.json and report.html into the run's folder; returns the JSON's path."""
    report = build_report(engine, run_id)
    folder = run_folder(settings, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "report.json"
    _write_atomically(json_path, json.dumps(report, indent=2, sort_keys=True, default=str))
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    html = environment.get_template("migration_report.html.j2").render(report=report)
    _write_atomically(folder / "report.html", html)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE migration_runs SET report_path = :p WHERE run_id = :r"), {"p": str(json_path), "r": run_id}
        )
    return json_path
