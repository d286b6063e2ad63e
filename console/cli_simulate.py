"""Subcommand `simulate`: the whole rollout calendar on synthetic people, timed per stage, projected to 68 million.

Also runnable alone: `python -m console.cli_simulate --persons 20000`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from console.commands import Commands


def _simulate(args: argparse.Namespace) -> dict[str, Any]:
    from console.simulate import run_simulation

    report = run_simulation(
        args.persons, args.seed, database_url=args.database_url, keep_database=args.keep_database
    )
    return summary_of(report)


def summary_of(report: dict[str, Any]) -> dict[str, Any]:
    """What the command prints: the stages' throughputs, the reconciliation's key figures, the projection."""
    reconciliation = report["reconciliation"]
    projections = report["projection"]
    return {
        "run_id": report["run_id"],
        "persons": report["persons"],
        "database": report["database"],
        "seconds_total": report["seconds_total"],
        "load_average": report["load_average"],
        "stages": {
            stage: f"{values['items']} {values['unit']} in {values['seconds']} s: {values['per_second']}/s"
            for stage, values in report["stages"].items()
        },
        "dag_runs": sum(report["dag_runs"].values()),
        "failures": len(report["failures"]),
        "told": reconciliation["told"],
        "opposition_rate": reconciliation["opposition_rate"],
        "spaces_active": reconciliation["spaces"]["active"],
        "dmp_documents": {k: reconciliation["dmp_documents"][k] for k in ("source", "migrated", "held_back", "skipped")},
        "projection_68M": {
            name: {
                "machine_hours": figures["machine_hours"],
                "dominant_stage": figures["dominant_stage"],
                "goal_met": figures["goal_met"],
                "sending_day_workers": figures["sending_day"]["workers_for_8_hours"],
                "busiest_day_workers": figures["busiest_day"]["workers_for_8_hours"],
            }
            for name, figures in (
                ("from_simulation", projections["from_simulation"]),
                ("with_benchmarks", projections["with_benchmarks"]),
            )
            if figures and "error" not in figures
        },
        "report": report["folders"]["report"],
    }


def _arguments(parser: argparse.ArgumentParser) -> None:
    from console.simulate import DEFAULT_PERSONS

    parser.add_argument("--persons", type=int, default=DEFAULT_PERSONS, help=f"synthetic people (default {DEFAULT_PERSONS})")
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server where a new database is made for the run (default: MES_DATABASE_URL"
        " if it is PostgreSQL, else a new SQLite file in the run's folder)",
    )
    parser.add_argument("--keep-database", action="store_true", help="keep the run's PostgreSQL database")


def add_commands(commands: Commands) -> None:
    simulate = commands.add(
        commands.top, "simulate", _simulate, "replay the rollout calendar on synthetic people; per-stage throughput"
    )
    _arguments(simulate)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m console.cli_simulate", description=__doc__.splitlines()[0])
    _arguments(parser)
    args = parser.parse_args(argv)
    # Airflow's task logs write to standard output during the runs: keep it for the summary alone.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        summary = _simulate(args)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
