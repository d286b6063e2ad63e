"""A Celery worker dies in the middle of a shard: every process of it killed (SIGKILL), as when
its machine stops.

A wave of a past day, one shard of emails that the relay takes one a second, is sent by
notification_sending under the scheduler. While the shard runs on one worker, that worker is
killed at a moment when every message the relay received is recorded `sent`: the test freezes the
worker, looks, and lets it go on while a message is between the relay's answer and its record
(that message, and only such a one, would arrive twice: README "A worker dies"). The scheduler
notices the silence (the task's heartbeat timeout), retries the shard; the retry runs on the other
worker and takes over what the dead sender held, its lease having run out. The run succeeds, the
relay received exactly one message per recipient, every notification is `sent` once, and the end
state is the one the in-process path reaches on the same data, but for the messages the dead
sender held: claimed twice (attempts 2, one more audited claim each).

It runs after test_scheduler_e2e on the session stack (its wave is in another département, on
another day, and it compares only its own rows), and starts the killed worker again.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.utils
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from mes_rollout.db import make_engine, upgrade
from mes_rollout.runday import PARIS, today
from tests.enrolment.builders import plan_wave
from tests.factories import make_nir, person_row, write_csv
from tests.stack.conftest import HEARTBEAT_TIMEOUT, RETRY_DELAY, SEND_LEASE, STACK_GROUP

pytestmark = [pytest.mark.slow, pytest.mark.postgres, STACK_GROUP]

WAVE_ID = "KILL-01"
PEOPLE = 8  # one shard: eight seconds of sending at one message a second
SENT_BEFORE_THE_KILL = 3  # at least: the rest is held by the sender when it dies
DAG_ID, SHARD_TASK = "notification_sending", "send_email_shard"
# Noticed after HEARTBEAT_TIMEOUT, retried RETRY_DELAY later, then the run's last tasks.
RUN_TIMEOUT = HEARTBEAT_TIMEOUT + RETRY_DELAY + 120.0


def _register(folder: Path) -> Path:
    """People of Aisne (02) with emails: another département than the e2e test's wave."""
    people = [
        person_row(
            nir=make_nir("1", 1975, 3, "02691", 500 + index),
            email=f"k{index}@example.fr",
            sexe="M",
            date_naissance="1975-03-02",
            lieu_naissance="02691",
            code_postal="02100",
            commune="Saint-Quentin",
            departement="02",
        )
        for index in range(PEOPLE)
    ]
    return write_csv(folder / "register.csv", people)


def _plan(url: str, register: Path, var_dir: Path, day: dt.date) -> Engine:
    """The people loaded and the wave planned and approved straight through the library (the
    approval under the scheduler is test_scheduler_e2e's): one shard due on `day`."""
    from enrolment.register import load_register

    engine = make_engine(url)
    upgrade(engine)
    load_register(engine, register, as_of=day - dt.timedelta(days=3))
    plan_wave(engine, var_dir, WAVE_ID, ["02"], day)
    return engine


def _messages(engine: Engine) -> dict[str, tuple[str, str, int]]:
    """The wave's emails: id -> (address, status, attempts)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT notification_id, email, status, attempts FROM notifications WHERE wave_id = :w"),
            {"w": WAVE_ID},
        ).all()
    return {row.notification_id: (row.email, row.status, int(row.attempts)) for row in rows}


def _received(outbox: Path, messages: dict[str, tuple[str, str, int]]) -> Counter[str]:
    """How many copies of each of `messages` the relay kept, per recipient address: it keeps each
    message it accepts as a file of its own named after the message's id (the Message-ID), a
    second copy as `<id>.1.eml`. Each file found is checked to be addressed to that recipient."""
    parser = email.parser.BytesHeaderParser()
    received: Counter[str] = Counter()
    for path in outbox.glob("*.eml") if outbox.exists() else ():
        notification_id = path.name.split(".", 1)[0]
        if notification_id in messages:
            address = messages[notification_id][0]
            to = parser.parsebytes(path.read_bytes())["To"]
            assert to is None or email.utils.parseaddr(str(to))[1] == address, (path, to)
            received[address] += 1
    return received


def _end_state(engine: Engine) -> dict[str, Counter[tuple[str, ...]]]:
    """What the sending left for the wave's people, without ids, run ids nor wall-clock times."""
    messages = "(SELECT notification_id FROM notifications WHERE wave_id = :w)"
    people = "(SELECT nir FROM enrolments WHERE wave_id = :w)"
    queries = {
        "enrolments": "SELECT nir, state, state_reason, opt_out_deadline FROM enrolments WHERE wave_id = :w",
        "notifications": "SELECT recipient_nir, channel, status, shard, send_date FROM notifications WHERE wave_id = :w",
        "attempts": f"SELECT outcome, smtp_code FROM sending_attempts WHERE notification_id IN {messages}",
        "audit": (
            "SELECT entity, action, from_state, to_state FROM audit_trail"
            f" WHERE entity_id IN {messages} OR entity_id IN {people}"
        ),
    }
    with engine.connect() as connection:
        return {
            name: Counter(
                tuple(str(value) for value in row) for row in connection.execute(text(query), {"w": WAVE_ID})
            )
            for name, query in queries.items()
        }


