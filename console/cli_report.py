"""`mes-rollout report --out DIR`: the Rollout and Wave pages as static files for the compliance archive."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from console.commands import Commands


def write(out: str | Path) -> dict[str, Any]:
    """The pages the Airflow plugin serves, written under `out` (index.html first), from the summary."""
    from console.rollout_pages import write_report
    from mes_rollout.config import load_settings
    from mes_rollout.db import get_engine

    with get_engine().connect() as connection:
        return write_report(connection, load_settings(), Path(out))


def _report(args: argparse.Namespace) -> dict[str, Any]:
    return write(args.out)


def add_commands(commands: Commands) -> None:
    report = commands.add(
        commands.top, "report", _report, "write the Rollout and Wave pages as static files (compliance archive)"
    )
    report.add_argument("--out", type=Path, required=True, help="folder to write (created if missing)")
