"""Run a small rollout through the real commands (and so the real DAGs, in-process), for the UI tests.

`python -m tests.ui.populate` with MES_VAR_DIR set: synthetic register and DMP extract, a dry run,
an approved wave over two départements, the daily DAGs day by day (emails, letters, feedback),
a decisions file, then space creation and the DMP migration with its report. Prints the status
as JSON on its last line. Each step's exit code is checked: a failed step stops the script.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

WAVE_ID = "UI-2022-01-31"
DRY_RUN_WAVE_ID = "UI-ESSAI"
DEPARTEMENTS = "01,02"
SEND_DATE = dt.date(2022, 1, 31)
DECISIONS_DATE = dt.date(2022, 2, 15)
CREATION_DATE = dt.date(2022, 3, 1)


def main(persons: int = 300, seed: int = 7) -> int:
    os.environ.setdefault("MES_HOLDBACK_THRESHOLD", "0.05")
    from console.cli import main as command
    from console.status import pipeline_status
    from mes_rollout.config import load_settings
    from mes_rollout.db import get_engine

    var = load_settings().var_dir
    extract = var / "ui-extract"

    def step(*argv: str) -> None:
        code = command([*argv, "--json"])
        if code:
            raise SystemExit(f"step failed ({code}): mes-rollout {' '.join(argv)}")

    step("synth", "--persons", str(persons), "--seed", str(seed), "--out", str(extract), "--dirty", "0.01")
    step("load", "register", str(extract / "register.csv"), "--date", "2022-01-28")
    step("load", "dmp", str(extract / "dmp"))
    step("wave", "run", DRY_RUN_WAVE_ID, "--departements", "03", "--date", SEND_DATE.isoformat(), "--dry-run")
    step("wave", "run", WAVE_ID, "--departements", DEPARTEMENTS, "--date", SEND_DATE.isoformat(), "--approve",
         "--comment", "vague de test <b>approuvée</b>")  # fmt: skip
    step("advance", "--to", DECISIONS_DATE.isoformat())
    decisions = Path(var / "ui-decisions.csv")
    write_decisions(get_engine(), decisions)
    step("load", "decisions", str(decisions), "--date", DECISIONS_DATE.isoformat())
    step("advance", "--to", CREATION_DATE.isoformat())
    with get_engine().connect() as connection:
        print(json.dumps(pipeline_status(connection), default=str))
    return 0


def write_decisions(engine: Any, path: Path) -> int:
    """A decisions.csv for the wave's notified people: every 10th opposes, every 7th activates."""
    with engine.connect() as connection:
        nirs = connection.execute(
            text("SELECT nir FROM enrolments WHERE wave_id = :wave AND state = 'notified' ORDER BY nir"),
            {"wave": WAVE_ID},
        ).scalars().all()
    paris = dt.timezone(dt.timedelta(hours=1))
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter=";")
        writer.writerow(["reference", "nir", "event", "received_at", "channel"])
        rows = 0
        for index, nir in enumerate(nirs):
            event = "opposition" if index % 10 == 0 else "activation" if index % 7 == 0 else None
            if event:
                received = dt.datetime(2022, 2, 1 + index % 14, 10, 0, tzinfo=paris)
                writer.writerow([f"UI-{index:05d}", nir, event, received.isoformat(), "web"])
                rows += 1
    return rows


if __name__ == "__main__":
    sys.exit(main(*(int(arg) for arg in sys.argv[1:])))