def _shard(api: Any, run_id: str) -> dict[str, Any]:
    """The run's one shard task instance ({} until the shards are listed)."""
    shards = [ti for ti in api.task_instances(DAG_ID, run_id) if ti["task_id"] == SHARD_TASK]
    assert len(shards) <= 1, shards
    return shards[0] if shards else {}


def _kill_between_messages(
    stack: Any, engine: Engine, worker: str, outbox: Path
) -> tuple[dict[str, tuple[str, str, int]], int]:
    """Kill `worker` once some messages are sent and others not yet, at a moment when each message
    the relay kept is recorded `sent`. Returns the wave's messages as the kill left them, and how
    many times the worker was frozen and let go on first."""
    from console.stack import freeze_worker, kill_worker, thaw_worker

    deadline, thawed = time.monotonic() + 60, 0
    while time.monotonic() < deadline:
        statuses = Counter(status for _, status, _ in _messages(engine).values())
        assert statuses["sent"] < PEOPLE, f"the shard ended before the worker could be killed: {statuses}"
        if statuses["sent"] < SENT_BEFORE_THE_KILL:
            time.sleep(0.05)
            continue
        freeze_worker(stack.plan.home, worker)
        messages = _messages(engine)
        sent = {address for address, status, _ in messages.values() if status == "sent"}
        received = _received(outbox, messages)
        if set(received) == sent and set(received.values()) == {1} and len(sent) < PEOPLE:
            kill_worker(stack.plan.home, worker)
            return messages, thawed
        thaw_worker(stack.plan.home, worker)  # a message between the relay's answer and its record
        thawed += 1
        time.sleep(0.1)
    raise AssertionError("no moment to kill the worker between two messages within 60 s")


