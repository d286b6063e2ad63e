"""The compliance report of a migration run: report.json and report.html beside its Data Docs.

Counts by outcome and reason, by document type and by confidentiality, each code with its meaning
in French; the quality gate's verdict (a threshold above the default flagged); what was decided
and what was applied; the validations and a link to the Data Docs; the DMPs with held-back
documents, NIRs masked; the provenance (rollout, database without password, code version,
inputs' SHA-256). Never a title, never content. Times in Paris, to the second.

The report is evidence (`mes_rollout.evidence.write_once`): written once, under the rollout's
folder, recorded with its SHA-256. Its content depends on the database only (no wall clock), so
writing it again gives the same bytes. A run that ended (succeeded, stopped, failed) has
`report.json` and `report.html`; a run that has not ended yet (a task crashed: it will be resumed)
gets an interim report, `interim/report-<state>-<digest>.*`, which the final one never replaces.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Connection, Engine, text

from mes_rollout import evidence
from mes_rollout.config import Settings
from mes_rollout.constants import DocumentOutcome, MigrationRunState
from mes_rollout.db import as_date, as_datetime, enum_params, load_query
from mes_rollout.dmp_codes import TYPE_CODES_FILE
from mes_rollout.nir import mask
from validation import legend
from validation.migration_checks import RUN_INPUT_KINDS, run_folder

TEMPLATES = Path(__file__).with_name("templates")
HELD_BACK_DMPS_LISTED = 500  # the JSON and HTML list at most this many DMPs; counts cover all
OUTCOMES = tuple(outcome.value for outcome in DocumentOutcome)
ENDED = (MigrationRunState.SUCCEEDED.value, MigrationRunState.STOPPED.value, MigrationRunState.FAILED.value)
# The gate's threshold a deployment gets without setting MES_HOLDBACK_THRESHOLD: above it, relaxed.
DEFAULT_HOLDBACK_THRESHOLD = float(Settings.__dataclass_fields__["holdback_threshold"].default)  # type: ignore[arg-type]


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
    """The report's content, from the database only: the same database state gives the same report."""
    with engine.begin() as connection:
        origin = _provenance(connection, engine, run_id)
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
            text(load_query("migration_report_held_back_dmps.sql")),
            {"run_id": run_id, **enum_params(DocumentOutcome, "outcome")},
        ):
            if dmp_id != previous:
                dmps_with_held_back, previous = dmps_with_held_back + 1, dmp_id
            if dmp_id not in held and len(held) >= HELD_BACK_DMPS_LISTED:
                continue
            entry = held.setdefault(dmp_id, {"dmp_id": dmp_id, "nir": mask(nir), "held_back": 0, "reasons": {}})
            entry["held_back"] += int(count)
            entry["reasons"][reason] = int(count)
        applied = dict.fromkeys(OUTCOMES, 0)
        for outcome, count in connection.execute(
            text(
                "SELECT outcome, COUNT(*) FROM dmp_document_outcomes WHERE migration_run_id = :r GROUP BY outcome"
            ),
            {"r": run_id},
        ):
            applied[outcome] = int(count)
        committed = sum(applied.values())
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
    started_at, finished_at = as_datetime(run["started_at"]), as_datetime(run["finished_at"])
    threshold = float(run["holdback_threshold"])
    return {
        "run": {
            "run_id": run_id,
            "logical_date": str(as_date(run["logical_date"])),
            "state": run["state"],
            "ended": run["state"] in ENDED,
            "dag_run_id": run["dag_run_id"],
            "started_at": started_at.isoformat(timespec="seconds") if started_at else None,
            "finished_at": finished_at.isoformat(timespec="seconds") if finished_at else None,
            "stop_reason": run["stop_reason"],
        },
        "quality_gate": {
            "threshold": threshold,
            "default_threshold": DEFAULT_HOLDBACK_THRESHOLD,
            "relaxed": threshold > DEFAULT_HOLDBACK_THRESHOLD,
            "holdback_rate": float(run["holdback_rate"]) if run["holdback_rate"] is not None else None,
            "passed": None if run["holdback_rate"] is None else float(run["holdback_rate"]) <= threshold,
            "stop_reason": run["stop_reason"],
        },
        # `documents` counts the decisions; `applied` what the commit carried out (nothing for a
        # stopped run: its decisions were never applied).
        "documents": {"source": source, **totals, "committed": int(committed)},
        "applied": applied,
        "dmps": {"in_scope": int(run["dmps"]), "with_held_back_documents": dmps_with_held_back},
        "reasons": reasons,
        "by_type": by_type,
        "by_confidentiality": by_confidentiality,
        "held_back_dmps": list(held.values()),
        "held_back_dmps_truncated": dmps_with_held_back > len(held),
        "validation": validation or {},
        "data_docs": docs_link,
        "legend": _legend(reasons, by_confidentiality, held),
        "as_of": _as_of(run),
        "provenance": origin,
    }


