"""`make demo`: the whole lifecycle end to end on the embedded default (SQLite, loopback SMTP).

Synthetic people → register intake → DMP extract → a wave over two départements, approved →
emails and letters sent → people answer (a synthetic decisions file) → the window closes →
spaces created → DMP documents carried over with their compliance report. Every step goes
through the same commands an operator uses.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from mes_rollout.config import load_settings
from mes_rollout.constants import EnrolmentState

log = logging.getLogger(__name__)

WAVE_ID = "DEMO-2022-01-31"
DEPARTEMENTS = "01,02"
SEND_DATE = dt.date(2022, 1, 31)
DECISIONS_DATE = dt.date(2022, 2, 15)
CREATION_DATE = dt.date(2022, 3, 1)  # the first creation run after the 28 February deadline


def _step(run_command: Callable[[list[str]], int], argv: list[str]) -> None:
    log.info("demo step: mes-rollout %s", " ".join(argv))
    if run_command([*argv, "--json"]) != 0:
        raise RuntimeError(f"demo step failed: mes-rollout {' '.join(argv)}")


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


def run_demo(persons: int, seed: int, run_command: Callable[[list[str]], int]) -> dict[str, Any]:
    """`run_command` is the command line's `main` (handed in: the demo sits below the command line)."""
    from console.status import pipeline_status
    from mes_rollout.db import get_engine

    os.environ.setdefault("MES_HOLDBACK_THRESHOLD", DEMO_HOLDBACK_THRESHOLD)
    settings = load_settings()
    demo_dir = settings.var_dir / "demo"
    extract = demo_dir / f"extract-{persons}-{seed}"
    _step(run_command, ["synth", "--persons", str(persons), "--seed", str(seed), "--out", str(extract), "--dirty", "0.01"])
    _step(run_command, ["load", "register", str(extract / "register.csv"), "--date", "2022-01-28"])
    _step(run_command, ["load", "dmp", str(extract / "dmp")])
    _step(run_command, ["wave", "run", WAVE_ID, "--departements", DEPARTEMENTS, "--date", SEND_DATE.isoformat(), "--approve"])
    # The daily DAGs day by day: the messages go out on the send date and the windows start.
    _step(run_command, ["advance", "--to", DECISIONS_DATE.isoformat()])
    decisions = demo_dir / "decisions.csv"
    write_synthetic_decisions(get_engine(), decisions, seed)
    _step(run_command, ["load", "decisions", str(decisions), "--date", DECISIONS_DATE.isoformat()])
    # On to the first day after the deadline: spaces are created, then their DMPs carried over.
    _step(run_command, ["advance", "--to", CREATION_DATE.isoformat()])
    with get_engine().connect() as connection:
        status = pipeline_status(connection)
    return {
        "database": settings.database_url,
        "synthetic_extract": str(extract),
        "emails_kept_in": str(settings.outbox_dir),
        "letters_printed_in": str(settings.print_dir),
        "reports_in": str(settings.reports_dir),
        "status": status,
    }
