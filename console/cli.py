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

from console import (
    bench_flow,
    bench_intake,
    cli_enrolment,
    cli_migration,
    cli_notifications,
    cli_notifications_lookup,
    cli_report,
    cli_simulate,
    cli_stack,
    cli_verify,
    logfile,
    progress,
)
from console.commands import CommandFailed, Commands, resolve_defaults
from console.dagrun import DagRunFailed
from mes_rollout import logsafe
from mes_rollout.config import ConfigError, load_settings
from mes_rollout.csvfile import InputFileError
from mes_rollout.files import private_umask

log = logging.getLogger("console.cli")

# Each contributes its subcommands through `add_commands(Commands)`.
COMMAND_MODULES = (
    cli_enrolment,
    cli_notifications,
    cli_notifications_lookup,
    cli_migration,
    cli_verify,
    cli_report,
    cli_stack,
    cli_simulate,
    bench_intake,
    bench_flow,
)


def _db_upgrade(_args: argparse.Namespace) -> dict[str, Any]:
    from mes_rollout.db import make_engine, upgrade

    settings = load_settings()
    engine = make_engine(settings.database_url)
    applied = upgrade(engine)
    return {"database": engine.url.render_as_string(hide_password=True), "applied_versions": applied}


def _status(_args: argparse.Namespace) -> dict[str, Any]:
    from console.status import pipeline_status
    from mes_rollout.db import get_engine

    with get_engine().connect() as connection:
        return pipeline_status(connection)


def _synth(args: argparse.Namespace) -> dict[str, Any]:
    from console.synth import generate

    summary = generate(args.persons, args.seed, args.out, dirty=args.dirty, with_dmp=not args.no_dmp)
    return summary.as_dict()


def run_quietly(argv: list[str]) -> dict[str, Any]:
    """Run one subcommand in this process and return its summary, printing nothing (the demo's
    steps). Its failure is raised: SystemExit for a usage error, the command's own error else."""
    args = resolve_defaults(build_parser().parse_args(argv))
    try:
        summary: dict[str, Any] = args.handler(args)
    except CommandFailed as error:
        raise CommandFailed(f"mes-rollout {' '.join(argv)}: {error}", {}) from None
    return summary


def _demo(args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console

    from console.demo import run_demo

    terminal = Console(highlight=False)

    def say(line: str) -> None:
        log.info("demo: %s", line)
        if not args.json:
            terminal.print(f"[green]✓[/green] {line}")

    return run_demo(persons=args.persons, seed=args.seed, run_command=run_quietly, say=say)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    parser = argparse.ArgumentParser(
        prog="mes-rollout",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    db = top.add_parser("db", help="database schema", description="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    load = top.add_parser("load", help="load an input file", description="load an input file (INPUTS.md)")
    load_commands = load.add_subparsers(dest="load_command", required=True, metavar="KIND")
    commands = Commands(top, load_commands, common)

    commands.add(db_commands, "upgrade", _db_upgrade, "create or upgrade the schema (safe to repeat)")
    commands.add(top, "status", _status, "counts of persons, enrolments, notifications, spaces, documents")
    synth = commands.add(top, "synth", _synth, "write a synthetic register and DMP extract")
    synth.add_argument("--persons", type=int, required=True)
    synth.add_argument("--seed", type=int, default=1)
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--dirty", type=float, default=0.0, help="share of rows given a realistic fault (0-1)")
    synth.add_argument("--no-dmp", action="store_true", help="write the register only")
    demo = commands.add(
        top, "demo", _demo, "run the whole lifecycle on the embedded default, in a new folder var/demo-<moment>",
        epilog="examples:\n  mes-rollout demo\n  mes-rollout demo --persons 1500 --seed 7\n\n"
        "Each demo has its own database, outbox, print files and reports; rm -rf var/demo-* removes them.",
    )
    demo.add_argument("--persons", type=int, default=10_000)
    demo.add_argument("--seed", type=int, default=2022)

    for module in COMMAND_MODULES:
        module.add_commands(commands)
    parser.epilog = _epilog(commands.benchmarks)
    return parser


EXAMPLES = """\
dates are YYYY-MM-DD (a --date left out is today in Paris); départements are comma-separated
codes (01,02,2A,971); add --json to any command for a machine-readable summary on stdout.

examples:
  mes-rollout demo                                   the whole lifecycle on 10 000 synthetic people
  mes-rollout load register extract.csv --date 2022-01-28
  mes-rollout wave run W1 --departements 01,02 --date 2022-01-31 --dry-run
  mes-rollout wave run W1 --departements 01,02 --date 2022-01-31 --approve --comment "checked"
  mes-rollout wave list
  mes-rollout send --date 2022-01-31
  mes-rollout advance --to 2022-03-01
  mes-rollout status --json

logs: every command writes its log to $MES_VAR_DIR/logs/mes-rollout-<day>.log (var/logs by
default), each in-process DAG run to $AIRFLOW_HOME/logs/mes-rollout/<dag>/; the terminal shows
the result, the warnings that matter and the errors."""


def _epilog(benchmarks: list[tuple[str, str]]) -> str:
    lines = [EXAMPLES]
    if benchmarks:
        width = max(len(name) for name, _ in benchmarks)
        lines += ["", "benchmarks (BENCHMARKS.md; each has --help):"]
        lines += [f"  {name.ljust(width)}  {help}" for name, help in sorted(benchmarks)]
    return "\n".join(lines)


def command_name(args: argparse.Namespace) -> str:
    """The subcommand as typed: "status", "wave show", "load register", "bench-emails"..."""
    parts = [args.command]
    for level in ("db_command", "load_command", "wave_command", "airflow_command", "notification_command"):
        if getattr(args, level, None):
            parts.append(getattr(args, level))
    return " ".join(parts)


def _print_human(command: str, summary: dict[str, Any]) -> None:
    from console.render import print_summary

    print_summary(command, summary)


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
    parser = build_parser()
    args = resolve_defaults(parser.parse_args(argv))
    try:
        settings = load_settings()
        logfile.install(settings)
    except ConfigError as error:
        print(f"mes-rollout: {error}", file=sys.stderr)
        return 2
    # Files at rest are owner-only (MES_FILE_MODE), libraries' working files and the processes
    # this command starts (the Airflow stack) included.
    previous_umask = private_umask(settings.dir_mode)
    try:
        return _run(args, command_name(args))
    finally:
        os.umask(previous_umask)


def _run(args: argparse.Namespace, command: str) -> int:
    progress.enable(sys.stdout.isatty() and not args.json)
    log.info("mes-rollout %s", command)
    try:
        with _stdout_kept_for_json(args.json):
            summary = args.handler(args)
    except (InputFileError, ConfigError) as error:
        _report_failure(command, error)
        return 2
    except DagRunFailed as error:
        _report_failure(command, error)
        return 1
    except CommandFailed as error:
        _print_summary(command, error.summary, as_json=args.json)
        _report_failure(command, error)
        return 1
    _print_summary(command, summary, as_json=args.json)
    return 0


def _report_failure(command: str, error: Exception) -> None:
    """On the terminal, and in the log file (at INFO: the terminal has it already)."""
    log.info("mes-rollout %s failed: %s", command, error)
    print(f"mes-rollout: {logsafe.mask_text(str(error))}", file=sys.stderr)


def _print_summary(command: str, summary: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        _print_human(command, summary)


if __name__ == "__main__":
    sys.exit(main())