def _provenance(connection: Connection, engine: Engine, run_id: str) -> dict[str, Any]:
    started = connection.execute(
        text("SELECT started_at FROM migration_runs WHERE run_id = :r"), {"r": run_id}
    ).scalar_one()
    return evidence.provenance(
        connection, engine.url.render_as_string(hide_password=False), run_id, input_kinds=RUN_INPUT_KINDS,
        inputs_before=as_datetime(started),
    )  # fmt: skip


def _as_of(run: Any) -> str | None:
    """The moment the report describes: the run's last change (never the wall clock)."""
    moment = as_datetime(run["finished_at"]) or as_datetime(run["updated_at"])
    return moment.isoformat(timespec="seconds") if moment else None


def _legend(
    reasons: dict[str, dict[str, int]], by_confidentiality: list[dict[str, Any]], held: dict[str, dict[str, Any]]
) -> dict[str, dict[str, str]]:
    """The meaning, in French, of each reason and confidentiality code the report shows."""
    shown = {reason for counts in reasons.values() for reason in counts}
    shown |= {reason for dmp in held.values() for reason in dmp["reasons"]}
    codes = {code for row in by_confidentiality for code in legend.confidentiality_codes(row["confidentiality"])}
    return {
        "reasons": {code: legend.REASON_LABELS.get(code, "code inconnu de cette version") for code in sorted(shown)},
        "confidentiality": {
            code: legend.CONFIDENTIALITY_LABELS.get(code, "code invalide (document retenu)") for code in sorted(codes)
        },
    }


def render_html(report: dict[str, Any]) -> str:
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    environment.filters["paris_time"] = lambda value: legend.paris_time(as_datetime(value)) if value else ""
    environment.filters["paris_day"] = lambda value: legend.paris_day(as_date(value)) if value else ""  # type: ignore[arg-type]
    environment.filters["percent"] = legend.percent
    return environment.get_template("migration_report.html.j2").render(
        report=report, outcome_labels=legend.OUTCOME_LABELS, state_labels=legend.STATE_LABELS
    )


def write_report(engine: Engine, settings: Settings, run_id: str) -> Path:
    """Write report.html and report.json, once, into the run's folder (an interim pair while the
    run has not ended); returns the JSON's path. A re-run finds the same bytes there, or, for an
    ended run whose report is recorded, leaves it as it is."""
    report = build_report(engine, run_id)
    body = json.dumps(report, indent=2, sort_keys=True, default=str).encode("utf-8")
    html = render_html(report).encode("utf-8")
    with engine.begin() as connection:
        folder = run_folder(settings, report["provenance"]["rollout_id"], run_id)
        if report["run"]["ended"]:
            json_path, html_path = folder / "report.json", folder / "report.html"
        else:
            stem = f"report-{report['run']['state']}-{hashlib.sha256(body).hexdigest()[:12]}"
            json_path, html_path = folder / "interim" / f"{stem}.json", folder / "interim" / f"{stem}.html"
        recorded = connection.execute(
            text("SELECT 1 FROM evidence_files WHERE path = :p"), {"p": str(json_path)}
        ).first()
        if recorded is None:
            for path, content, kind in (
                (html_path, html, evidence.EvidenceKind.MIGRATION_REPORT_HTML),
                (json_path, body, evidence.EvidenceKind.MIGRATION_REPORT_JSON),
            ):
                evidence.write_once(
                    path, content, kind=kind, run_id=run_id, provenance=report["provenance"], connection=connection,
                    settings=settings,
                )  # fmt: skip
        connection.execute(
            text("UPDATE migration_runs SET report_path = :p WHERE run_id = :r"), {"p": str(json_path), "r": run_id}
        )
    return json_path
