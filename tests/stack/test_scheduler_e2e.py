"""The whole rollout under the real scheduler, as production runs it: Celery workers fed by Redis,
PostgreSQL for Airflow and the pipeline. A wave of a past day is triggered and approved through
the REST API, the sending of that day runs (the wave emits the approved-wave Asset),
space_creation runs for the day after the deadline, the DMP migration starts from the spaces
Asset. The shards ran on both workers, and
the end state is the one the in-process path (`dag.test()`) reaches on the same data."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from mes_rollout.db import as_datetime, make_engine, upgrade
from mes_rollout.runday import PARIS, business_day, today
from tests.factories import make_nir, person_row, write_csv
from tests.migration.factories import ExtractBuilder

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

WAVE_ID = "E2E-01"
PEOPLE = 24  # 24 emails in shards of 5: five shards
RUN_TIMEOUT = 150.0


def _scenario(folder: Path) -> tuple[Path, Path]:
    """A register of tens of people of Ain with emails, and a DMP extract for a third of them."""
    people = [
        person_row(
            nir=make_nir("2", 1982, 8, "01053", 100 + index),
            email=f"p{index}@example.fr",
        )
        for index in range(PEOPLE)
    ]
    register = write_csv(folder / "register.csv", people)
    builder = ExtractBuilder(folder / "dmp")
    for person in people[::3]:
        dmp_id = builder.add_dmp(person)
        for _ in range(2):
            builder.add_document(dmp_id)
    return register, builder.write()


def _load(url: str, register: Path, extract: Path, as_of: dt.date) -> Engine:
    from enrolment.register import load_register
    from migration.intake import load_dmp_extract

    engine = make_engine(url)
    upgrade(engine)
    load_register(engine, register, as_of=as_of)
    load_dmp_extract(engine, extract, run_id=None)
    return engine


def _end_state(engine: Engine) -> dict[str, Any]:
    """What the rollout leaves, without run ids nor wall-clock times."""
    queries = {
        "enrolments": "SELECT nir, wave_id, state, state_reason FROM enrolments",
        "deadlines": "SELECT nir, opt_out_deadline FROM enrolments",
        "notifications": "SELECT recipient_nir, channel, status, shard, attempts FROM notifications",
        "spaces": "SELECT nir, state, created_on, creation_cause FROM spaces",
        "documents": "SELECT entry_uuid, nir, type_code, confidentiality, size FROM migrated_documents",
        "audit": "SELECT entity, action, COUNT(*) FROM audit_trail GROUP BY entity, action",
    }
    with engine.connect() as connection:
        return {
            name: sorted(tuple(str(value) for value in row) for row in connection.execute(text(query)))
            for name, query in queries.items()
        }


def _creation_day(engine: Engine) -> dt.date:
    """The day after the latest opt-out deadline: the day space_creation creates the spaces."""
    with engine.connect() as connection:
        deadline = as_datetime(
            connection.execute(text("SELECT MAX(opt_out_deadline) FROM enrolments")).scalar()
        )
    assert deadline is not None
    return business_day(deadline) + dt.timedelta(days=1)


def _paris_morning(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, 8, tzinfo=PARIS)


def _wait(what: str, check: Any, timeout: float = RUN_TIMEOUT) -> Any:
    from console.stack import wait_for

    return wait_for(what, check, timeout, interval=2.0)


def _finished_run(api: Any, dag_id: str, run_type: str) -> dict[str, Any] | None:
    runs = [run for run in api.dag_runs(dag_id) if run["run_type"] == run_type]
    assert not [run for run in runs if run["state"] == "failed"], f"{dag_id} failed: see the task logs"
    return next((run for run in runs if run["state"] == "success"), None)


def test_a_wave_sending_creation_and_migration_under_celery_equal_the_in_process_path(
    celery_stack: Any, airflow_home: Path, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from console.stack import wait_for_dag_run

    began = time.monotonic()
    api = celery_stack.api
    # The scheduler runs no run whose logical date is still to come, and space creation waits for
    # the opt-out deadline: the wave is sent on a past day, replayed as `advance` would.
    day = today() - dt.timedelta(days=40)
    register, extract = _scenario(tmp_path / "inputs")
    stack_engine = _load(celery_stack.plan.pipeline_url, register, extract, day - dt.timedelta(days=3))

    # notification_sending ran once when unpaused (nothing to send then). Paused while the wave is
    # planned, so that the Asset's run (which stands on the day it runs, today) does not send the
    # wave before the run of the wave's day, triggered here.
    from console.stack import StackError

    try:
        _wait(
            "the first scheduled notification_sending",
            lambda: _finished_run(api, "notification_sending", "scheduled"),
            60,
        )
    except StackError:
        pass  # no scheduled run was due: nothing to wait for
    api.unpause("notification_sending", paused=True)
    sending_run = api.trigger("notification_sending", logical_date=_paris_morning(day))

    # The wave, triggered and approved through the REST API.
    conf = {"wave_id": WAVE_ID, "departements": ["01"], "send_date": day.isoformat()}
    wave_run = api.trigger("enrolment_wave", logical_date=_paris_morning(day), conf=conf)

    def approval_waits() -> bool:
        states = {ti["task_id"]: ti["state"] for ti in api.task_instances("enrolment_wave", wave_run)}
        assert states.get("approval") not in ("failed", "upstream_failed"), states
        return states.get("approval") == "awaiting_input"

    _wait("the wave's approval request", approval_waits)
    # Four eyes: admin triggered the wave; an operator approves it.
    from console.stack import AirflowApi, stack_passwords

    operator = AirflowApi(celery_stack.plan.url, "operator1", stack_passwords(celery_stack.plan.home)["operator1"])
    answered = operator.answer_hitl("enrolment_wave", wave_run, "approval", "Approve", {"comment": "e2e"})
    assert answered["chosen_options"] == ["Approve"] and answered["responded_by"]["name"] == "operator1"
    assert wait_for_dag_run(api, "enrolment_wave", wave_run, RUN_TIMEOUT) == "success"

    api.unpause("notification_sending")
    assert wait_for_dag_run(api, "notification_sending", sending_run, RUN_TIMEOUT) == "success"
    # The approved wave emitted its Asset (sending's trigger when the DAG is not paused).
    events = api.request("GET", "/assets/events", params={"limit": 100})["asset_events"]
    assert any("mes-rollout://waves/approved" in str(event) for event in events), events
    with stack_engine.connect() as connection:
        statuses = dict(
            connection.execute(text("SELECT status, COUNT(*) FROM notifications GROUP BY status")).all()
        )
    assert statuses == {"sent": PEOPLE}, statuses
    creation_day = _creation_day(stack_engine)
    assert creation_day < today()

    # Creation on the day after the deadline (a triggered run for that day), then the migration
    # started by the spaces Asset (it stands on today, never before the creation day).
    creation_run = api.trigger("space_creation", logical_date=_paris_morning(creation_day))
    assert wait_for_dag_run(api, "space_creation", creation_run, RUN_TIMEOUT) == "success"
    _wait("the Asset-triggered dmp_migration", lambda: _finished_run(api, "dmp_migration", "asset_triggered"))
    scheduler_seconds = time.monotonic() - began

    # The shards spread over both workers.
    shards = [
        ti
        for ti in api.task_instances("notification_sending", sending_run)
        if ti["task_id"] == "send_email_shard"
    ]
    assert len(shards) >= 4 and {ti["state"] for ti in shards} == {"success"}
    workers = set(celery_stack.summary["workers"])
    assert len(workers) == 2 and {ti["hostname"] for ti in shards} == workers, [
        ti["hostname"] for ti in shards
    ]

    # The same scenario in-process (dag.test) on another fresh database: the same end state.
    scheduled = _end_state(stack_engine)
    stack_engine.dispose()
    monkeypatch.setenv("MES_DATABASE_URL", postgres_url)
    monkeypatch.setenv("MES_VAR_DIR", str(tmp_path / "in-process"))
    monkeypatch.setenv("MES_SHARD_SIZE", os.environ.get("MES_SHARD_SIZE", "5"))
    from console.approval import APPROVE, run_wave
    from console.dagrun import run_dag
    from enrolment.waves import WaveRequest
    from mes_rollout.db import get_engine

    get_engine.cache_clear()
    in_process_engine = _load(postgres_url, register, extract, day - dt.timedelta(days=3))
    run_wave(WaveRequest(WAVE_ID, ("01",), day), day, decision=APPROVE, comment="e2e")
    run_dag("notification_sending", day)
    run_dag("space_creation", creation_day)
    run_dag("dmp_migration", today())
    in_process = _end_state(in_process_engine)
    in_process_engine.dispose()
    get_engine.cache_clear()

    assert len(scheduled["spaces"]) == PEOPLE and len(scheduled["documents"]) == 2 * len(range(0, PEOPLE, 3))
    assert {row[2] for row in scheduled["notifications"]} == {"sent"}
    for part in scheduled:
        assert scheduled[part] == in_process[part], part
    print(f"scheduler path: {scheduler_seconds:.0f} s; total {time.monotonic() - began:.0f} s")
