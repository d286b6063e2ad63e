"""The validations of a migration run, as its DAG tasks call them.

- `validate_decisions` (after classification, before the gate): the staged extract of the run's
  scope, and the reconciliation of the decisions (nothing lost while deciding).
- `validate_committed` (after commit): the migrated documents, and the reconciliation of the
  committed outcomes. Both must pass, or the run is failed.

Each stage publishes its Data Docs, written once, under the run's folder
(`<reports>/<rollout>/migration/<run_id>/data_docs/<stage>/`), recorded as evidence.

Frames are read chunk by chunk (whole batches, about `settings.validation_chunk_documents`
documents each, MES_VALIDATION_CHUNK_DOCUMENTS), so memory stays flat whatever the size of the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Engine, text

from mes_rollout import evidence
from mes_rollout.config import Settings
from mes_rollout.constants import DocumentOutcome, FileKind
from mes_rollout.db import as_datetime, enum_params, load_query
from validation import suites
from validation.gx_context import DATA_DOCS_FOLDER, RESULTS_FOLDER, RunValidator, SuiteOutcome, publish_site

if TYPE_CHECKING:
    import pandas as pd


class StoredSizes(Protocol):
    """What the checks need of a document store: the size of what it holds under a key (None: nothing)."""

    def size(self, key: str) -> int | None: ...


class ValidationFailed(RuntimeError):
    """A validation that must pass did not; the message names the suites and expectations."""


# The inputs a migration run's evidence names: the register it checks identities against, the extract.
RUN_INPUT_KINDS = (FileKind.REGISTER.value, FileKind.DMP.value, FileKind.DMP_DOCUMENTS.value)


def run_folder(settings: Settings, rollout_id: str, run_id: str) -> Path:
    """Where a migration run's report, GX project and Data Docs live: under its database's rollout
    folder, since run ids are unique only within one database."""
    return settings.reports_dir / rollout_id / "migration" / run_id


def folder_of_run(engine: Engine, settings: Settings, run_id: str) -> Path:
    with engine.begin() as connection:
        return run_folder(settings, evidence.rollout_id(connection), run_id)


def run_provenance(connection: Connection, settings: Settings, run_id: str) -> dict[str, Any]:
    """The provenance of a run's evidence; its inputs are those loaded before the run started, so
    that the same run gives the same provenance whenever its evidence is written again."""
    started = connection.execute(
        text("SELECT started_at FROM migration_runs WHERE run_id = :r"), {"r": run_id}
    ).scalar_one()
    return evidence.provenance(
        connection, settings.database_url, run_id, input_kinds=RUN_INPUT_KINDS, inputs_before=as_datetime(started)
    )


def publish_data_docs(engine: Engine, settings: Settings, validator: RunValidator, run_id: str, stage: str) -> Path:
    """GX's site of the run, made offline and written once under `data_docs/<stage>`; the index's path."""
    built = validator.build_data_docs()
    with engine.begin() as connection:
        origin = run_provenance(connection, settings, run_id)

        def existing(path: Path) -> str | None:
            if path.is_file():
                return evidence.sha256_of(path)
            return connection.execute(
                text("SELECT sha256 FROM evidence_files WHERE path = :p"), {"p": str(path)}
            ).scalar()

        def write(path: Path, content: bytes) -> None:
            evidence.write_once(
                path, content, kind=evidence.EvidenceKind.DATA_DOCS, run_id=run_id, provenance=origin,
                connection=connection, settings=settings,
            )  # fmt: skip

        return publish_site(
            built, validator.run_folder / RESULTS_FOLDER, validator.run_folder / DATA_DOCS_FOLDER,
            run_id=run_id, stage=stage, provenance=origin, write=write, existing=existing,
        )  # fmt: skip


def chunk_ranges(engine: Engine, run_id: str, max_documents: int) -> list[tuple[int, int]]:
    """Consecutive batch ranges of about `max_documents` documents each."""
    limit = max(1, max_documents)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT batch_no, documents FROM migration_batches WHERE run_id = :r ORDER BY batch_no"),
            {"r": run_id},
        ).all()
    ranges: list[tuple[int, int]] = []
    first, total = None, 0
    for batch_no, documents in rows:
        if first is None:
            first = int(batch_no)
        total += int(documents)
        if total >= limit:
            ranges.append((first, int(batch_no)))
            first, total = None, 0
    if first is not None:
        ranges.append((first, int(rows[-1][0])))
    return ranges


def _frames(engine: Engine, query: str, run_id: str, ranges: list[tuple[int, int]]) -> Iterator[pd.DataFrame]:
    """The rows of the query's text, a frame per range of batches."""
    import pandas as pd

    sql = text(query)
    for first, last in ranges:
        with engine.connect() as connection:
            result = connection.execute(
                sql,
                {"run_id": run_id, "first_batch": first, "last_batch": last, **enum_params(DocumentOutcome, "outcome")},
            )
            columns = list(result.keys())
            # Plain tuples: pandas probes each row with hasattr(), which a SQLAlchemy Row answers
            # through its key lookup and an exception (5x slower to build the frame, measured).
            yield pd.DataFrame.from_records([tuple(row) for row in result], columns=columns)


