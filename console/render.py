"""How each command's summary reads on a terminal: rich tables, one small renderer per command family.

A handler returns a JSON-able dict (printed as is with --json); here that dict becomes tables for
a person. Enums print as their values, whole numbers with a thin space every three digits
(110 032), paths as they are. A command without a renderer of its own gets its summary as one
table of dotted keys.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

THIN_SPACE = "\u202f"  # the narrow no-break space French typography groups digits with

Renderer = Callable[[dict[str, Any]], list[RenderableType]]


def number(value: Any) -> str:
    """A value as a person reads it: 110 032, 0.25, approved, yes, a list joined by commas."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}".replace(",", THIN_SPACE)
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1000:
            return number(int(value))
        whole, _, fraction = f"{value:,.3f}".rstrip("0").rstrip(".").partition(".")
        return whole.replace(",", THIN_SPACE) + (f".{fraction}" if fraction else "")
    if value is None:
        return "–"
    if isinstance(value, list | tuple):
        return ", ".join(number(item) for item in value) if value else "–"
    return str(value)


def _table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]], numeric_from: int = 1) -> Table:
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
        min_width=len(title) if title else None,
    )
    for index, column in enumerate(columns):
        table.add_column(column, justify="right" if index >= numeric_from else "left")
    for row in rows:
        table.add_row(*(number(cell) for cell in row))
    return table


def flatten(summary: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted key, value) pairs, in the dict's order."""
    pairs: list[tuple[str, Any]] = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            pairs += flatten(value, f"{name}.")
        elif isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
            for index, item in enumerate(value):
                pairs += flatten(item, f"{name}[{index}].")
        else:
            pairs.append((name, value))
    return pairs


def key_values(summary: Mapping[str, Any], title: str | None = None) -> Table:
    return _table(title, ("", "value"), flatten(summary))


def _counts_table(title: str, counts: Mapping[str, Any], label: str = "") -> Table | None:
    """One row per key of a flat mapping of counts (quarantine reasons, states...), or None if empty."""
    if not counts:
        return None
    rows = [(key, value) for key, value in counts.items()]
    if len(rows) > 1 and all(isinstance(value, int) for _, value in rows):
        rows.append(("total", sum(value for _, value in rows)))
    return _table(title, (label, "count"), rows)


def _present(*tables: RenderableType | None) -> list[RenderableType]:
    return [table for table in tables if table is not None]


# --- status ---------------------------------------------------------------------------------


def render_status(summary: dict[str, Any]) -> list[RenderableType]:
    persons = summary.get("persons", {})
    notifications = summary.get("notifications", {})
    statuses = sorted({status for by_status in notifications.values() for status in by_status})
    channel_rows = [
        (channel, *(by_status.get(status, 0) for status in statuses), sum(by_status.values()))
        for channel, by_status in sorted(notifications.items())
    ]
    return _present(
        _table("Persons", ("", "count"), [("in the register", persons.get("total", 0)),
                                          ("register rows quarantined", persons.get("quarantined_rows", 0))]),
        _counts_table("Enrolments by state", summary.get("enrolments", {}), "state")
        or Text("Enrolments: none yet"),
        _table("Notifications by channel and status", ("channel", *statuses, "total"), channel_rows)
        if channel_rows else Text("Notifications: none yet"),
        _counts_table("Spaces by state", summary.get("spaces", {}), "state") or Text("Spaces: none yet"),
        _counts_table("DMP documents by outcome", summary.get("dmp_documents", {}), "outcome"),
    )


# --- waves ----------------------------------------------------------------------------------


def _wave_counts(counts: Mapping[str, Any]) -> list[RenderableType]:
    if not counts:
        return []
    recipients = counts.get("recipients", {})
    people = counts.get("people", {})
    planned = people.get("planned", people.get("to_notify"))
    rows: list[tuple[str, Any]] = [
        ("départements", counts.get("departements")),
        ("send date", counts.get("send_date")),
        ("people to tell", planned),
        ("  told through a representative", people.get("told_through_representative")),
        ("  unreachable", people.get("unreachable")),
        ("  excluded", people.get("excluded")),
        ("messages by email", recipients.get("email")),
        ("messages by letter", recipients.get("letter")),
        ("messages in all", recipients.get("total")),
        ("shards", counts.get("shards")),
    ]
    tables: list[RenderableType] = [_table("Counts", ("", ""), [row for row in rows if row[1] is not None])]
    not_eligible = {key: value for key, value in counts.get("not_eligible", {}).items() if value}
    excluded = counts.get("excluded", {})
    tables += _present(_counts_table("Not eligible", not_eligible, "why"), _counts_table("Excluded", excluded, "why"))
    return tables


