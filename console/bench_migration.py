"""`mes-rollout bench-migration`: migrate N documents of about 10 KB on PostgreSQL, against a baseline.

The baseline, measured in the same run on the same files, is a plain copy with SHA-1 (read, hash,
write, then one file-system sync): the I/O limit of the machine. It runs twice, before and after
the migration, and the faster counts: what ran on the machine just before (deleted files above
all, see below) cannot make the baseline look slow and the migration close to it. The migration
is every task of the dmp_migration DAG run in-process (`migration.run.migrate`): decisions,
content copied and verified, GX validations and Data Docs, commit, report. Printed: documents/s
of each, their ratio, the share of the run spent inside Great Expectations, the time of the store
sync before the first commit, and the peak memory (VmHWM) of the migration.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import random
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from mes_rollout.bulk import insert_rows
from mes_rollout.config import load_settings
from mes_rollout.db import make_engine, upgrade
from mes_rollout.nir import with_key
from migration.intake import DMP_COLUMNS, DOCUMENT_COLUMNS, load_dmp_extract
from migration.run import MigrationTimings, migrate
from migration.store import FolderStore, _sync_file_system

RUN_DATE = dt.date(2022, 3, 1)
DOCUMENTS_PER_DMP = 10
DOCUMENT_SIZE = 10 * 1024
TYPES = (("11488-4", "10"), ("11502-2", "10"), ("18748-4", "31"), ("57833-6", "42"), ("60591-5", "11"))


def _peak_memory_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_memory_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_extract(folder: Path, documents: int, seed: int = 7) -> list[tuple[str, str, str]]:
    """A clean extract of `documents` documents of about 10 KB, 10 per DMP; returns the persons."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    persons: list[tuple[str, str, str]] = []
    dmps = (documents + DOCUMENTS_PER_DMP - 1) // DOCUMENTS_PER_DMP
    with (
        (folder / "dmp.csv").open("w", encoding="utf-8", newline="") as dmp_stream,
        (folder / "documents.csv").open("w", encoding="utf-8", newline="") as document_stream,
    ):
        dmp_writer = csv.writer(dmp_stream, delimiter=";", lineterminator="\n")
        document_writer = csv.writer(document_stream, delimiter=";", lineterminator="\n")
        dmp_writer.writerow(DMP_COLUMNS)
        document_writer.writerow(DOCUMENT_COLUMNS)
        written = 0
        for number in range(dmps):
            sex = "1" if number % 2 else "2"
            birth = dt.date(1940 + number % 60, 1 + number % 12, 1 + number % 28)
            # (commune, order) differ for every number below 998 001: NIRs are unique.
            nir = with_key(f"{sex}{birth.year % 100:02d}{birth.month:02d}75{1 + number // 999:03d}{1 + number % 999:03d}")
            persons.append((nir, birth.isoformat(), "M" if sex == "1" else "F"))
            dmp_id = f"BENCH{number:09d}"
            dmp_writer.writerow((dmp_id, nir, birth.isoformat(), persons[-1][2], "2019-05-02T10:00:00+02:00", "active"))
            content_folder = folder / "content" / dmp_id[-3:]
            content_folder.mkdir(parents=True, exist_ok=True)
            for _ in range(min(DOCUMENTS_PER_DMP, documents - written)):
                entry_uuid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                content = rng.randbytes(DOCUMENT_SIZE - 512 + rng.randrange(1024))
                relative = f"content/{dmp_id[-3:]}/{entry_uuid}.pdf"
                (folder / relative).write_bytes(content)
                type_code, class_code = TYPES[written % len(TYPES)]
                document_writer.writerow(
                    (
                        entry_uuid, f"1.2.250.1.213.9.{written}", dmp_id, type_code, class_code,
                        "N|MASQUE_PS" if written % 50 == 0 else "N", "2020-02-03T10:00:00+01:00",
                        "2020-02-01T09:00:00+01:00", "PS", "application/pdf", len(content),
                        hashlib.sha1(content).hexdigest(), "Approved", "", relative, "Compte rendu",
                    )
                )  # fmt: skip
                written += 1
    return persons


def _insert_people_and_spaces(url: str, persons: list[tuple[str, str, str]]) -> None:
    engine = make_engine(url)
    upgrade(engine)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as connection:
        file_id = connection.execute(
            text(
                "INSERT INTO input_files (kind, path, sha256, run_id, loaded_at)"
                " VALUES ('register', 'bench', 'bench', 'bench', :now) RETURNING id"
            ),
            {"now": now},
        ).scalar_one()
        insert_rows(
            connection,
            "persons",
            ("nir", "nom_naissance", "prenom", "prenoms", "date_naissance", "sexe", "departement", "input_file_id", "updated_at"),
            [(nir, "Bench", "Camille", "Camille", dt.date.fromisoformat(birth), sex, "75", file_id, now) for nir, birth, sex in persons],
        )  # fmt: skip
        insert_rows(
            connection,
            "spaces",
            ("nir", "state", "created_on", "creation_cause", "updated_at"),
            [(nir, "active", RUN_DATE, "automatic", now) for nir, _, _ in persons],
        )
    engine.dispose()