def staged_frames(engine: Engine, run_id: str, ranges: list[tuple[int, int]]) -> Iterator[pd.DataFrame]:
    for frame in _frames(engine, load_query("migration_frame_staged.sql"), run_id, ranges):
        frame["size"] = frame["size"].astype("int64")
        frame["type_class"] = frame["type_code"] + "/" + frame["class_code"]
        yield frame


def migrated_frames(
    engine: Engine, store: StoredSizes, run_id: str, ranges: list[tuple[int, int]]
) -> Iterator[pd.DataFrame]:
    """The migrated documents beside their source, with checks computed per chunk (whole persons).

    The NIR is replaced by a number local to the chunk (`space`) before GX sees the frame.
    """
    import pandas as pd

    for frame in _frames(engine, load_query("migration_frame_migrated.sql"), run_id, ranges):
        frame["space"] = pd.factorize(frame["nir"])[0]
        frame = frame.drop(columns=["nir"])
        for column in ("size", "source_size"):
            frame[column] = frame[column].astype("int64")
        frame["stored_size"] = [store.size(key) if key else None for key in frame["store_key"]]
        frame["stored_size"] = frame["stored_size"].astype("Int64")
        frame["type_class"] = frame["type_code"] + "/" + frame["class_code"]
        is_current = frame["version_role"].eq("current")
        frame["head_is_current"] = frame["chain_head"].isin(set(frame.loc[is_current, "entry_uuid"]))
        frame["chain_currents"] = is_current.astype("int64").groupby(frame["chain_head"]).transform("sum")
        # The same unique_id in two different chains of one space: migrated twice.
        chains = frame[["space", "unique_id", "chain_head"]].drop_duplicates()
        twice = chains[chains.duplicated(["space", "unique_id"], keep=False)][["space", "unique_id"]]
        keys = pd.MultiIndex.from_frame(frame[["space", "unique_id"]])
        frame["duplicate_in_space"] = keys.isin(pd.MultiIndex.from_frame(twice)) if len(twice) else False
        yield frame


# The run's outcomes per document (dmp_id, outcome): committed, or decided for a chunk of batches.
_COMMITTED_OUTCOMES = "SELECT dmp_id, outcome FROM dmp_document_outcomes WHERE migration_run_id = :run_id"
_DECIDED_OUTCOMES = (
    "SELECT dmp_id, outcome FROM migration_decisions"
    " WHERE run_id = :run_id AND batch_no BETWEEN :first_batch AND :last_batch"
)


def reconciliation_frames(
    engine: Engine, run_id: str, ranges: list[tuple[int, int]], *, committed: bool, totals: dict[str, int]
) -> Iterator[pd.DataFrame]:
    outcomes = _COMMITTED_OUTCOMES if committed else _DECIDED_OUTCOMES
    query = load_query("migration_frame_reconciliation.sql", fill={"/* the run's outcomes */": outcomes})
    for frame in _frames(engine, query, run_id, ranges):
        for column in ("source", "migrated", "held_back", "skipped"):
            frame[column] = frame[column].astype("int64")
            totals[column] = totals.get(column, 0) + int(frame[column].sum())
        frame["accounted"] = frame["migrated"] + frame["held_back"] + frame["skipped"]
        totals["dmps"] = totals.get("dmps", 0) + len(frame)
        yield frame


