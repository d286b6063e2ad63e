"""`make demo`: the whole lifecycle end to end on the embedded default (SQLite, loopback SMTP).

Synthetic people → register intake → DMP extract → a wave over two départements, approved →
emails and letters sent → people answer (a synthetic decisions file) → the window closes →
spaces created → DMP documents carried over with their compliance report. Every step goes
through the same commands an operator uses.

Each demo starts from a clean state of its own: a new folder `var/demo-<moment>` with its own
database, outbox, print files, reports and documents; an earlier demo's are never reused.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from console.render import number
from console.status import pipeline_status
from mes_rollout.config import load_settings
from mes_rollout.constants import EnrolmentState

log = logging.getLogger(__name__)

WAVE_ID = "DEMO-2022-01-31"
DEPARTEMENTS = "01,02"
SEND_DATE = dt.date(2022, 1, 31)
DECISIONS_DATE = dt.date(2022, 2, 15)
CREATION_DATE = dt.date(2022, 3, 1)  # the first creation run after the 28 February deadline


def write_synthetic_decisions(engine: Engine, path: Path, seed: int) -> int:
    """A decisions.csv as the website and the 3422 line would send it for the demo wave's people:
    about 2 % oppositions, 3 % activations, one reference sent twice."""
    rng = random.Random(seed)
    with engine.connect() as connection:
        nirs = connection.execute(
            text("SELECT nir FROM enrolments WHERE wave_id = :wave AND state = :notified ORDER BY nir"),
            {"wave": WAVE_ID, "notified": EnrolmentState.NOTIFIED.value},
        ).scalars().all()
    rows = []
    for index, nir in enumerate(nirs):
        draw = rng.random()
        if draw < 0.02:
            event = "opposition"
        elif draw < 0.05:
            event = "activation"
        else:
            continue
        received = dt.datetime(2022, 2, 1 + index % 14, 9 + index % 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
        rows.append(
            {
                "reference": f"DEMO-{index:06d}",
                "nir": nir,
                "event": event,
                "received_at": received.isoformat(),
                "channel": rng.choice(["web", "phone", "cpam", "mail"]),
            }
        )
    if rows:
        rows.append(dict(rows[0]))  # the same reference twice: applied once
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(
            stream, fieldnames=["reference", "nir", "event", "received_at", "channel"], delimiter=";"
        )
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


# The synthetic extract carries about 1 % faulty documents on purpose (every rejection path shows
# in the reports); on a small population that sits right at the production gate of 1 %, so the
# demo's gate is 5 % unless MES_HOLDBACK_THRESHOLD says otherwise.
DEMO_HOLDBACK_THRESHOLD = "0.05"

# The settings a demo gives itself: everything under its own folder. The other MES_* settings
# (SMTP rate, shard size...) are the caller's.
_FOLDER_SETTINGS = (
    "MES_VAR_DIR", "MES_DATABASE_URL", "MES_REPORTS_DIR", "MES_OUTBOX_DIR", "MES_PRINT_DIR",
    "MES_DOCUMENT_STORE_DIR", "MES_DOCUMENT_STORE_URL", "MES_HOLDBACK_THRESHOLD",
)  # fmt: skip

RunCommand = Callable[[list[str]], dict[str, Any]]


def new_demo_folder(var_dir: Path) -> Path:
    """A folder of its own for one demo, `var/demo-<moment>`: never one an earlier demo used."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    var_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        folder = var_dir / (f"demo-{stamp}" if attempt == 0 else f"demo-{stamp}-{attempt}")
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return folder
    raise RuntimeError(f"no free demo folder under {var_dir}")


@contextlib.contextmanager
def _settings_of(folder: Path) -> Iterator[None]:
    """This process's settings point at `folder` (a fresh SQLite database, outbox, print files,
    reports, documents, keys) while the demo runs; the caller's come back afterwards."""
    from mes_rollout.db import get_engine

    saved = {name: os.environ.get(name) for name in _FOLDER_SETTINGS}
    holdback = saved["MES_HOLDBACK_THRESHOLD"] or DEMO_HOLDBACK_THRESHOLD
    for name in _FOLDER_SETTINGS:
        os.environ.pop(name, None)
    os.environ.update(
        MES_VAR_DIR=str(folder),
        MES_DATABASE_URL=f"sqlite:///{folder / 'mes-rollout.db'}",
        MES_HOLDBACK_THRESHOLD=holdback,
    )
    get_engine.cache_clear()
    try:
        yield
    finally:
        get_engine().dispose()
        get_engine.cache_clear()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _latest_report(reports_dir: Path) -> Path | None:
    # Under reports/migration/<run>/, or a level deeper where reports are kept per database.
    reports = sorted(reports_dir.glob("**/migration/*/report.html"), key=lambda path: path.stat().st_mtime)
    return reports[-1] if reports else None


