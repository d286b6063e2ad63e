"""Subcommands of notifications: `load feedback FILE --date`, `send --date`, `bench-emails`, `bench-letters`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from console.commands import Commands, add_date_option, iso_date


def _load_feedback(args: argparse.Namespace) -> dict[str, Any]:
    from mes_rollout.config import load_settings
    from mes_rollout.db import get_engine
    from notifications.feedback import load_feedback

    return load_feedback(get_engine(), args.file, window=load_settings().opt_out_window, as_of=args.date).as_dict()


def _send(args: argparse.Namespace) -> dict[str, Any]:
    from console import progress
    from console.dagrun import ensure_airflow_home, run_dag
    from console.status import send_report
    from mes_rollout.db import get_engine

    ensure_airflow_home()
    from notifications.tasks import ensure_smtp_pool

    ensure_smtp_pool()
    with progress.tracking(progress.sending(args.date), "send: "):
        result = run_dag("notification_sending", args.date, raise_on_failure=False)
    with get_engine().connect() as connection:
        report = send_report(connection, result.run_id, result.xcom_returns)
    return {
        "dag_run": result.run_id,
        "date": args.date.isoformat(),
        "state": result.state,
        "tasks": result.task_states,
        "report": report,
        **result.xcom_returns,
    }


def _bench_emails(args: argparse.Namespace) -> dict[str, Any]:
    from console.bench_sending import bench_emails

    return bench_emails(args.count, args.small_count, args.baseline_count, args.connections)


def _bench_letters(args: argparse.Namespace) -> dict[str, Any]:
    from console.bench_sending import bench_letters

    return bench_letters(args.count, args.small_count)


def add_commands(commands: Commands) -> None:
    feedback = commands.add(commands.load, "feedback", _load_feedback, "load a delivery feedback file (feedback.csv)")
    feedback.add_argument("file", type=Path)
    add_date_option(feedback, "logical date of the load")
    send = commands.add(
        commands.top, "send", _send, "run notification_sending for a date: send due emails, print and post letters",
        epilog="examples:\n  mes-rollout send --date 2022-01-31\n  mes-rollout send --date 2022-01-31 --json"
        "\n\nprints emails sent, bounced, deferred, letters printed; the run's log file is under"
        "\n$AIRFLOW_HOME/logs/mes-rollout/notification_sending/",
    )
    send.add_argument(
        "--date", type=iso_date, required=True, metavar="YYYY-MM-DD", help="logical date of the run (the send date)"
    )
    emails = commands.add(
        commands.top, "bench-emails", _bench_emails,
        "emails/s end to end vs a bare aiosmtplib sender vs Airflow's one-connection-per-email sending",
    )
    emails.add_argument("--count", type=int, default=100_000)
    emails.add_argument("--small-count", type=int, default=20_000, help="second volume, for the memory comparison")
    emails.add_argument("--baseline-count", type=int, default=5_000, help="emails sent by the Airflow baseline")
    emails.add_argument(
        "--connections", type=int, default=16, help="SMTP connections, the same for every sender measured"
    )
    letters = commands.add(commands.top, "bench-letters", _bench_letters, "letters/s into print files, and memory")
    letters.add_argument("--count", type=int, default=20_000)
    letters.add_argument("--small-count", type=int, default=5_000, help="second volume, for the memory comparison")