def _reconcile(validator: RunValidator, engine: Engine, run_id: str, ranges: list[tuple[int, int]], *, committed: bool) -> tuple[SuiteOutcome, SuiteOutcome, dict[str, int]]:
    import pandas as pd

    totals: dict[str, int] = {}
    per_dmp = validator.validate(
        suites.reconciliation_suite(), reconciliation_frames(engine, run_id, ranges, committed=committed, totals=totals)
    )
    with engine.connect() as connection:
        scope = connection.execute(text(load_query("migration_source_total.sql")), {"run_id": run_id}).one()
    totals = {name: totals.get(name, 0) for name in ("dmps", "source", "migrated", "held_back", "skipped")}
    totals["accounted"] = totals["migrated"] + totals["held_back"] + totals["skipped"]
    total_frame = pd.DataFrame([totals])
    in_total = validator.validate(suites.totals_suite(int(scope.documents), int(scope.dmps)), [total_frame])
    return per_dmp, in_total, {**totals, "scope_documents": int(scope.documents), "scope_dmps": int(scope.dmps)}


def _record(engine: Engine, run_id: str, key: str, summary: dict[str, Any]) -> dict[str, Any]:
    with engine.begin() as connection:
        stored = connection.execute(
            text("SELECT validation FROM migration_runs WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
        validation = (json.loads(stored) if isinstance(stored, str) else dict(stored or {})) if stored else {}
        validation[key] = summary
        connection.execute(
            text("UPDATE migration_runs SET validation = :v WHERE run_id = :r"),
            {"v": json.dumps(validation, sort_keys=True), "r": run_id},
        )
    return validation


def validate_decisions(engine: Engine, settings: Settings, run_id: str, holdback_threshold: float) -> dict[str, Any]:
    """The staged extract of the run's scope (reported) and the reconciliation of decisions (must pass)."""
    folder = folder_of_run(engine, settings, run_id)
    validator = RunValidator(folder, run_id)
    ranges = chunk_ranges(engine, run_id, settings.validation_chunk_documents)
    staged = validator.validate(suites.staged_extract_suite(holdback_threshold), staged_frames(engine, run_id, ranges))
    per_dmp, in_total, totals = _reconcile(validator, engine, run_id, ranges, committed=False)
    docs = publish_data_docs(engine, settings, validator, run_id, "decisions")
    summary = {
        "suites": [outcome.as_dict() for outcome in (staged, per_dmp, in_total)],
        "reconciliation": totals,
        "passed": per_dmp.passed and in_total.passed,
        "staged_extract_passed": staged.passed,
        "data_docs": str(docs.relative_to(folder)),
        "gx_seconds": round(validator.seconds, 3),
    }
    _record(engine, run_id, "decisions", summary)
    if not summary["passed"]:
        raise ValidationFailed(f"run {run_id}: the decisions do not reconcile with the source: {totals}")
    return summary


def validate_committed(engine: Engine, settings: Settings, store: StoredSizes, run_id: str) -> dict[str, Any]:
    """The migrated documents and the reconciliation of committed outcomes; both must pass."""
    folder = folder_of_run(engine, settings, run_id)
    validator = RunValidator(folder, run_id)
    ranges = chunk_ranges(engine, run_id, settings.validation_chunk_documents)
    migrated = validator.validate(suites.migrated_documents_suite(), migrated_frames(engine, store, run_id, ranges))
    per_dmp, in_total, totals = _reconcile(validator, engine, run_id, ranges, committed=True)
    docs = publish_data_docs(engine, settings, validator, run_id, "committed")
    outcomes = (migrated, per_dmp, in_total)
    summary = {
        "suites": [outcome.as_dict() for outcome in outcomes],
        "reconciliation": totals,
        "passed": all(outcome.passed for outcome in outcomes),
        "data_docs": str(docs.relative_to(folder)),
        "gx_seconds": round(validator.seconds, 3),
    }
    _record(engine, run_id, "committed", summary)
    if not summary["passed"]:
        failed = [f"{o.suite}: {', '.join(o.failed_critical)}" for o in outcomes if not o.passed]
        raise ValidationFailed(f"run {run_id}: validation failed: {'; '.join(failed)}")
    return summary
