"""The whole rollout under the real scheduler, as production runs it: Celery workers fed by Redis,
PostgreSQL for Airflow and the pipeline. A wave of a past day is triggered and approved through
the REST API, the sending of that day runs (the wave emits the approved-wave Asset); three days
later, within the window, decisions_intake loads an opposition and an activation and
delivery_feedback a bounce, and that day's sending prints and posts the bounced person's fallback
letter; space_creation runs for the day after the last deadline, the DMP migration starts from the
spaces Asset. The shards ran on both workers, and the end state is the one the in-process path
(`dag.test()`) reaches on the same data with the same runs.

It compares the whole pipeline database, so it is the first test of the session stack to write to
it (the files of tests/stack run in order, in one pytest worker)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from mes_rollout.db import as_datetime, make_engine, upgrade
from mes_rollout.runday import PARIS, business_day, today
from tests.enrolment.builders import decision, write_decisions
from tests.factories import make_nir, person_row, write_csv
from tests.migration.factories import ExtractBuilder
from tests.stack.conftest import SHARD_SIZE, STACK_GROUP

pytestmark = [pytest.mark.slow, pytest.mark.postgres, STACK_GROUP]

WAVE_ID = "E2E-01"
PEOPLE = 24  # 24 emails in shards of 5: five shards
RUN_TIMEOUT = 150.0
# Who answers, three days after the wave's day: indexes into the scenario's people (every third
# has a DMP: the activated person's is migrated with the others).
OPPOSED, ACTIVATED, BOUNCED = 1, 3, 2
FEEDBACK_COLUMNS = ("notification_id", "status", "occurred_at", "detail")


def _scenario(folder: Path) -> tuple[list[dict[str, str]], Path, Path]:
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
    return people, register, builder.write()


def _at(day: dt.date, hour: int) -> str:
    """An instant of a day in Paris, as the input files write it (ISO 8601 with its offset)."""
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=PARIS).isoformat()


def _decisions_file(folder: Path, people: list[dict[str, str]], received: dt.date) -> Path:
    """decisions.csv (INPUTS.md): one opposition and one activation, within the window."""
    return write_decisions(
        folder / "decisions.csv",
        [
            decision("E2E-D1", people[OPPOSED]["nir"], "opposition", _at(received, 9)),
            decision("E2E-D2", people[ACTIVATED]["nir"], "activation", _at(received, 10), "phone"),
        ],
    )


def _feedback_file(path: Path, engine: Engine, nir: str, occurred: dt.date) -> Path:
    """feedback.csv (INPUTS.md): the email to `nir` bounced (its id is this database's)."""
    with engine.connect() as connection:
        notification_id = connection.execute(
            text(
                "SELECT notification_id FROM notifications WHERE recipient_nir = :nir AND channel = 'email'"
            ),
            {"nir": nir},
        ).scalar_one()
    row = (notification_id, "permanent_failure", _at(occurred, 14), "550 5.1.1 user unknown")
    return write_csv(path, [dict(zip(FEEDBACK_COLUMNS, row, strict=True))], FEEDBACK_COLUMNS)


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
        "notifications": (
            "SELECT recipient_nir, channel, status, shard, attempts, print_batch IS NULL FROM notifications"
        ),
        "persons": "SELECT nir, email_bounced, address_returned FROM persons",
        "decisions": "SELECT reference, nir, event, received_at, channel, outcome FROM decisions",
        "feedback": "SELECT status, occurred_at, detail, outcome FROM feedback_events",
        "letters": "SELECT print_date, letters, state, posted_on FROM print_batches",
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


def _succeeded(api: Any, dag_id: str, run_id: str) -> None:
    from console.stack import wait_for_dag_run

    state = wait_for_dag_run(api, dag_id, run_id, RUN_TIMEOUT)
    states = {ti["task_id"]: ti["state"] for ti in api.task_instances(dag_id, run_id)}
    assert state == "success", (dag_id, states)


def test_a_wave_sending_answers_creation_and_migration_under_celery_equal_the_in_process_path(
    celery_stack: Any, airflow_home: Path, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from console.stack import wait_for_dag_run

    began = time.monotonic()
    api = celery_stack.api
    # The scheduler runs no run whose logical date is still to come, and space creation waits for
    # the opt-out deadline (a month after the sending, or after the fallback letter three days
    # later): the wave is sent on a past day, replayed as `advance` would.
    day = today() - dt.timedelta(days=50)
    answers_day = day + dt.timedelta(days=3)
    people, register, extract = _scenario(tmp_path / "inputs")
    stack_engine = _load(celery_stack.plan.pipeline_url, register, extract, day - dt.timedelta(days=3))
    with stack_engine.connect() as connection:
        waves = connection.execute(text("SELECT wave_id FROM waves")).scalars().all()
    assert waves == [], (
        f"the pipeline database of the session stack is not fresh (waves {waves}): run this test first"
    )

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

    operator = AirflowApi(
        celery_stack.plan.url, "operator1", stack_passwords(celery_stack.plan.home)["operator1"]
    )
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

    # Three days later, within the window: the answers and the delivery feedback, each loaded by
    # its DAG from a file named in the run's conf (both at once: they touch other people). The
    # activation publishes the spaces Asset; dmp_migration is paused meanwhile so that the
    # activated person's DMP goes with the creation day's migration, as on the in-process path.
    decisions = _decisions_file(tmp_path / "inputs", people, answers_day - dt.timedelta(days=1))
    feedback = _feedback_file(
        tmp_path / "inputs" / "feedback-stack.csv", stack_engine, people[BOUNCED]["nir"], day
    )
    api.unpause("dmp_migration", paused=True)
    answers_morning = _paris_morning(answers_day)
    decisions_run = api.trigger(
        "decisions_intake", logical_date=answers_morning, conf={"decisions_file": str(decisions)}
    )
    feedback_run = api.trigger(
        "delivery_feedback", logical_date=answers_morning, conf={"feedback_file": str(feedback)}
    )
    _succeeded(api, "decisions_intake", decisions_run)
    _succeeded(api, "delivery_feedback", feedback_run)
    published = [
        event for event in api.request("GET", "/assets/events", params={"limit": 100})["asset_events"]
        if event.get("source_dag_id") == "decisions_intake"
    ]  # fmt: skip
    assert len(published) == 1 and published[0]["extra"]["spaces_created"] == 1, published
    api.unpause("dmp_migration")
    # That day's sending prints the bounced person's fallback letter and posts it.
    letters_run = api.trigger("notification_sending", logical_date=answers_morning)
    _succeeded(api, "notification_sending", letters_run)
    creation_day = _creation_day(stack_engine)
    assert creation_day < today()

    # Creation on the day after the deadline (a triggered run for that day), then the migration
    # started by the spaces Asset (it stands on today, never before the creation day).
    creation_run = api.trigger("space_creation", logical_date=_paris_morning(creation_day))
    _succeeded(api, "space_creation", creation_run)
    _wait("the Asset-triggered dmp_migration", lambda: _finished_run(api, "dmp_migration", "asset_triggered"))
    scheduler_seconds = time.monotonic() - began
    # No live task was taken for a dead one (the stack's heartbeat timeout is short: conftest).
    timeouts = api.request("GET", "/eventLogs", params={"event": "heartbeat timeout"})["event_logs"]
    assert not timeouts, f"tasks declared dead while running (HEARTBEAT_TIMEOUT too short?): {timeouts}"

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

    # The same scenario in-process (dag.test) on another fresh database, the same runs with the
    # same conf (the feedback file names that database's message): the same end state.
    scheduled = _end_state(stack_engine)
    with stack_engine.connect() as connection:
        bounced = {
            tuple(str(value) for value in row)
            for row in connection.execute(
                text(
                    "SELECT channel, status, print_batch IS NULL FROM notifications WHERE recipient_nir = :nir"
                ),
                {"nir": people[BOUNCED]["nir"]},
            )
        }
    stack_engine.dispose()
    monkeypatch.setenv("MES_DATABASE_URL", postgres_url)
    monkeypatch.setenv("MES_VAR_DIR", str(tmp_path / "in-process"))
    monkeypatch.setenv("MES_SHARD_SIZE", str(SHARD_SIZE))
    from console.approval import APPROVE, run_wave
    from console.dagrun import run_dag
    from enrolment.waves import WaveRequest
    from mes_rollout.db import get_engine

    get_engine.cache_clear()
    in_process_engine = _load(postgres_url, register, extract, day - dt.timedelta(days=3))
    run_wave(WaveRequest(WAVE_ID, ("01",), day), day, decision=APPROVE, comment="e2e")
    run_dag("notification_sending", day)
    feedback = _feedback_file(
        tmp_path / "inputs" / "feedback-in-process.csv", in_process_engine, people[BOUNCED]["nir"], day
    )
    run_dag("decisions_intake", answers_day, {"decisions_file": str(decisions)})
    run_dag("delivery_feedback", answers_day, {"feedback_file": str(feedback)})
    run_dag("notification_sending", answers_day)
    run_dag("space_creation", creation_day)
    run_dag("dmp_migration", today())
    in_process = _end_state(in_process_engine)
    in_process_engine.dispose()
    get_engine.cache_clear()

    enrolments = {row[0]: row[2] for row in scheduled["enrolments"]}
    assert enrolments[people[OPPOSED]["nir"]] == "opposed", enrolments
    spaces = {row[0]: row[3] for row in scheduled["spaces"]}
    assert len(spaces) == PEOPLE - 1 and people[OPPOSED]["nir"] not in spaces, spaces
    assert spaces[people[ACTIVATED]["nir"]] == "activation", spaces
    assert bounced == {("email", "permanent_failure", "True"), ("letter", "posted", "False")}, bounced
    assert len(scheduled["documents"]) == 2 * len(range(0, PEOPLE, 3))
    for part in scheduled:
        assert scheduled[part] == in_process[part], part
    print(f"scheduler path: {scheduler_seconds:.0f} s; total {time.monotonic() - began:.0f} s")
