"""`mes-rollout`: the one command line of operators and data engineers.

Every subcommand has --help and --json (a machine-readable summary on stdout). Packages add their
own subcommands through an `add_commands(commands)` function, so this file stays the wiring.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mes_rollout.config import ConfigError, load_settings
from mes_rollout.csvfile import InputFileError
from mes_rollout.dagrun import DagRunFailed

Handler = Callable[[argparse.Namespace], dict[str, Any]]

# Packages whose cli module contributes subcommands (each has `add_commands(Commands)`).
COMMAND_MODULES = ("enrolment.cli", "notifications.cli", "migration.cli", "validation.cli", "mes_rollout.bench")


@dataclass
class Commands:
    """Where packages hang their subcommands: at the top level, or under `load`."""

    top: argparse._SubParsersAction
    load: argparse._SubParsersAction
    common: argparse.ArgumentParser  # parent parser giving every command --json

    def add(self, where: argparse._SubParsersAction, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = where.add_parser(name, help=help, description=help, parents=[self.common])
        parser.set_defaults(handler=handler)
        return parser


def iso_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


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
    from mes_rollout.db import get_engine
    from mes_rollout.status import pipeline_status

    with get_engine().connect() as connection:
        return pipeline_status(connection)


def _synth(args: argparse.Namespace) -> dict[str, Any]:
    from mes_rollout.synth import generate

    summary = generate(args.persons, args.seed, args.out, dirty=args.dirty, with_dmp=not args.no_dmp)
    return summary.as_dict()


def _demo(args: argparse.Namespace) -> dict[str, Any]:
    from mes_rollout.demo import run_demo

    return run_demo(persons=args.persons, seed=args.seed)


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
    register.add_argument(
        "--date", type=iso_date, default=dt.date.today(), help="logical date of the load (default: today)"
    )
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

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        add_commands = getattr(module, "add_commands", None)
        if add_commands is not None:
            add_commands(commands)
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
    args = parser.parse_args(argv)
    try:
        with _stdout_kept_for_json(args.json):
            summary = args.handler(args)
    except (InputFileError, ConfigError) as error:
        print(f"mes-rollout: {error}", file=sys.stderr)
        return 2
    except DagRunFailed as error:
        print(f"mes-rollout: {error} (see the task logs under $AIRFLOW_HOME/logs)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        _print_human(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
