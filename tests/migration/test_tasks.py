"""The facade the DMP DAGs call: the run's day (a Param, the run's Paris day, the Asset's created_on),
settings read when a task runs (not when a module is imported), ids and counts only in return."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from migration import tasks
from tests.migration.factories import ExtractBuilder, a_person, insert_space, load_people

UTC = dt.UTC


@pytest.mark.parametrize(
    ("date_param", "logical_date", "run_after", "extras", "expected"),
    [
        # By hand for a date: the Param wins over everything.
        ("2022-03-02", None, dt.datetime(2022, 3, 9, 12, tzinfo=UTC), [{"created_on": "2022-03-08"}], dt.date(2022, 3, 2)),
        # Asset-triggered (no logical date): the day it was due to run, in Paris (00:30 on the 2nd).
        (None, None, dt.datetime(2022, 3, 1, 23, 30, tzinfo=UTC), [], dt.date(2022, 3, 2)),
        # A scheduled run: its logical date, in Paris.
        (None, dt.datetime(2022, 3, 4, 22, 59, tzinfo=UTC), None, [], dt.date(2022, 3, 4)),
        (None, dt.datetime(2022, 3, 4, 23, 0, tzinfo=UTC), None, [], dt.date(2022, 3, 5)),
        # space_creation created spaces on a later day than the clock says: taken in.
        (None, None, dt.datetime(2022, 3, 1, 8, tzinfo=UTC), [{}, {"created_on": "2022-03-03"}], dt.date(2022, 3, 3)),
        (None, None, dt.datetime(2022, 3, 1, 8, tzinfo=UTC), [{"created_on": "2022-03-05T00:00:00+01:00"}], dt.date(2022, 3, 5)),
        # ... but never an earlier one.
        (None, None, dt.datetime(2022, 3, 6, 8, tzinfo=UTC), [{"created_on": "2022-03-03"}], dt.date(2022, 3, 6)),
    ],
)
def test_the_day_of_a_migration_run(
    date_param: str | None,
    logical_date: dt.datetime | None,
    run_after: dt.datetime | None,
    extras: list[dict[str, str]],
    expected: dt.date,
) -> None:
    assert tasks.migration_day(date_param, logical_date, run_after, extras) == expected


def test_a_run_without_an_aware_moment_has_no_day() -> None:
    with pytest.raises(ValueError, match="naive"):
        tasks.migration_day(None, dt.datetime(2022, 3, 2, 10), None)
    with pytest.raises(ValueError):
        tasks.migration_day(None, None, None)


@pytest.mark.slow
def test_the_tasks_in_order_read_the_settings_when_they_run_and_return_counts_only(
    engine: Engine, settings_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = [a_person() for _ in range(3)]
    load_people(engine, tmp_path, people, dt.date(2022, 1, 20))
    builder = ExtractBuilder(tmp_path / "dmp")
    for person in people:
        dmp_id = builder.add_dmp(person)
        builder.add_document(dmp_id)
        builder.add_document(dmp_id)
    builder.add_document(builder.dmps[0]["dmp_id"], b"x" * 5000)  # above the limit set below
    intake = tasks.load_extract(str(builder.write()), "manual__1")
    assert intake["documents"]["accepted"] == 7 and "extract_dir" not in intake
    for person in people:
        insert_space(engine, person["nir"], dt.date(2022, 3, 1))
    # Set after every module is imported: read when the tasks run.
    monkeypatch.setenv("MES_MIGRATION_BATCH_PERSONS", "1")
    monkeypatch.setenv("MES_MAX_DOCUMENT_BYTES", "4096")
    monkeypatch.setenv("MES_VALIDATION_CHUNK_DOCUMENTS", "1")
    store_root = tmp_path / "elsewhere"
    monkeypatch.setenv("MES_DOCUMENT_STORE_URL", f"file://{store_root}")

    planned = tasks.plan(
        {"date": None, "holdback_threshold": 0.5},
        logical_date=None,
        run_after=dt.datetime(2022, 3, 1, 23, 30, tzinfo=UTC),
        dag_run_id="asset_triggered__1",
        asset_extras=[{"created_on": "2022-03-01"}],
    )
    run_id = planned["run_id"]
    assert planned == {"run_id": "dmp-20220302-001", "resumed": False, "dmps": 3, "batches": 3}  # 1 person a batch
    returned = [
        planned,
        tasks.classify(run_id),
        tasks.validate_decisions(run_id),
        tasks.quality_gate(run_id),
        tasks.commit(run_id),
        tasks.validate_migration(run_id),
        tasks.report(run_id),
    ]
    assert returned[1] == {"run_id": run_id, "migrated": 6, "held_back": 1}
    assert returned[4] == {"run_id": run_id, "batches_committed": 3, "migrated_documents": 6}
    assert len([path for path in store_root.rglob("*") if path.is_file() and ".tmp" not in path.parts]) == 6
    xcom = json.dumps(returned)
    assert not any(person["nir"] in xcom for person in people)
    report = json.loads(Path(returned[-1]["report"]).read_text(encoding="utf-8"))
    assert report["reasons"]["held_back"] == {"CONTENT_TOO_LARGE": 1}
    assert report["validation"]["committed"]["suites"][0]["chunks"] == 3  # chunks of 1 document: per batch
    with engine.connect() as connection:
        assert connection.execute(text("SELECT dag_run_id, state FROM migration_runs")).one() == (
            "asset_triggered__1",
            "succeeded",
        )