def test_a_worker_killed_in_the_middle_of_a_shard_the_retry_on_the_other_sends_each_message_once(
    celery_stack: Any, airflow_home: Path, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from console.stack import start_worker, wait_for, wait_for_dag_run, wait_for_worker, worker_process

    began = time.monotonic()
    stack, api = celery_stack, celery_stack.api
    assert SEND_LEASE < RETRY_DELAY  # the retry finds the dead sender's claims free
    day = today() - dt.timedelta(days=30)
    register = _register(tmp_path / "inputs")

    # No other run of the DAG under way (the one its unpausing started): one run at a time.
    wait_for(
        f"no {DAG_ID} run under way",
        lambda: not [run for run in api.dag_runs(DAG_ID) if run["state"] in ("queued", "running")],
        RUN_TIMEOUT,
        interval=2.0,
    )
    engine = _plan(stack.plan.pipeline_url, register, stack.plan.var_dir, day)
    planned = _messages(engine)
    addresses = {address for address, _, _ in planned.values()}
    assert len(addresses) == PEOPLE
    outbox = stack.plan.var_dir / "outbox"
    assert not _received(outbox, planned)

    run_id = api.trigger(DAG_ID, logical_date=dt.datetime(day.year, day.month, day.day, 8, tzinfo=PARIS))

    def shard_running() -> str | None:
        shard = _shard(api, run_id)
        assert shard.get("state") not in ("failed", "success", "upstream_failed", "skipped"), shard
        return str(shard["hostname"]) if shard.get("state") == "running" and shard["hostname"] else None

    hostname = str(wait_for("the shard to run on a worker", shard_running, RUN_TIMEOUT, interval=0.5))
    killed = worker_process(hostname)
    at_kill, thawed = _kill_between_messages(stack, engine, killed, outbox)
    killed_at = time.monotonic()
    held = {notification_id for notification_id, (_, status, _) in at_kill.items() if status == "sending"}
    assert held, at_kill  # the dead sender held messages it had not sent
    [other] = set(stack.summary["workers"]) - {hostname}

    # The scheduler hears nothing more from the task, declares it dead and retries it; the retry
    # can only go to the other worker. Once it runs there, the killed worker is started again.
    def retried() -> dict[str, Any] | None:
        shard = _shard(api, run_id)
        assert shard["state"] != "failed", shard
        return shard if shard["try_number"] >= 2 and shard["state"] in ("running", "success") else None

    retry = wait_for("the shard's retry", retried, RUN_TIMEOUT, interval=1.0)
    noticed_after = time.monotonic() - killed_at
    assert retry["hostname"] == other, retry
    start_worker(stack.plan, killed, wait=False)
    assert wait_for_dag_run(api, DAG_ID, run_id, RUN_TIMEOUT) == "success"

    shard = _shard(api, run_id)
    assert (shard["state"], shard["try_number"], shard["hostname"]) == ("success", 2, other), shard
    tries = api.request("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{SHARD_TASK}/0/tries")
    first = next(item for item in tries["task_instances"] if item["try_number"] == 1)
    assert first["hostname"] == hostname and first["state"] in ("failed", "up_for_retry"), first
    timeouts = api.request(
        "GET", "/eventLogs", params={"dag_id": DAG_ID, "run_id": run_id, "event": "heartbeat timeout"}
    )["event_logs"]
    assert [entry["task_id"] for entry in timeouts] == [SHARD_TASK], timeouts

    # Exactly one message per recipient; every notification sent, none twice; the retry re-sent
    # what the dead sender held (one more attempt each), and nothing it had recorded sent.
    messages = _messages(engine)
    assert {status for _, status, _ in messages.values()} == {"sent"}, messages
    assert _received(outbox, messages) == Counter(dict.fromkeys(addresses, 1))
    assert {
        notification_id for notification_id, (_, _, attempts) in messages.items() if attempts == 2
    } == held
    assert {attempts for _, _, attempts in messages.values()} <= {1, 2}
    scheduled = _end_state(engine)
    engine.dispose()
    assert scheduled["attempts"] == Counter({("sent", "250"): PEOPLE}), scheduled["attempts"]
    scheduler_seconds = time.monotonic() - began

    # The same sending in-process, without a kill, on a fresh database: the same end state but for
    # the takeover the audit trail records (one more claim, sending -> sending, each held message).
    monkeypatch.setenv("MES_DATABASE_URL", postgres_url)
    monkeypatch.setenv("MES_VAR_DIR", str(tmp_path / "in-process"))
    from console.dagrun import run_dag
    from mes_rollout.db import get_engine

    get_engine.cache_clear()
    in_process_engine = _plan(postgres_url, register, tmp_path / "in-process", day)
    run_dag(DAG_ID, day)
    in_process = _end_state(in_process_engine)
    in_process_engine.dispose()
    get_engine.cache_clear()

    takeovers = Counter({("notification", "status_changed", "sending", "sending"): len(held)})
    assert scheduled["audit"] - in_process["audit"] == takeovers, scheduled["audit"] - in_process["audit"]
    assert not in_process["audit"] - scheduled["audit"], in_process["audit"] - scheduled["audit"]
    for part in ("enrolments", "notifications", "attempts"):
        assert scheduled[part] == in_process[part], part

    assert wait_for_worker(stack.plan, killed) == hostname  # the stack whole again for what follows
    print(
        f"killed {hostname} holding {len(held)} of {PEOPLE} messages (after {thawed} looks that found one"
        f" between the relay's answer and its record); retried on {other} {noticed_after:.0f} s later;"
        f" scheduler path {scheduler_seconds:.0f} s; total {time.monotonic() - began:.0f} s"
    )
