"""`advance`: a DAG that fails stops alone. A DMP migration stopped by its quality gate on 1 March
must not stop the creation of the spaces due on 2 March, and is reported with its reason, its
report and its log."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from console.cli import main
from mes_rollout.db import as_date, get_engine
from tests.factories import make_nir, person_row, write_csv
from tests.migration.factories import ExtractBuilder

pytestmark = pytest.mark.slow


def _people(departement: str, first_order: int) -> list[dict[str, str]]:
    return [
        person_row(
            nir=make_nir("2", 1982, 8, "01053", first_order + index),
            departement=departement,
            email=f"person{first_order + index}@example.fr",
        )
        for index in range(3)
    ]


def test_a_failed_migration_does_not_stop_the_next_days_creation(
    airflow_home: Path, settings_env: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MES_HOLDBACK_THRESHOLD", "0.01")
    ain, aisne = _people("01", 101), _people("02", 201)
    register = write_csv(tmp_path / "register.csv", [*ain, *aisne])
    builder = ExtractBuilder(tmp_path / "dmp")
    for person in ain:
        dmp_id = builder.add_dmp(person)
        for _ in range(3):
            builder.add_document(dmp_id)
    builder.add_document(builder.dmps[0]["dmp_id"], hash="0" * 40)  # 1 of 10 held back: 10 % > 1 %
    extract = builder.write()

    assert main(["load", "register", str(register), "--date", "2022-01-28", "--json"]) == 0
    assert main(["load", "dmp", str(extract), "--json"]) == 0
    # Ain told on Monday 31 January (deadline 28 February), Aisne on Tuesday 1 February (1 March).
    assert main(["wave", "run", "W-01", "--departements", "01", "--date", "2022-01-31", "--approve", "--json"]) == 0
    assert main(["wave", "run", "W-02", "--departements", "02", "--date", "2022-02-01", "--approve", "--json"]) == 0
    capfd.readouterr()

    assert main(["advance", "--from", "2022-01-31", "--to", "2022-03-03", "--json"]) == 1
    printed = capfd.readouterr()
    summary = json.loads(printed.out[printed.out.index("{\n") if not printed.out.startswith("{") else 0 :])
    [failure] = summary["failures"]
    assert failure["dag_id"] == "dmp_migration" and failure["day"] == "2022-03-01"
    assert "10.00% is above the threshold 1.00%" in failure["reason"]
    assert Path(failure["report"]).is_file() and Path(failure["log"]).is_file()
    assert "dmp_migration failed on 2022-03-01" in printed.err and failure["report"] in printed.err
    # The other DAGs went on: Aisne's spaces are created on 2 March, the day after their deadline.
    assert {(run["dag_id"], run["day"]) for run in summary["runs"]} >= {
        ("notification_sending", "2022-01-31"),
        ("notification_sending", "2022-02-01"),
        ("space_creation", "2022-03-01"),
        ("space_creation", "2022-03-02"),
    }
    with get_engine().connect() as connection:
        created = {
            row[0]: as_date(row[1]) for row in connection.execute(text("SELECT nir, created_on FROM spaces"))
        }
        migrated = connection.execute(text("SELECT COUNT(*) FROM migrated_documents")).scalar()
    assert {created[person["nir"]] for person in ain} == {dt.date(2022, 3, 1)}
    assert {created[person["nir"]] for person in aisne} == {dt.date(2022, 3, 2)}
    assert migrated == 0