def render_wave(summary: dict[str, Any]) -> list[RenderableType]:
    head = {key: summary[key] for key in ("wave_id", "state", "decided_by", "by", "dag_run_state", "run_id", "answer")
            if key in summary}
    return [_table(None, ("wave", ""), head.items(), numeric_from=2), *_wave_counts(summary.get("counts") or {})]


def render_wave_list(summary: dict[str, Any]) -> list[RenderableType]:
    waves = summary.get("waves", [])
    if not waves:
        return [Text("No wave yet.")]
    rows = [
        (wave["wave_id"], wave["state"], wave["send_date"], wave["departements"], wave["people"],
         wave["emails"], wave["letters"], wave["sent"], wave["posted"])
        for wave in waves
    ]
    columns = ("wave", "state", "send date", "départements", "people", "emails", "letters", "sent", "posted")
    return [_table(f"Waves ({len(waves)})", columns, rows, numeric_from=4)]


# --- sending --------------------------------------------------------------------------------


def render_send(summary: dict[str, Any]) -> list[RenderableType]:
    report = summary.get("report", {})
    rows = [
        ("emails sent", report.get("emails_sent", 0)),
        ("emails bounced (a letter is queued)", report.get("emails_bounced", 0)),
        ("emails failed otherwise (a letter is queued)", report.get("emails_failed", 0)),
        ("emails deferred by the relay (attempts)", report.get("emails_deferred", 0)),
        ("emails left to send", report.get("emails_left", 0)),
        ("letters printed", report.get("letters_printed", 0)),
        ("print batches posted", len(report.get("batches_posted", []))),
    ]
    head = _table(None, ("run", ""), [("date", summary.get("date")), ("state", summary.get("state")),
                                      ("DAG run", summary.get("dag_run"))], numeric_from=2)
    tables: list[RenderableType] = [head, _table("Sending", ("", "count"), rows)]
    failed = {task: state for task, state in summary.get("tasks", {}).items() if state not in ("success", "skipped")}
    if failed:
        tables.append(_counts_table("Tasks not successful", failed, "task") or Text(""))
    return tables


# --- loads ----------------------------------------------------------------------------------


def _rows_line(title: str, rows: Mapping[str, Any]) -> Table:
    return _table(title, ("read", "accepted", "quarantined"),
                  [(rows.get("read", 0), rows.get("accepted", 0), rows.get("quarantined", 0))], numeric_from=0)


def render_load(summary: dict[str, Any]) -> list[RenderableType]:
    tables: list[RenderableType] = []
    if summary.get("already_loaded"):
        tables.append(Text("This file was loaded before (same SHA-256): nothing changed."))
    head = {key: summary[key] for key in ("file", "extract_dir", "day", "run_id", "changed_persons", "applied",
                                          "ignored_seen_before", "spaces_created") if key in summary}
    if head:
        tables.append(_table(None, ("", ""), head.items(), numeric_from=2))
    if "rows" in summary:
        tables.append(_rows_line("Rows", summary["rows"]))
    for part in ("dmp", "documents"):
        if isinstance(summary.get(part), Mapping) and "read" in summary[part]:
            tables.append(_rows_line(f"Rows of {part}.csv", summary[part]))
            tables += _present(_counts_table(f"{part}.csv quarantined", summary[part].get("quarantine_reasons", {}),
                                             "reason"))
    tables += _present(
        _counts_table("Quarantined, by reason", summary.get("quarantine_reasons", {}), "reason"),
        _counts_table("Warnings (the row is kept)", summary.get("warnings", {})
                      if isinstance(summary.get("warnings"), Mapping) else {}, "warning"),
        _counts_table("Outcomes", summary.get("outcomes", {}), "outcome"),
    )
    rest = {key: value for key, value in summary.items() if key not in {
        "file", "extract_dir", "day", "run_id", "changed_persons", "applied", "ignored_seen_before",
        "spaces_created", "rows", "dmp", "documents", "quarantine_reasons", "warnings", "outcomes",
        "already_loaded", "input_file_id", "input_file_ids", "phase_seconds"}}
    if rest:
        tables.append(key_values(rest))
    return tables


# --- advance and migration ------------------------------------------------------------------


