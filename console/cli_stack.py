"""`mes-rollout airflow up | down | status`: the production stack of Airflow on this machine."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from console.commands import Commands
from console.stack import (
    DEFAULT_PORT,
    DEFAULT_REDIS_URL,
    METADATA_DATABASE,
    plan_stack,
    stack_status,
    start_stack,
    stop_stack,
)
from mes_rollout.config import load_settings


def stack_home(args: argparse.Namespace) -> Path:
    """The Airflow home of the stack: --home, else $AIRFLOW_HOME, else var/airflow."""
    if getattr(args, "home", None):
        return Path(args.home)
    return Path(os.environ.get("AIRFLOW_HOME") or load_settings().var_dir / "airflow")


def _up(args: argparse.Namespace) -> dict[str, Any]:
    plan = plan_stack(
        load_settings(),
        home=stack_home(args),
        workers=args.workers,
        celery=args.celery,
        port=args.port,
        redis_url=args.redis_url,
        metadata_database=args.metadata_database,
        worker_concurrency=args.concurrency,
        smtp_slots=args.smtp_slots,
        task_heartbeat_timeout=args.task_heartbeat_timeout,
        max_task_retry_delay=args.max_retry_delay,
    )
    return start_stack(plan)


def _down(args: argparse.Namespace) -> dict[str, Any]:
    return stop_stack(stack_home(args))


def _status(args: argparse.Namespace) -> dict[str, Any]:
    return stack_status(stack_home(args))


def add_commands(commands: Commands) -> None:
    airflow = commands.top.add_parser(
        "airflow", help="the Airflow stack (api-server, scheduler, workers)", description=__doc__
    )
    actions = airflow.add_subparsers(dest="airflow_command", required=True, metavar="ACTION")
    up = commands.add(
        actions, "up", _up,
        "start Airflow as production runs it: CeleryExecutor + Redis + PostgreSQL when MES_DATABASE_URL is"
        " PostgreSQL, else LocalExecutor + SQLite; prints the URL, the login and where the logs are",
    )  # fmt: skip
    up.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    up.add_argument("--concurrency", type=int, default=2, help="tasks at once per worker (default 2)")
    up.add_argument("--celery", action="store_true", help="require the CeleryExecutor (needs PostgreSQL)")
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"api-server port on 127.0.0.1 (default {DEFAULT_PORT})")
    up.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"Celery broker (default {DEFAULT_REDIS_URL})")
    up.add_argument(
        "--metadata-database", default=METADATA_DATABASE,
        help=f"Airflow's own database, beside the pipeline's on the same server (default {METADATA_DATABASE})",
    )  # fmt: skip
    up.add_argument("--smtp-slots", type=int, default=2, help="slots of the smtp_relay pool (default 2)")
    up.add_argument(
        "--task-heartbeat-timeout", type=int, metavar="SECONDS",
        help="a running task silent this long is declared dead and retried, as when its worker died"
        " (default: Airflow's, 300); keep MES_SEND_LEASE below it plus the retry delay",
    )  # fmt: skip
    up.add_argument(
        "--max-retry-delay", type=int, metavar="SECONDS",
        help="the longest wait before a task's retry, over its own backoff (default: the tasks' own, 1 to 10 min)",
    )  # fmt: skip
    down = commands.add(actions, "down", _down, "stop every process of the stack (also after a crash)")
    status = commands.add(actions, "status", _status, "which processes of the stack run, and where")
    for parser in (up, down, status):
        parser.add_argument("--home", help="the Airflow home (default: $AIRFLOW_HOME, else var/airflow)")


def main(argv: list[str] | None = None) -> int:
    """`python -m console.cli_stack up|down|status ...` until console/cli.py wires the commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    parser = argparse.ArgumentParser(prog="mes-rollout")
    top = parser.add_subparsers(dest="command", required=True)
    load = top.add_parser("load").add_subparsers()
    add_commands(Commands(top, load, common))
    args = parser.parse_args(["airflow", *(sys.argv[1:] if argv is None else argv)])
    print(json.dumps(args.handler(args), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
