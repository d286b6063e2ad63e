"""`mes-rollout`: the one command line of operators and data engineers.

Every subcommand has --help and --json (a machine-readable summary on stdout). The command modules
of the console (`cli_enrolment`, `cli_notifications`, `cli_migration`, the benchmarks) each hang
their subcommands through `add_commands(commands)`; they are imported here by name, so that an
import error is an error, and this file stays the wiring.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from console import bench_intake, cli_enrolment, cli_migration, cli_notifications
from console.commands import CommandFailed, Commands, add_date_option, resolve_defaults
from console.dagrun import DagRunFailed
from mes_rollout.config import ConfigError, load_settings
from mes_rollout.csvfile import InputFileError

# Each contributes its subcommands through `add_commands(Commands)`.
COMMAND_MODULES = (cli_enrolment, cli_notifications, cli_migration, bench_intake)


def _db_upgrade(_args: argparse.Namespace) -> dict[str, Any]:
    from mes_rollout.db import make_engine, upgrade

    settings = load_settings()
    engine = make_engine(settings.database_url)
    applied = upgrade(engine)
    return {"database": engine.url.render_as_string(hide_password=True), "applied_versions": applied}


def _load_register(args: argparse.Namespace) -> dict[str, Any]:
    from enrolment.register import load_register
    from mes_rollout.db import get_engine

    summary = load_register(get_engine(), args.file, as_of=args.date)
    return summary.as_dict()


def _status(_args: argparse.Namespace) -> dict[str, Any]:
    from console.status import pipeline_status
    from mes_rollout.db import get_engine

    with get_engine().connect() as connection:
        return pipeline_status(connection)


def _synth(args: argparse.Namespace) -> dict[str, Any]:
    from console.synth import generate

    summary = generate(args.persons, args.seed, args.out, dirty=args.dirty, with_dmp=not args.no_dmp)
    return summary.as_dict()


def _demo(args: argparse.Namespace) -> dict[str, Any]:
    from console.demo import run_demo

    return run_demo(persons=args.persons, seed=args.seed, run_command=main)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    parser = argparse.ArgumentParser(prog="mes-rollout", description=__doc__.splitlines()[0] if __doc__ else None)
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    db = top.add_parser("db", help="database schema", description="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    load = top.add_parser("load", help="load an input file", description="load an input file (INPUTS.md)")
    load_commands = load.add_subparsers(dest="load_command", required=True, metavar="KIND")
    commands = Commands(top, load_commands, common)

    commands.add(db_commands, "upgrade", _db_upgrade, "create or upgrade the schema (safe to repeat)")
    register = commands.add(load_commands, "register", _load_register, "load a register extract (upsert by NIR)")
    register.add_argument("file", type=Path)
    add_date_option(register, "logical date of the load")
    commands.add(top, "status", _status, "counts of persons, enrolments, notifications, spaces, documents")
    synth = commands.add(top, "synth", _synth, "write a synthetic register and DMP extract")
    synth.add_argument("--persons", type=int, required=True)
    synth.add_argument("--seed", type=int, default=1)
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--dirty", type=float, default=0.0, help="share of rows given a realistic fault (0-1)")
    synth.add_argument("--no-dmp", action="store_true", help="write the register only")
    demo = commands.add(top, "demo", _demo, "run the whole lifecycle on the embedded default")
    demo.add_argument("--persons", type=int, default=10_000)
    demo.add_argument("--seed", type=int, default=2022)

    for module in COMMAND_MODULES:
        module.add_commands(commands)
    return parser


def _print_human(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.pretty import Pretty

    Console(stderr=False).print(Pretty(summary, expand_all=True))


@contextlib.contextmanager
def _stdout_kept_for_json(json_wanted: bool) -> Iterator[None]:
    """With --json, stdout carries the JSON summary only: whatever the command's libraries print
    meanwhile (Airflow's task logs during an in-process DAG run write to stdout) goes to stderr,
    file descriptor included."""
    if not json_wanted:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = build_parser()
    args = resolve_defaults(parser.parse_args(argv))
    try:
        with _stdout_kept_for_json(args.json):
            summary = args.handler(args)
    except (InputFileError, ConfigError) as error:
        print(f"mes-rollout: {error}", file=sys.stderr)
        return 2
    except DagRunFailed as error:
        print(f"mes-rollout: {error}", file=sys.stderr)
        return 1
    except CommandFailed as error:
        _print_summary(error.summary, as_json=args.json)
        print(f"mes-rollout: {error}", file=sys.stderr)
        return 1
    _print_summary(summary, as_json=args.json)
    return 0


def _print_summary(summary: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        _print_human(summary)


if __name__ == "__main__":
    sys.exit(main())
