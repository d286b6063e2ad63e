"""`mes-rollout verify`: every evidence file the database recorded (reports, Data Docs, print
batches) checked on disk against its SHA-256; what is missing or altered is listed, exit 1."""

from __future__ import annotations

import argparse
from typing import Any

from console.commands import CommandFailed, Commands


def _verify(args: argparse.Namespace) -> dict[str, Any]:
    from mes_rollout import evidence
    from mes_rollout.db import get_engine

    engine = get_engine()
    with engine.begin() as connection:
        result = evidence.verify(connection, run_ids=args.run or None)
        rollout = evidence.rollout_id(connection)
    summary = {"rollout_id": rollout, **result.as_dict()}
    if not result.ok:
        raise CommandFailed(
            f"{len(result.missing)} evidence file(s) missing, {len(result.altered)} altered since they were written",
            summary,
        )
    return summary


def add_commands(commands: Commands) -> None:
    verify = commands.add(
        commands.top, "verify", _verify,
        "check every recorded report, Data Docs page and print batch against its SHA-256 (exit 1 if any is missing or altered)",
    )  # fmt: skip
    verify.add_argument("--run", action="append", metavar="RUN_ID", help="only the files of this run (repeatable)")
