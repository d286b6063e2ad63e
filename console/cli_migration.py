"""Subcommands of the DMP migration: `load dmp DIR`, `migrate --date`, `bench-migration`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from console.commands import Commands, add_date_option

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _load_dmp(args: argparse.Namespace) -> dict[str, Any]:
    from mes_rollout.db import get_engine
    from migration.intake import load_dmp_extract

    return load_dmp_extract(get_engine(), args.folder).as_dict()


def _migrate(args: argparse.Namespace) -> dict[str, Any]:
    from console.dagrun import DagRunFailed, run_dag
    from mes_rollout.db import get_engine
    from migration.run import last_run_of_day

    conf: dict[str, Any] = {"date": args.date.isoformat()}
    if args.holdback_threshold is not None:
        conf["holdback_threshold"] = args.holdback_threshold
    from console import progress

    try:
        with progress.tracking(progress.migration(), "migrate: "):
            result = run_dag("dmp_migration", args.date, conf)
    except DagRunFailed as error:
        with get_engine().connect() as connection:
            run = last_run_of_day(connection, args.date)
        detail = (
            f"run {run['run_id']} {run['state']}: {run['stop_reason']} (report: {run['report_path']})" if run else str(error)
        )
        raise SystemExit(f"mes-rollout: DMP migration failed: {detail}") from None
    return {"dag_run_id": result.run_id, "state": result.state, **(result.xcom_returns.get("report") or {})}


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    from console.bench_migration import bench_migration

    return bench_migration(args.documents, args.postgres_url, args.workdir, args.keep)


def add_commands(commands: Commands) -> None:
    load = commands.add(commands.load, "dmp", _load_dmp, "stage a legacy DMP extract folder (dmp.csv, documents.csv)")
    load.add_argument("folder", type=Path)
    migrate = commands.add(commands.top, "migrate", _migrate, "run the dmp_migration DAG for a date")
    add_date_option(migrate, "run date")
    migrate.add_argument("--holdback-threshold", type=float, default=None, help="override MES_HOLDBACK_THRESHOLD")
    bench = commands.add(commands.top, "bench-migration", _bench, "benchmark the DMP migration on PostgreSQL")
    bench.add_argument("--documents", type=int, default=200_000)
    bench.add_argument("--postgres-url", default=DEFAULT_POSTGRES, help="server where a throw-away database is made")
    bench.add_argument("--workdir", type=Path, default=None, help="folder for the extract and the store")
    bench.add_argument("--keep", action="store_true", help="keep the files afterwards")
