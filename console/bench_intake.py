"""`mes-rollout bench intake`: register intake of a large synthetic file against PostgreSQL's COPY.

Each measured phase runs in a child process of its own, so that its peak memory (ru_maxrss) is its
own and not the parent's, and on PostgreSQL in a fresh database. COPY and the intake take turns,
`--repeat` times (this machine's two shared cores make any single timing noisy): the ratio is
given for the best run of each (as `timeit` does) and for the median runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from console.commands import Commands
from mes_rollout.config import load_settings

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _phase_copy(database_url: str, register: Path) -> dict[str, Any]:
    """Baseline: PostgreSQL's own COPY of the same file into a table of text columns."""
    import psycopg

    with register.open("rb") as stream:
        header = stream.readline().decode("utf-8-sig").strip().split(";")
    columns = ", ".join(f'"{name}" TEXT' for name in header)
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        connection.execute(f"CREATE TABLE copy_baseline ({columns})")
        started = time.perf_counter()
        with connection.cursor() as cursor, register.open("rb") as stream:
            with cursor.copy("COPY copy_baseline FROM STDIN (FORMAT csv, DELIMITER ';', HEADER true)") as copy:
                while block := stream.read(1 << 20):
                    copy.write(block)
        connection.commit()
        elapsed = time.perf_counter() - started
        rows = connection.execute("SELECT COUNT(*) FROM copy_baseline").fetchone()
    return {"seconds": elapsed, "rows": rows[0] if rows else 0, "peak_mib": _peak_mib()}


def _phase_intake(database_url: str, register: Path) -> dict[str, Any]:
    import datetime as dt

    from enrolment.register import load_register
    from mes_rollout.db import make_engine, upgrade

    engine = make_engine(database_url)
    upgrade(engine)
    started = time.perf_counter()
    summary = load_register(engine, register, as_of=dt.date(2022, 1, 28))
    elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "rows": summary.read,
        "accepted": summary.accepted,
        "phase_seconds": summary.as_dict()["phase_seconds"],
        "peak_mib": _peak_mib(),
    }


def _run_phase(phase: str, database_url: str, register: Path) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "console.bench_intake", phase, database_url, str(register)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def _fresh_postgres_database() -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    name = f"mes_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop_postgres_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def bench_intake(rows: int, seed: int, work_dir: Path, repeat: int = 3) -> dict[str, Any]:
    from console.synth import generate

    extract = work_dir / f"register-{rows}-{seed}"
    register = extract / "register.csv"
    if not register.exists():
        generate(rows, seed, extract, dirty=0.01, with_dmp=False)
    size_mib = register.stat().st_size / 2**20
    results: dict[str, Any] = {"rows": rows, "file_mib": round(size_mib, 1), "repeat": repeat}
    runs: dict[str, list[dict[str, Any]]] = {"postgres_copy": [], "postgres_intake": []}
    for _ in range(repeat):
        for key, phase in (("postgres_copy", "_copy"), ("postgres_intake", "_intake")):
            name, url = _fresh_postgres_database()
            try:
                runs[key].append(_run_phase(phase, url, register))
            finally:
                _drop_postgres_database(name)
    for key, measured in runs.items():
        best = min(measured, key=lambda run: float(run["seconds"]))
        results[key] = dict(best, runs_seconds=[round(run["seconds"], 2) for run in measured])
        results[key]["median_seconds"] = round(statistics.median(run["seconds"] for run in measured), 2)
        results[key]["peak_mib"] = max(run["peak_mib"] for run in measured)
    sqlite_file = work_dir / f"bench-{uuid.uuid4().hex[:8]}.db"
    try:
        results["sqlite_intake"] = _run_phase("_intake", f"sqlite:///{sqlite_file}", register)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)
    copy_seconds = results["postgres_copy"]["seconds"]
    for key in ("postgres_copy", "postgres_intake", "sqlite_intake"):
        phase = results[key]
        phase["rows_per_second"] = round(rows / phase["seconds"])
        phase["ratio_to_copy"] = round(phase["seconds"] / copy_seconds, 2)
        phase["seconds"] = round(phase["seconds"], 2)
        phase["peak_mib"] = round(phase["peak_mib"], 1)
    results["postgres_intake"]["median_ratio_to_copy"] = round(
        results["postgres_intake"]["median_seconds"] / results["postgres_copy"]["median_seconds"], 2
    )
    results["goal"] = "intake within 5x of COPY, peak memory under 500 MiB"
    return results


def _bench_intake_command(args: argparse.Namespace) -> dict[str, Any]:
    work_dir = load_settings().var_dir / "bench"
    work_dir.mkdir(parents=True, exist_ok=True)
    return bench_intake(args.rows, args.seed, work_dir, args.repeat)


def add_commands(commands: Commands) -> None:
    parser = commands.add(
        commands.top, "bench-intake", _bench_intake_command, "benchmark register intake against PostgreSQL COPY"
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="turns of COPY and the intake on PostgreSQL")


if __name__ == "__main__":
    phases = {"_copy": _phase_copy, "_intake": _phase_intake}
    print(json.dumps(phases[sys.argv[1]](sys.argv[2], Path(sys.argv[3]))))
