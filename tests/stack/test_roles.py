"""Roles and four-eyes approval on the stack as `mes-rollout airflow up` starts it (embedded set-up:
LocalExecutor on SQLite), through the REST API on loopback: compliance reads but triggers and
approves nothing, the engineer manages pools but does not approve, the operator who triggered a
wave cannot approve it, and a second operator's approval goes through (the wave is approved)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.factories import make_nir, person_row, write_csv
from tests.stack.conftest import STACK_GROUP, _free_port, _skip_or_fail

# Its own embedded stack, but in the stack tests' pytest worker: never two stacks at once.
pytestmark = [STACK_GROUP]

WAVE_ID = "ROLES-01"
PEOPLE = 6
WAIT = 150.0
HITL = "/dags/enrolment_wave/dagRuns/{run_id}/taskInstances/approval/-1/hitlDetails"


@pytest.fixture(scope="module")
def local_stack() -> Iterator[Any]:
    """The embedded stack (`console.stack.running`) on a fresh home and SQLite databases, with the
    DAG enrolment_wave unpaused; stopped and removed at the end whatever happens."""
    if not Path(sys.executable).with_name("airflow").exists():
        pytest.skip("skipped: no `airflow` executable beside the venv's python")
    from console.stack import StackError, plan_stack, running
    from enrolment.register import load_register
    from mes_rollout.config import load_settings
    from mes_rollout.db import make_engine, upgrade
    from mes_rollout.runday import today

    root = Path(tempfile.mkdtemp(prefix="mes-roles-test-"))
    names = ("MES_SMTP_URL", "MES_WAVE_APPROVERS", "MES_DATABASE_URL", "MES_VAR_DIR")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ.pop(name, None)  # the embedded relay; the stack's operators approve
    try:
        settings = load_settings(
            {
                **os.environ,
                "MES_DATABASE_URL": f"sqlite:///{root / 'mes.db'}",
                "MES_VAR_DIR": str(root / "var"),
            }
        )
        day = today() - dt.timedelta(days=2)
        people = [
            person_row(nir=make_nir("2", 1982, 8, "01053", 300 + n), email=f"r{n}@example.fr")
            for n in range(PEOPLE)
        ]
        engine = make_engine(settings.database_url)
        try:
            upgrade(engine)
            load_register(engine, write_csv(root / "register.csv", people), as_of=day - dt.timedelta(days=3))
        finally:
            engine.dispose()
        plan = plan_stack(settings, home=root / "airflow", port=_free_port(), unpause=("enrolment_wave",))
        try:
            with running(plan) as stack:
                yield stack, day
        except StackError as error:
            _skip_or_fail(f"the embedded Airflow stack did not start: {error}")
    finally:
        for name, value in saved.items():
            if value is not None:
                os.environ[name] = value
        shutil.rmtree(root, ignore_errors=True)


def _login(stack: Any, username: str) -> Any:
    from console.stack import AirflowApi, stack_passwords

    return AirflowApi(stack.plan.url, username, stack_passwords(stack.plan.home)[username])


def _failed_logs(home: Path, states: dict[str, str]) -> str:
    """The end of the task logs of the failed tasks (the stack's home goes with the fixture)."""
    failed = [task for task, state in states.items() if state == "failed"]
    logs = [
        path
        for path in (home / "logs").rglob("*.log")
        if any(f"task_id={task}" in str(path) for task in failed)
    ]
    return "\n".join(f"{path}:\n{path.read_text(errors='replace')[-3000:]}" for path in logs)


def _answer(api: Any, run_id: str, option: str = "Approve") -> Any:
    body = {"chosen_options": [option], "params_input": {"comment": "four eyes"}}
    return api.client.patch("/api/v2" + HITL.format(run_id=run_id), json=body)


def test_the_approval_is_assigned_to_the_approvers_but_the_trigger_and_rejects_on_timeout() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from dags.enrolment_wave import APPROVAL_TIMEOUT, approval_respondents, dag

    # No approvers set (in-process runs, the CLI): no assigned users, any login may answer.
    assert approval_respondents((), "operator1") is None
    assert approval_respondents(("operator1", "operator2"), "operator1") == [
        {"id": "operator2", "name": "operator2"}
    ]
    assert approval_respondents(("operator1", "operator2"), None) == [
        {"id": "operator1", "name": "operator1"},
        {"id": "operator2", "name": "operator2"},
    ]
    with pytest.raises(AirflowFailException, match="operator1"):
        approval_respondents(("operator1",), "operator1")  # nobody left: fail loudly, not "anybody"
    approval = dag.task_dict["approval"]
    assert approval.defaults == ["Reject"] and approval.response_timeout == APPROVAL_TIMEOUT


@pytest.mark.slow
def test_roles_and_four_eyes_approval_of_a_wave(local_stack: Any) -> None:
    from console.stack import stack_users, wait_for, wait_for_dag_run
    from mes_rollout.runday import PARIS

    stack, day = local_stack
    assert {(user.username, user.role) for user in stack_users()} >= {
        ("operator1", "user"), ("operator2", "user"), ("engineer", "op"), ("compliance", "viewer"),
    }  # fmt: skip
    assert stack.summary["wave_approvers"] == ["operator1", "operator2"]
    logins = {login["username"]: login for login in stack.summary["logins"]}
    assert set(logins) >= {"operator1", "operator2", "engineer", "compliance"} and all(
        login["password"] for login in logins.values()
    )
    assert (stack.plan.home / "stack" / "passwords.json").stat().st_mode & 0o777 == 0o600

    apis = {name: _login(stack, name) for name in ("operator1", "operator2", "engineer", "compliance")}
    try:
        operator1, operator2, engineer, compliance = (apis[name] for name in apis)
        logical = dt.datetime(day.year, day.month, day.day, 8, tzinfo=PARIS).isoformat()
        body = {
            "logical_date": logical,
            "conf": {"wave_id": WAVE_ID, "departements": ["01"], "send_date": day.isoformat()},
        }

        # Compliance reads, but triggers nothing; the engineer sets pools, an operator does not.
        refused = compliance.client.post("/api/v2/dags/enrolment_wave/dagRuns", json=body)
        assert refused.status_code == 403, refused.text
        assert compliance.client.get("/api/v2/dags/enrolment_wave/dagRuns").status_code == 200
        pool = {"name": "roles_test_pool", "slots": 1, "description": "roles test", "include_deferred": False}
        assert operator1.client.post("/api/v2/pools", json=pool).status_code == 403
        assert engineer.client.post("/api/v2/pools", json=pool).status_code == 201

        run_id = str(operator1.request("POST", "/dags/enrolment_wave/dagRuns", json=body)["dag_run_id"])
        assert operator1.dag_run("enrolment_wave", run_id)["triggering_user_name"] == "operator1"

        def approval_waits() -> bool:
            states = {ti["task_id"]: ti["state"] for ti in operator1.task_instances("enrolment_wave", run_id)}
            assert states.get("approval") not in ("failed", "upstream_failed", "skipped"), states
            return states.get("approval") == "awaiting_input"

        wait_for("the wave's approval request", approval_waits, WAIT, interval=2.0)
        detail = compliance.request("GET", HITL.format(run_id=run_id))
        assert {user["name"] for user in detail["assigned_users"]} == {"operator2"}, detail
        assert detail["defaults"] == ["Reject"], detail

        # Refused: compliance (a viewer), the engineer and the admin (not approvers), and the
        # operator who triggered the wave (four eyes). Each refusal leaves the request unanswered.
        for who, api in (("compliance", compliance), ("engineer", engineer), ("operator1", operator1)):
            response = _answer(api, run_id)
            assert response.status_code == 403, (who, response.status_code, response.text)
        assert _answer(stack.api, run_id).status_code == 403  # admin
        assert compliance.request("GET", HITL.format(run_id=run_id))["response_received"] is False

        answered = _answer(operator2, run_id)
        assert answered.status_code == 200, answered.text
        assert answered.json()["responded_by"]["name"] == "operator2"
        finished = wait_for_dag_run(operator2, "enrolment_wave", run_id, WAIT)
        states = {ti["task_id"]: ti["state"] for ti in operator2.task_instances("enrolment_wave", run_id)}
        assert finished == "success", (states, _failed_logs(stack.plan.home, states))
        assert states["approve_wave"] == "success" and states["reject_wave"] == "skipped", states
    finally:
        for api in apis.values():
            api.close()

    from mes_rollout.db import make_engine

    engine = make_engine(stack.plan.pipeline_url)
    try:
        with engine.connect() as connection:
            wave = connection.execute(
                text("SELECT state, decided_by, decision_comment FROM waves WHERE wave_id = :w"),
                {"w": WAVE_ID},
            ).one()
    finally:
        engine.dispose()
    assert tuple(wave) == ("approved", "operator2", "four eyes")
