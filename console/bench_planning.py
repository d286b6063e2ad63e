"""`mes-rollout bench-wave-planning`: plan a wave of N people on PostgreSQL, against a baseline.

A scratch database gets N synthetic people made in SQL (generate_series: valid NIR keys, 90 %
in the two départements of the wave, a fifth of them minors told through a representative,
60 % with an email, 5 % without any contact, a few dead). Planning runs the same functions as the
DAG's tasks (select_cohort, every plan_shard in turn, summarise), in this process, timed. The
baseline, measured in the same run, is a plain INSERT ... SELECT of the same rows planning wrote
(its enrolments, notifications, notification members and audit rows) into empty copies of those
tables with the same keys, indexes and foreign keys. Printed: rows/s, the ratio planning /
baseline, and the peak RSS of the process.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from enrolment.dao import register_wave
from enrolment.planning import plan_shard, select_cohort, summarise
from enrolment.waves import WaveRequest
from mes_rollout.config import load_settings
from mes_rollout.db import make_engine, upgrade

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
WAVE_ID = "bench-wave"
SEND_DATE = dt.date(2022, 2, 1)

# The 13 characters of person i's NIR, unique for i < 2.4 billion: sex, year, month, place 01xxx, order.
_NIR13 = (
    "((1 + {i} % 2)::text || lpad((({i} / 2) % 100)::text, 2, '0') || lpad((1 + ({i} / 200) % 12)::text, 2, '0')"
    " || '01' || lpad((1 + ({i} / 2400) % 999)::text, 3, '0') || lpad((1 + ({i} / 2397600) % 999)::text, 3, '0'))"
)


def _nir(i: str) -> str:
    number = _NIR13.format(i=i)
    return f"({number} || lpad((97 - ({number}::bigint % 97))::text, 2, '0'))"


_PERSONS = f"""
INSERT INTO persons (nir, nom_naissance, prenom, prenoms, date_naissance, sexe, email, adresse_ligne4, code_postal,
    commune, address_problem, departement, nir_representant, date_deces, input_file_id, updated_at)
SELECT
    {_nir("i")},
    'BENCH', 'Camille', 'Camille',
    CASE WHEN i % 5 = 1 THEN DATE '2010-06-15' ELSE DATE '1980-03-10' END,
    CASE WHEN i % 2 = 0 THEN 'M' ELSE 'F' END,
    CASE WHEN i % 10 < 6 THEN 'person' || i || '@example.fr' END,
    CASE WHEN i % 20 <> 17 THEN (i % 200) || ' rue des Lilas' END,
    CASE WHEN i % 20 <> 17 THEN '01000' END,
    CASE WHEN i % 20 <> 17 THEN 'BOURG-EN-BRESSE' END,
    CASE WHEN i % 20 = 17 THEN 'no postal address' END,
    CASE WHEN i % 10 = 9 THEN '03' WHEN i % 2 = 0 THEN '01' ELSE '02' END,
    CASE WHEN i % 5 = 1 THEN {_nir("(i - 1)")} END,
    CASE WHEN i % 200 = 8 THEN DATE '2021-12-01' END,
    :input_file_id, now()
FROM generate_series(0, :count - 1) AS i
"""

# Planning's output tables, copied empty (keys, indexes, defaults) with their foreign keys.
_BASELINE_TABLES = """
CREATE TABLE bench_enrolments (LIKE enrolments INCLUDING ALL);
ALTER TABLE bench_enrolments ADD FOREIGN KEY (nir) REFERENCES persons (nir);
ALTER TABLE bench_enrolments ADD FOREIGN KEY (wave_id) REFERENCES waves (wave_id);
CREATE TABLE bench_notifications (LIKE notifications INCLUDING ALL);
ALTER TABLE bench_notifications ADD FOREIGN KEY (wave_id) REFERENCES waves (wave_id);
CREATE TABLE bench_notification_members (LIKE notification_members INCLUDING ALL);
ALTER TABLE bench_notification_members ADD FOREIGN KEY (notification_id) REFERENCES bench_notifications (notification_id);
CREATE TABLE bench_audit_trail (LIKE audit_trail INCLUDING ALL)
"""
_BASELINE = """
INSERT INTO bench_enrolments SELECT * FROM enrolments WHERE wave_id = :wave_id;
INSERT INTO bench_notifications SELECT * FROM notifications WHERE wave_id = :wave_id;
INSERT INTO bench_notification_members SELECT m.* FROM notification_members AS m
    JOIN notifications AS n ON n.notification_id = m.notification_id WHERE n.wave_id = :wave_id;
