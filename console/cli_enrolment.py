"""The enrolment subcommands: `load register`, `wave run|approve|reject|show`, `advance`, `load decisions`,
`bench-wave-planning`. Each runs the DAGs in-process (`dag.test()`), but `load register`, which
calls the intake itself to show its progress: one path through the code."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from console.commands import Commands, add_date_option, iso_date


def _load_register(args: argparse.Namespace) -> dict[str, Any]:
    from console import progress
    from enrolment.register import load_register
    from mes_rollout.db import get_engine

    extracted_on = args.extracted_on or args.date
    if extracted_on > args.date:
        raise SystemExit(
            f"mes-rollout: --extracted-on {extracted_on.isoformat()} is after the day of the load {args.date.isoformat()}"
        )
    engine = get_engine()
    with progress.tracking(lambda _connection: progress.file_rows(args.file), "register: "):
        summary = load_register(engine, args.file, as_of=args.date, extracted_on=extracted_on)
    return summary.as_dict()


def _departements(text: str) -> list[str]:
    return [code.strip() for code in text.split(",") if code.strip()]


def _wave_run(args: argparse.Namespace) -> dict[str, Any]:
    from console.approval import APPROVE, REJECT, run_wave, wave_outcome
    from enrolment.waves import WaveRequest, WaveRequestError, load_wave
    from mes_rollout.constants import WaveState
    from mes_rollout.db import get_engine

    try:
        request = WaveRequest.from_params(
            {
                "wave_id": args.wave_id,
                "departements": args.departements,
                "send_date": args.date.isoformat(),
                "recipient_cap": args.cap,
                "dry_run": args.dry_run,
            },
            args.date,
        )
    except WaveRequestError as error:
        raise SystemExit(f"mes-rollout: {error}") from None
    with get_engine().connect() as connection:
        existing = load_wave(connection, request.wave_id)
    if existing is not None and existing.state != WaveState.DRY_RUN:
        same = (existing.departements, existing.send_date, existing.recipient_cap) == (
            request.departements, request.send_date, request.recipient_cap,
        )  # fmt: skip
        if request.dry_run or not same:
            raise SystemExit(
                f"mes-rollout: wave {request.wave_id} is already {existing.state}"
                + (" (a dry run comes before the wave)" if request.dry_run else " with other parameters")
            )
    from console import progress

    decision = APPROVE if args.approve else REJECT if args.reject else None
    with progress.tracking(progress.planning(request.wave_id), f"wave {request.wave_id}: "):
        result = run_wave(request, args.date, decision=decision, comment=args.comment)
    return wave_outcome(result)


def _wave_answer(option: str) -> Any:
    def handler(args: argparse.Namespace) -> dict[str, Any]:
        from console.approval import answer

        answered = answer(args.wave_id, option, comment=args.comment)
        if not answered:
            raise SystemExit(f"mes-rollout: no approval of wave {args.wave_id} is waiting for an answer")
        return {"wave_id": args.wave_id, "answer": option}

    return handler


def _wave_show(args: argparse.Namespace) -> dict[str, Any]:
    from enrolment.waves import load_wave
    from mes_rollout.db import get_engine

    with get_engine().connect() as connection:
        wave = load_wave(connection, args.wave_id)
    if wave is None:
        raise SystemExit(f"mes-rollout: no wave {args.wave_id}")
    return {"wave_id": wave.wave_id, "state": wave.state.value, "decided_by": wave.decided_by, "counts": wave.counts}


def _wave_list(_args: argparse.Namespace) -> dict[str, Any]:
    from console.status import wave_list
    from mes_rollout.db import get_engine

    with get_engine().connect() as connection:
        return {"waves": wave_list(connection)}


def _advance(args: argparse.Namespace) -> dict[str, Any]:
    import datetime as dt

    from console import progress
    from console.schedule import advance

    started = dt.datetime.now(dt.UTC)
    with progress.tracking(progress.since(started), "advance: "):
        return advance(args.to, start=args.start)


def _load_decisions(args: argparse.Namespace) -> dict[str, Any]:
    from console.dagrun import run_dag

    result = run_dag("decisions_intake", args.date, {"decisions_file": str(Path(args.file).resolve())})
    summary: dict[str, Any] = result.xcom_returns.get("load_decisions") or {}
    return {**summary, "run_id": result.run_id}


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    from console.bench_planning import bench_wave_planning

    return bench_wave_planning(args.persons, database_url=args.database_url, keep=args.keep)


def add_commands(commands: Commands) -> None:
    register = commands.add(
        commands.load, "register", _load_register, "load a register extract (upsert by NIR)",
        epilog="examples:\n  mes-rollout load register extract.csv --date 2022-01-28\n"
        "  mes-rollout load register late.csv --date 2022-03-02 --extracted-on 2022-02-01\n\n"
        "A person's row is only replaced by a row of an extract as new or newer: the rows of an extract\n"
        "older than the one a person's row comes from are counted as older_than_held and left out\n"
        "(a death date they bring is taken all the same).",
    )
    register.add_argument("file", type=Path)
    add_date_option(register, "logical date of the load")
    register.add_argument(
        "--extracted-on", type=iso_date, default=None, metavar="YYYY-MM-DD",
        help="the day the extract was taken (default: --date)",
    )
    wave = commands.top.add_parser("wave", help="plan, approve and inspect waves", description="waves")
    wave_commands = wave.add_subparsers(dest="wave_command", required=True, metavar="ACTION")

    run = commands.add(
        wave_commands, "run", _wave_run, "run the enrolment_wave DAG for a wave (in-process)",
        epilog="examples:\n"
        "  mes-rollout wave run W1 --departements 01,02 --date 2022-01-31 --dry-run\n"
        "  mes-rollout wave run W1 --departements 01,02 --date 2022-01-31 --approve --comment \"checked\"\n"
        "  mes-rollout wave run W1 --departements 2A,2B,971 --date 2022-02-01 --cap 500000\n\n"
        "Without --approve or --reject the run waits for an answer: mes-rollout wave approve W1 (another shell)\n"
        "or Airflow's Required actions.",
    )
    run.add_argument("wave_id")
    run.add_argument(
        "--departements", type=_departements, required=True, metavar="CODES", help="comma-separated, e.g. 01,02,2A"
    )
    run.add_argument(
        "--date", type=iso_date, required=True, metavar="YYYY-MM-DD", help="send date = the run's logical date"
    )
    run.add_argument("--cap", type=int, default=None, help="cap on recipients (default 2 000 000)")
    run.add_argument("--dry-run", action="store_true", help="count only: nothing is written for the people")
    decided = run.add_mutually_exclusive_group()
    decided.add_argument("--approve", action="store_true", help="answer the approval request: Approve")
    decided.add_argument("--reject", action="store_true", help="answer the approval request: Reject")
    run.add_argument("--comment", default="", help="why (kept in the audit trail)")

    for name, option in (("approve", "Approve"), ("reject", "Reject")):
        answer = commands.add(
            wave_commands, name, _wave_answer(option), f"{option} a wave whose run waits for approval"
        )
        answer.add_argument("wave_id")
        answer.add_argument("--comment", default="", help="why (kept in the audit trail)")

    show = commands.add(wave_commands, "show", _wave_show, "a wave's state and counts")
    show.add_argument("wave_id")
    commands.add(
        wave_commands, "list", _wave_list, "every wave: state, send date, départements, people and messages"
    )

    advance = commands.add(
        commands.top, "advance", _advance,
        "run the daily DAGs (sending, space creation, DMP migration) for each day up to a date",
        epilog="examples:\n  mes-rollout advance --to 2022-03-01\n"
        "  mes-rollout advance --from 2022-01-31 --to 2022-02-15   (days already run are run again)",
    )
    advance.add_argument("--to", type=iso_date, required=True, metavar="YYYY-MM-DD", help="last logical date to run")
    advance.add_argument(
        "--from", dest="start", type=iso_date, default=None, metavar="YYYY-MM-DD",
        help="first day (default: after the last advance)",
    )

    decisions = commands.add(commands.load, "decisions", _load_decisions, "load a decisions.csv (decisions_intake DAG)")
    decisions.add_argument("file", type=Path)
    add_date_option(decisions, "logical date of the load")

    bench = commands.add(
        commands.top, "bench-wave-planning", _bench, "time planning a wave against a plain INSERT ... SELECT (PostgreSQL)"
    )
    bench.add_argument("--persons", type=int, default=1_000_000)
    bench.add_argument("--database-url", default=None, help="PostgreSQL server (default: MES_BENCH_POSTGRES_URL or local)")
    bench.add_argument("--keep", action="store_true", help="keep the scratch database")
