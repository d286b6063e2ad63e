"""notification_sending and delivery_feedback end to end under dag.test(), on the embedded relay."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
from pathlib import Path

import pytest

from console.cli import main
from console.dagrun import run_dag
from mes_rollout.constants import SMTP_RELAY_POOL, WAVE_APPROVED_ASSET
from mes_rollout.dag_defaults import TASK_TIMEOUT
from mes_rollout.db import get_engine
from tests.factories import write_csv
from tests.notifications.factories import adult, create_notification, create_wave, family, fetch, load_people


def test_the_sending_dag_is_wired_as_documented(airflow_home: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "notification_sending.py"))
    dag = bag.dags["notification_sending"]
    assert dag.max_active_runs == 1
    assert WAVE_APPROVED_ASSET in str(dag.timetable.asset_condition)
    shard_task = dag.task_dict["send_email_shard"]
    assert shard_task.pool == SMTP_RELAY_POOL
    assert dag.task_dict["settle_stuck"].trigger_rule == "all_done"
    assert {"list_email_shards"} == {t.task_id for t in shard_task.upstream_list}


@pytest.mark.parametrize("dag_id", ["notification_sending", "delivery_feedback"])
def test_every_task_of_the_notification_dags_has_the_shared_time_limit(airflow_home: Path, dag_id: str) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / f"{dag_id}.py"))
    dag = bag.dags[dag_id]
    assert {task.execution_timeout for task in dag.tasks} == {TASK_TIMEOUT}
    assert {task.owner for task in dag.tasks} == {"mes-rollout"}


def test_the_sending_dag_sends_prints_and_posts_and_a_rerun_sends_nothing_more(
    airflow_home: Path, settings_env: Path, tmp_path: Path
) -> None:
    engine = get_engine()
    people = [adult(email=f"dag{i}@example.fr") for i in range(3)]
    load_people(engine, tmp_path, people)
    parent, kids = family(tmp_path, engine, children=1, email="")
    wave = create_wave(engine, settings_env)
    for index, person in enumerate(people):
        create_notification(engine, settings_env, wave, person, shard=index)
    letter = create_notification(engine, settings_env, wave, parent, [parent, *kids], channel="letter")

    result = run_dag("notification_sending", dt.date(2022, 1, 31))

    assert result.state == "success"
    assert sorted(key for key in result.task_states if key.startswith("send_email_shard")) == [
        "send_email_shard[0]", "send_email_shard[1]", "send_email_shard[2]"
    ]
    assert result.xcom_returns["list_email_shards"] == [0, 1, 2]
    assert result.xcom_returns["print_and_post_letters"]["letters_printed"] == 1
    everything_returned = json.dumps(result.xcom_returns)
    secrets = [person["nir"] for person in [*people, parent, *kids]] + [person["email"] for person in people]
    assert not any(secret in everything_returned for secret in secrets)
    outbox = sorted((settings_env / "outbox").glob("*.eml"))
    assert len(outbox) == 3
    parsed = [email.message_from_bytes(path.read_bytes(), policy=email.policy.default) for path in outbox]
    assert {message["To"] for message in parsed} == {person["email"] for person in people}
    statuses = dict(fetch(engine, "SELECT notification_id, status FROM notifications"))
    assert statuses.pop(letter) == "posted" and set(statuses.values()) == {"sent"}
    assert {row.state for row in fetch(engine, "SELECT state FROM enrolments")} == {"notified"}

    again = run_dag("notification_sending", dt.date(2022, 1, 31))
    assert again.state == "success" and again.xcom_returns["list_email_shards"] == []
    assert len(list((settings_env / "outbox").glob("*.eml"))) == 3


def test_the_feedback_dag_applies_a_file_once(airflow_home: Path, settings_env: Path, tmp_path: Path) -> None:
    engine = get_engine()
    person = adult(email="bounce@example.fr")
    load_people(engine, tmp_path, [person])
    wave = create_wave(engine, settings_env)
    notification = create_notification(engine, settings_env, wave, person)
    run_dag("notification_sending", dt.date(2022, 1, 31))
    path = write_csv(
        tmp_path / "feedback.csv",
        [{"notification_id": notification, "status": "permanent_failure", "occurred_at": "2022-01-31T10:00:00+01:00",
          "detail": "550 user unknown"},
         {"notification_id": "unknown", "status": "delivered", "occurred_at": "2022-01-31T10:00:00+01:00",
          "detail": ""},
         {"notification_id": notification, "status": "delivered", "occurred_at": "2022-02-02T00:00:00+01:00",
          "detail": "after the run's day"}],
        ("notification_id", "status", "occurred_at", "detail"),
    )

    result = run_dag("delivery_feedback", dt.date(2022, 2, 1), {"feedback_file": str(path)})

    returned = result.xcom_returns["load_feedback"]
    assert (returned["read"], returned["accepted"], returned["quarantined"], returned["applied"]) == (3, 1, 2, 1)
    reasons = dict(fetch(engine, "SELECT line_no, reason_code FROM quarantine WHERE file_kind = 'feedback'"))
    assert reasons == {3: "UNKNOWN_NOTIFICATION", 4: "OCCURRED_IN_FUTURE"}  # the run's day, not the wall clock
    channels = dict(fetch(engine, "SELECT channel, status FROM notifications"))
    assert channels == {"email": "permanent_failure", "letter": "created"}
    again = run_dag("delivery_feedback", dt.date(2022, 2, 1), {"feedback_file": str(path)})
    assert again.xcom_returns["load_feedback"] == returned  # the first load's counts; nothing applied again
    assert len(fetch(engine, "SELECT * FROM feedback_events")) == 1
    assert len(fetch(engine, "SELECT * FROM notifications")) == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_loads_feedback_and_sends_for_a_date(
    airflow_home: Path, settings_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = get_engine()
    person = adult(email="cli@example.fr")
    load_people(engine, tmp_path, [person])
    wave = create_wave(engine, settings_env)
    notification = create_notification(engine, settings_env, wave, person)

    assert main(["send", "--date", "2022-01-31", "--json"]) == 0
    out = capsys.readouterr().out
    sent = json.loads(out[out.find("\n{\n") + 1 :] if not out.startswith("{") else out)  # after Airflow's log lines
    assert sent["state"] == "success" and sent["list_email_shards"] == [0]
    from airflow.models.pool import Pool

    assert Pool.get_pool(SMTP_RELAY_POOL) is not None  # the CLI created the pool the shard tasks take
    path = write_csv(
        tmp_path / "feedback.csv",
        [{"notification_id": notification, "status": "delivered", "occurred_at": "2022-01-31T10:00:00Z", "detail": ""},
         {"notification_id": notification, "status": "permanent_failure", "occurred_at": "2022-02-01T00:30:00+01:00",
          "detail": "the day after --date"}],
        ("notification_id", "status", "occurred_at", "detail"),
    )
    assert main(["load", "feedback", str(path), "--date", "2022-01-31", "--json"]) == 0
    loaded = json.loads(capsys.readouterr().out)
    assert loaded["rows"] == {"read": 2, "accepted": 1, "quarantined": 1} and loaded["applied"] == 1
    assert loaded["quarantine_reasons"] == {"OCCURRED_IN_FUTURE": 1}