INSERT INTO bench_audit_trail (occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id,
    input_file_id, details)
    SELECT occurred_at, entity, entity_id, action, from_state, to_state, reason, run_id, input_file_id, details
    FROM audit_trail WHERE run_id = :run_id
"""


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _statements(sql: str) -> list[str]:
    return [statement.strip() for statement in sql.split(";") if statement.strip()]


def _make_people(engine: Engine, count: int) -> float:
    began = time.monotonic()
    with engine.begin() as connection:
        input_file_id = connection.execute(
            text(
                "INSERT INTO input_files (kind, path, sha256, run_id, loaded_at)"
                " VALUES ('register', 'bench', 'bench', 'bench', now()) RETURNING id"
            )
        ).scalar_one()
        connection.execute(text(_PERSONS), {"input_file_id": input_file_id, "count": count})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE persons")
    return time.monotonic() - began


def _plan(engine: Engine, var_dir: Path, shard_size: int, run_id: str) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    timings: dict[str, float] = {}
    began = time.monotonic()
    request = WaveRequest(WAVE_ID, ("01", "02"), SEND_DATE, 2_000_000, False)
    with engine.begin() as connection:
        register_wave(connection, request, run_id=run_id, now=now)
    shards = select_cohort(engine, WAVE_ID, var_dir=var_dir, shard_size=shard_size, run_id=run_id, now=now)
    timings["select_cohort"] = time.monotonic() - began
    mark = time.monotonic()
    for shard in shards:
        plan_shard(engine, WAVE_ID, shard, var_dir=var_dir, run_id=run_id, now=now)
    timings["plan_shards"] = time.monotonic() - mark
    mark = time.monotonic()
    counts = summarise(engine, WAVE_ID, run_id=run_id, now=now)
    timings["summarise"] = time.monotonic() - mark
    timings["total"] = time.monotonic() - began
    return {"seconds": timings, "shards": len(shards), "counts": counts}


def _baseline(engine: Engine, run_id: str) -> tuple[float, int]:
    with engine.begin() as connection:
        for statement in _statements(_BASELINE_TABLES):
            connection.exec_driver_sql(statement)
    began = time.monotonic()
    rows = 0
    with engine.begin() as connection:
        for statement in _statements(_BASELINE):
            rows += connection.execute(text(statement), {"wave_id": WAVE_ID, "run_id": run_id}).rowcount
    return time.monotonic() - began, rows


def bench_wave_planning(persons: int, *, database_url: str | None = None, keep: bool = False) -> dict[str, Any]:
    admin_url = database_url or os.environ.get("MES_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL)
    if not admin_url.startswith("postgresql"):
        raise SystemExit("mes-rollout: the wave planning benchmark runs on PostgreSQL")
    name = f"mes_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        make_seconds = _make_people(engine, persons)
        run_id = f"bench-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory(prefix="mes-bench-keys-") as var_dir:
            planning = _plan(engine, Path(var_dir), load_settings().shard_size, run_id)
        baseline_seconds, baseline_rows = _baseline(engine, run_id)
    finally:
        engine.dispose()
        if not keep:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    people = planning["counts"]["people"]
    planned = people["planned"] + people["unreachable"]
    seconds = planning["seconds"]["total"]
    return {
        "persons_in_register": persons,
        "wave_people": planned,
        "people_told": people["planned"],
        "messages": planning["counts"]["recipients"]["total"],
        "shards": planning["shards"],
        "make_register_seconds": round(make_seconds, 2),
        "planning_seconds": {key: round(value, 2) for key, value in planning["seconds"].items()},
        "planning_people_per_second": round(planned / seconds) if seconds else None,
        "baseline_rows": baseline_rows,
        "baseline_seconds": round(baseline_seconds, 2),
        "baseline_rows_per_second": round(baseline_rows / baseline_seconds) if baseline_seconds else None,
        "ratio_planning_to_baseline": round(seconds / baseline_seconds, 2) if baseline_seconds else None,
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "database": url.rsplit("@", 1)[-1] + (" (kept)" if keep else " (dropped)"),
    }