class _TimedFlushStore(FolderStore):
    """The store, timing its flush (the file-system sync bought once before the first commit)."""

    flush_seconds = 0.0

    def flush(self) -> None:
        started = time.perf_counter()
        super().flush()
        self.flush_seconds += time.perf_counter() - started


def baseline_copy(extract: Path, target: Path, workers: int) -> tuple[int, float]:
    """Copy every content file with SHA-1 (read, hash, write), then sync: the I/O limit."""
    files = [path for folder in sorted((extract / "content").iterdir()) for path in folder.iterdir()]
    target.mkdir(parents=True, exist_ok=True)

    def copy(path: Path) -> str:
        content = path.read_bytes()
        digest = hashlib.sha1(content).hexdigest()
        (target / digest).write_bytes(content)
        return digest

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(copy, files):
            pass
    _sync_file_system(target)
    return len(files), time.perf_counter() - started


def bench_migration(documents: int, admin_url: str, workdir: Path | None = None, keep: bool = False) -> dict[str, Any]:
    bench_root = load_settings().var_dir / "bench"
    bench_root.mkdir(parents=True, exist_ok=True)
    base = Path(workdir or tempfile.mkdtemp(prefix="migration-", dir=bench_root))
    base.mkdir(parents=True, exist_ok=True)
    name = f"mes_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        started = time.perf_counter()
        persons = write_extract(base / "dmp", documents)
        generated = time.perf_counter() - started
        _insert_people_and_spaces(url, persons)
        engine = make_engine(url)
        started = time.perf_counter()
        load_dmp_extract(engine, base / "dmp")
        intake_seconds = time.perf_counter() - started
        # Each measured phase starts with nothing left to write back from the one before, and with
        # no file deleted by this run: ext4 without a journal (the benchmark's disk) skips inodes
        # freed in the last 60 s (360 s while their table block is dirty) when it allocates new
        # ones, one probe each. Deleting the baseline's 200 000 copies just before the migration
        # made each file the migration created several times dearer: copies go at the very end.
        settings = dataclasses.replace(
            load_settings(), database_url=url, reports_dir=base / "reports", document_store_dir=base / "store"
        )
        workers = settings.migration_content_workers
        _sync_file_system(base)
        copied, baseline_before = baseline_copy(base / "dmp", base / "baseline", workers)
        store = _TimedFlushStore(settings.document_store_dir, file_mode=settings.file_mode, dir_mode=settings.dir_mode)
        timings = MigrationTimings()
        _peak_memory_reset()
        summary = migrate(engine, settings, store, RUN_DATE, timings=timings)
        peak = _peak_memory_mb()
        _sync_file_system(base)
        _, baseline_after = baseline_copy(base / "dmp", base / "baseline-after", workers)
        baseline_seconds = min(baseline_before, baseline_after)
        for copies in ("baseline", "baseline-after"):
            shutil.rmtree(base / copies)
        with engine.connect() as connection:
            migrated = connection.execute(text("SELECT COUNT(*) FROM migrated_documents")).scalar_one()
        engine.dispose()
        rate = migrated / timings.total
        baseline_rate = copied / baseline_seconds
        return {
            "documents": documents,
            "migrated": int(migrated),
            "document_size_bytes": DOCUMENT_SIZE,
            "generation_seconds": round(generated, 1),
            "intake_seconds": round(intake_seconds, 1),
            "intake_rows_per_second": round(documents / intake_seconds),
            "baseline_copy_sha1": {
                "files": copied,
                "seconds": round(baseline_seconds, 2),
                "files_per_second": round(baseline_rate),
                "seconds_before_and_after": [round(baseline_before, 2), round(baseline_after, 2)],
            },
            "migration": {
                "seconds": round(timings.total, 2),
                "documents_per_second": round(rate),
                "phases_seconds": {phase: round(seconds, 2) for phase, seconds in timings.phases.items()},
                "store_flush_seconds": round(store.flush_seconds, 2),
                "gx_seconds": round(timings.gx_seconds, 2),
                "gx_share": round(timings.gx_seconds / timings.total, 3),
                "peak_memory_mb": round(peak, 1),
            },
            "slowdown_vs_baseline": round(baseline_rate / rate, 2),
            "content_workers": workers,
            "report": summary["report"],
            "goals": {
                "documents_per_second>=5000": rate >= 5000,
                "within_3x_of_baseline": baseline_rate / rate <= 3,
                "gx_share<0.25": timings.gx_seconds / timings.total < 0.25,
            },
        }
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