def run_demo(
    persons: int, seed: int, run_command: RunCommand, say: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The whole lifecycle in a fresh folder under var/. `run_command` runs one subcommand and
    returns its summary (the command line's `run_quietly`, handed in: the demo sits below the
    command line); `say` tells each step as it ends."""
    from console.dagrun import ensure_airflow_home
    from console.logfile import current_log_file
    from console.status import funnel
    from mes_rollout.db import get_engine

    tell = say or (lambda line: log.info("demo: %s", line))
    began = time.monotonic()
    base = load_settings()
    # The Airflow home stays the caller's ($AIRFLOW_HOME or var/airflow): Airflow is set up once
    # per process, and its runs of every demo are kept there, each in its own log file.
    airflow_home = ensure_airflow_home()
    folder = new_demo_folder(base.var_dir)
    tell(f"demo folder {folder}")

    def step(what: str, argv: list[str], result: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
        started = time.monotonic()
        log.info("demo step: mes-rollout %s", " ".join(argv))
        summary = run_command(argv)
        tell(f"{what}: {result(summary)} ({time.monotonic() - started:.1f} s)")
        return summary

    with _settings_of(folder):
        settings = load_settings()
        extract = folder / "extract"
        synth = step(
            "synthetic people",
            ["synth", "--persons", str(persons), "--seed", str(seed), "--out", str(extract), "--dirty", "0.01"],
            lambda s: f"{number(s['persons'])} people, {number(s['documents'])} DMP documents",
        )
        step(
            "register loaded",
            ["load", "register", str(extract / "register.csv"), "--date", "2022-01-28"],
            lambda s: f"{number(s['rows']['read'])} rows read = {number(s['rows']['accepted'])} accepted"
            f" + {number(s['rows']['quarantined'])} quarantined",
        )
        step(
            "DMP extract staged",
            ["load", "dmp", str(extract / "dmp")],
            lambda s: f"{number(s['documents']['accepted'])} documents of {number(s['dmp']['accepted'])} DMPs",
        )
        step(
            f"wave {WAVE_ID} planned and approved",
            ["wave", "run", WAVE_ID, "--departements", DEPARTEMENTS, "--date", SEND_DATE.isoformat(), "--approve"],
            lambda s: f"{number((s.get('counts') or {}).get('recipients', {}).get('total', 0))} messages"
            f" over départements {DEPARTEMENTS}",
        )
        # The daily DAGs day by day: the messages go out on the send date and the windows start.
        step(
            f"days to {DECISIONS_DATE}",
            ["advance", "--to", DECISIONS_DATE.isoformat()],
            lambda s: f"{len(s['runs'])} DAG runs",
        )
        decisions = folder / "decisions.csv"
        write_synthetic_decisions(get_engine(), decisions, seed)
        step(
            "decisions loaded",
            ["load", "decisions", str(decisions), "--date", DECISIONS_DATE.isoformat()],
            lambda s: ", ".join(f"{number(count)} {outcome}" for outcome, count in s.get("outcomes", {}).items()),
        )
        # On to the first day after the deadline: spaces are created, then their DMPs carried over.
        step(
            f"days to {CREATION_DATE}",
            ["advance", "--to", CREATION_DATE.isoformat()],
            lambda s: f"{len(s['runs'])} DAG runs",
        )
        with get_engine().connect() as connection:
            status = pipeline_status(connection)
            path = funnel(connection, WAVE_ID)
        report = _latest_report(settings.reports_dir)
        log_file = current_log_file()
        return {
            "persons": persons,
            "seconds": round(time.monotonic() - began, 1),
            "folder": str(folder),
            "database": settings.database_url,
            "synthetic_extract": str(extract),
            "emails_kept_in": str(settings.outbox_dir),
            "letters_printed_in": str(settings.print_dir),
            "reports_in": str(settings.reports_dir),
            "report": str(report) if report else None,
            "data_docs": str(report.parent / "data_docs" / "index.html") if report else None,
            "log_file": str(log_file) if log_file else None,
            "airflow_logs": str(airflow_home / "logs" / "mes-rollout"),
            "airflow": f"AIRFLOW_HOME={airflow_home} MES_VAR_DIR={folder} mes-rollout airflow up\n"
            f"  login admin; the command prints the password (kept in {airflow_home / 'stack' / 'passwords.json'})",
            "funnel": {"register_rows": synth["register_rows"], **path},
            "status": status,
        }
