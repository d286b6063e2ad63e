"""What every subcommand module of the console shares: where to hang a command, and date options."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mes_rollout.runday import today

Handler = Callable[[argparse.Namespace], dict[str, Any]]


@dataclass
class Commands:
    """Where command modules hang their subcommands: at the top level, or under `load`."""

    top: argparse._SubParsersAction
    load: argparse._SubParsersAction
    common: argparse.ArgumentParser  # parent parser giving every command --json
    # The benchmarks (`bench-NAME` at the top level): listed apart from the operators' commands
    # in `mes-rollout --help`, as (name, help).
    benchmarks: list[tuple[str, str]] = field(default_factory=list)

    def add(
        self, where: argparse._SubParsersAction, name: str, handler: Handler, help: str, *, epilog: str | None = None
    ) -> argparse.ArgumentParser:
        """Hang a command; `epilog`: examples shown at the end of its --help, as written."""
        options: dict[str, Any] = {"description": help, "parents": [self.common]}
        if epilog:
            options.update(epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        if where is self.top and name.startswith("bench-"):
            self.benchmarks.append((name, help))  # no help= here: argparse leaves it out of the list
        else:
            options["help"] = help
        parser: argparse.ArgumentParser = where.add_parser(name, **options)
        parser.set_defaults(handler=handler)
        return parser


def iso_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


class _Today:
    """The default of a `--date` option: the day the command runs, in Paris, taken when it runs
    (not when the parser is built)."""

    def __repr__(self) -> str:
        return "today"


TODAY: Any = _Today()


def add_date_option(parser: argparse.ArgumentParser, help: str) -> None:
    """A `--date YYYY-MM-DD` option that defaults to the day the command runs."""
    parser.add_argument(
        "--date", type=iso_date, default=TODAY, metavar="YYYY-MM-DD", help=f"{help} (default: today in Paris)"
    )


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options whose default depends on the moment the command runs."""
    if getattr(args, "date", None) is TODAY:
        args.date = today()
    return args


class CommandFailed(RuntimeError):
    """A command that did part of its work and failed the rest: `summary` is printed all the same,
    then the message, and the command exits 1."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary
