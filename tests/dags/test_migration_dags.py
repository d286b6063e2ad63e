"""dmp_intake and dmp_migration under dag.test(): scheduled on the spaces Asset, runnable by hand for a
date, XCom with ids and counts only, and a run stopped by the quality gate failing visibly."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from console.airflow_home import DAGS_FOLDER
from console.dagrun import DagRunFailed, run_dag
from mes_rollout.constants import SPACES_CREATED_ASSET
from mes_rollout.db import get_engine
from tests.migration.factories import ExtractBuilder, a_person, insert_space, load_people


def test_dmp_migration_is_scheduled_by_the_spaces_asset(airflow_home: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / "dmp_migration.py"))
    dag = bag.dags["dmp_migration"]
    assert SPACES_CREATED_ASSET in str(dag.timetable.asset_condition)
    assert [task.task_id for task in dag.topological_sort()] == [
        "plan", "classify", "validate_decisions", "quality_gate", "commit", "validate_migration", "report",
    ]  # fmt: skip
    assert dag.get_task("report").trigger_rule == "all_done"
    assert set(dag.params) == {"date", "holdback_threshold"}


def test_every_dmp_task_has_the_shared_time_limit(airflow_home: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    for name, tasks in (("dmp_migration", 7), ("dmp_intake", 1)):
        bag = DagBag(dag_folder=str(DAGS_FOLDER / f"{name}.py"))
        assert bag.import_errors == {}
        dag = bag.dags[name]
        assert len(dag.tasks) == tasks
        assert {(task.owner, task.execution_timeout) for task in dag.tasks} == {("mes-rollout", dt.timedelta(hours=3))}


def _extract(tmp_path: Path, *, faulty: int) -> tuple[list[dict[str, str]], Path]:
    people = [a_person() for _ in range(3)]
    builder = ExtractBuilder(tmp_path / "dmp")
    for person in people:
        dmp_id = builder.add_dmp(person)
        for _ in range(3):
            builder.add_document(dmp_id)
    for _ in range(faulty):
        builder.add_document(builder.dmps[0]["dmp_id"], hash="0" * 40)
    return people, builder.write()


@pytest.mark.slow
def test_intake_then_migration_by_hand_for_a_date(airflow_home: Path, settings_env: Path, tmp_path: Path) -> None:
    people, folder = _extract(tmp_path, faulty=0)
    engine = get_engine()
    load_people(engine, tmp_path, people, dt.date(2022, 1, 20))
    for person in people:
        insert_space(engine, person["nir"], dt.date(2022, 3, 1))
    intake = run_dag("dmp_intake", dt.date(2022, 3, 1), {"extract_dir": str(folder)})
    assert intake.xcom_returns["load_extract"]["documents"]["accepted"] == 9
    result = run_dag("dmp_migration", dt.date(2022, 3, 5), {"date": "2022-03-02"})
    assert result.state == "success"
    assert all(state == "success" for state in result.task_states.values())
    xcom = json.dumps(result.xcom_returns)
    assert not any(person["nir"] in xcom for person in people)  # ids and counts only
    report = json.loads(Path(result.xcom_returns["report"]["report"]).read_text(encoding="utf-8"))
    assert report["run"]["logical_date"] == "2022-03-02" and report["documents"]["migrated"] == 9
    # Run again (the Asset fires again): nothing new, nothing twice.
    again = run_dag("dmp_migration", dt.date(2022, 3, 6), {})
    assert again.xcom_returns["plan"]["dmps"] == 0
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM migrated_documents")).scalar() == 9


@pytest.mark.slow
def test_the_quality_gate_fails_the_dag_run_and_the_report_says_why(
    airflow_home: Path, settings_env: Path, tmp_path: Path
) -> None:
    people, folder = _extract(tmp_path, faulty=1)  # 1 of 10 documents held back: 10 % > 1 %
    engine = get_engine()
    load_people(engine, tmp_path, people, dt.date(2022, 1, 20))
    for person in people:
        insert_space(engine, person["nir"], dt.date(2022, 3, 1))
    run_dag("dmp_intake", dt.date(2022, 3, 1), {"extract_dir": str(folder)})
    with pytest.raises(DagRunFailed) as failed:
        run_dag("dmp_migration", dt.date(2022, 3, 2), {})
    assert set(failed.value.failed_tasks) >= {"quality_gate", "report"}
    with engine.connect() as connection:
        state, reason, report_path = connection.execute(
            text("SELECT state, stop_reason, report_path FROM migration_runs")
        ).one()
        assert connection.execute(text("SELECT COUNT(*) FROM migrated_documents")).scalar() == 0
    assert state == "stopped" and "10.00% is above the threshold 1.00%" in reason
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    assert report["reasons"]["held_back"] == {"HASH_MISMATCH": 1}
