"""Every DAG file imports cleanly, and register_intake runs end to end under dag.test()."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import text

from console.airflow_home import DAGS_FOLDER
from console.dagrun import run_dag
from mes_rollout.db import get_engine
from tests.factories import person_row, write_csv


def test_every_dag_file_imports_without_error(airflow_home: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    files = {path.stem for path in DAGS_FOLDER.glob("*.py") if not path.name.startswith("_")}
    assert files <= set(bag.dag_ids), f"a DAG file defines no DAG named after it: {files - set(bag.dag_ids)}"


def test_register_intake_dag_loads_the_file_and_returns_only_counts(
    airflow_home: Path, settings_env: Path, tmp_path: Path
) -> None:
    rows = [person_row(), person_row(), person_row(departement="20")]
    path = write_csv(tmp_path / "register.csv", rows)
    result = run_dag("register_intake", dt.date(2022, 1, 20), {"register_file": str(path)})
    assert result.state == "success"
    returned = result.xcom_returns["load_register"]
    assert returned["read"] == 3 and returned["accepted"] == 2 and returned["quarantined"] == 1
    assert not any(row["nir"] in str(returned) for row in rows)  # no NIR in XCom
    with get_engine().connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM persons")).scalar_one() == 2
    # A second run of the same DAG run changes nothing.
    again = run_dag("register_intake", dt.date(2022, 1, 20), {"register_file": str(path)})
    assert again.xcom_returns["load_register"]["read"] == 3
    with get_engine().connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM input_files")).scalar_one() == 1