def _run_results(dag_id: str, results: Mapping[str, Any]) -> str:
    """One line saying what a daily DAG run did, from its tasks' XComs."""
    if dag_id == "notification_sending":
        sent = results.get("send_report", {}).get("emails_sent")
        letters = results.get("print_and_post_letters", {}).get("letters_printed", 0)
        return (f"{number(sent)} emails sent, " if sent is not None else "") + f"{number(letters)} letters printed"
    if dag_id == "space_creation":
        created = results.get("create_spaces", {})
        return f"{number(created.get('spaces_created', 0))} spaces created"
    if dag_id == "dmp_migration":
        classified = results.get("classify", {})
        return ", ".join(f"{number(classified.get(key, 0))} {key.replace('_', ' ')}"
                         for key in ("migrated", "held_back", "skipped"))
    return ", ".join(f"{key}" for key in results)


def render_advance(summary: dict[str, Any]) -> list[RenderableType]:
    rows = [(run["day"], run["dag_id"], _run_results(run["dag_id"], run.get("results", {})))
            for run in summary.get("runs", [])]
    head = _table(None, ("advance", ""), [("from", summary.get("from")), ("to", summary.get("to")),
                                          ("days", summary.get("days")), ("DAG runs", len(rows)),
                                          ("days with nothing due (per DAG)", summary.get("nothing_due")),
                                          ("seconds", summary.get("seconds"))])
    tables: list[RenderableType] = [head]
    if rows:
        tables.append(_table("Runs", ("day", "DAG", "what it did"), rows, numeric_from=3))
    failures = [(failure["day"], failure["dag_id"], failure.get("reason") or "; ".join(
        f"{error['task']}: {error['error']}" for error in failure.get("errors", [])), failure.get("log"))
        for failure in summary.get("failures", [])]
    if failures:
        tables.append(_table("Failures", ("day", "DAG", "why", "log"), failures, numeric_from=4))
    return tables


def render_migrate(summary: dict[str, Any]) -> list[RenderableType]:
    return [key_values(summary, "DMP migration")]


def render_benchmark(summary: dict[str, Any]) -> list[RenderableType]:
    return [key_values(summary, "Benchmark")]


def render_demo(summary: dict[str, Any]) -> list[RenderableType]:
    funnel = summary.get("funnel", {})
    steps = [(label, funnel.get(key)) for key, label in FUNNEL_LABELS if key in funnel]
    places = [(label, summary.get(key)) for key, label in (
        ("folder", "demo folder"), ("database", "database"), ("emails_kept_in", "emails (.eml)"),
        ("letters_printed_in", "letters (PDF + manifest)"), ("report", "migration report"),
        ("data_docs", "Data Docs"), ("log_file", "log file"), ("airflow_logs", "Airflow run logs"),
    ) if summary.get(key)]
    tables: list[RenderableType] = [
        _table(f"The demo's funnel ({number(summary.get('persons'))} people, {number(summary.get('seconds'))} s)",
               ("", "people / messages / documents"), steps),
        _table("Where things are", ("", "path"), places, numeric_from=2),
    ]
    if summary.get("airflow"):
        tables.append(Text(f"Open Airflow:\n  {summary['airflow']}"))
    return tables


FUNNEL_LABELS = (
    ("register_rows", "register rows read"),
    ("persons", "people loaded"),
    ("eligible", "eligible in the wave (01, 02)"),
    ("emails", "  emails"),
    ("letters", "  letters"),
    ("emails_sent", "emails sent"),
    ("emails_bounced", "  bounced (a letter followed)"),
    ("letters_posted", "letters posted"),
    ("notified", "people reached (window opened)"),
    ("opposed", "  opposed"),
    ("activated", "  activated their space early"),
    ("spaces_created", "spaces created"),
    ("documents_migrated", "DMP documents migrated"),
    ("documents_held_back", "  held back (see the report)"),
    ("documents_skipped", "  skipped (deleted, duplicates)"),
)


RENDERERS: dict[str, Renderer] = {
    "status": render_status,
    "wave run": render_wave,
    "wave show": render_wave,
    "wave approve": render_wave,
    "wave reject": render_wave,
    "wave list": render_wave_list,
    "send": render_send,
    "load register": render_load,
    "load decisions": render_load,
    "load feedback": render_load,
    "load dmp": render_load,
    "advance": render_advance,
    "migrate": render_migrate,
    "demo": render_demo,
}


def renderables(command: str, summary: dict[str, Any]) -> list[RenderableType]:
    """The tables of a command's summary (`command`: "status", "wave show", "bench-emails"...)."""
    renderer = RENDERERS.get(command)
    if renderer is None:
        renderer = render_benchmark if command.startswith("bench") else lambda data: [key_values(data)]
    return renderer(summary)


def print_summary(command: str, summary: dict[str, Any], console: Console | None = None) -> None:
    if console is None:
        # Piped or redirected: wide enough that a path is never cut (a table takes only what it needs).
        console = Console() if sys.stdout.isatty() else Console(width=240)
    console.print(Group(*renderables(command, summary)))
