"""The stack's hold on its processes, without Airflow: a task process in a process group of its
own (as Airflow's supervisor starts each task) is reached by `down` and by a worker's kill, a
frozen worker runs nothing until let go, an exited process does not hold `down` up, and the
options of a stack reach its processes' environment."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.stack.conftest import STACK_GROUP

pytestmark = [STACK_GROUP]

# A stand-in for a Celery worker: "celery" on its command line (the stack only signals its own
# processes), and a child in a group of its own that writes a tick every 50 ms, as a task would.
WORKER = """
import subprocess, sys, time
task = subprocess.Popen(
    [sys.executable, "-c", "import sys, time\\nwhile True:\\n    open(sys.argv[1], 'a').write('.')\\n    time.sleep(0.05)",
     sys.argv[1]],
    process_group=0,
)
open(sys.argv[2], "w").write(str(task.pid))
time.sleep(120)
"""


def _start(home: Path, tmp_path: Path) -> tuple[int, int, Path]:
    """The stand-in worker under `home` as the stack records it: its pid, its task's, the ticks."""
    from console.stack import Process, start_process

    ticks, task_pid = tmp_path / "ticks", tmp_path / "task.pid"
    argv = [sys.executable, "-c", WORKER, str(ticks), str(task_pid), "celery"]
    pid = start_process(home, Process("worker1", argv), dict(os.environ))
    deadline = time.monotonic() + 20
    while not (task_pid.exists() and task_pid.read_text() and ticks.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid, int(task_pid.read_text()), ticks


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_down_stops_the_tasks_in_their_own_groups_and_is_not_held_up_by_exited_processes(
    tmp_path: Path,
) -> None:
    from console.stack import stop_stack, worker_groups

    home = tmp_path / "home"
    pid, task, _ = _start(home, tmp_path)
    assert worker_groups(home, "worker1") == [pid, task]  # the task's group is its own
    began = time.monotonic()
    stopped = stop_stack(home, timeout=10)
    assert stopped["stopped"] == ["worker1"] and stopped["killed_after_timeout"] == []
    assert not _alive(pid) and not _alive(task)
    # The worker, a child of this process, exited at once; its zombie did not count as running.
    assert time.monotonic() - began < 5
    assert not (home / "run" / "worker1.pid").exists()


def test_a_frozen_worker_runs_nothing_until_thawed_and_a_killed_one_leaves_nothing(tmp_path: Path) -> None:
    from console.stack import StackError, freeze_worker, kill_worker, stop_stack, thaw_worker, worker_groups

    home = tmp_path / "home"
    pid, task, ticks = _start(home, tmp_path)
    try:
        groups = freeze_worker(home, "worker1")
        assert groups == [pid, task]
        frozen = ticks.read_text()
        time.sleep(0.3)
        assert ticks.read_text() == frozen  # the task stands still
        thaw_worker(home, "worker1")
        time.sleep(0.3)
        assert len(ticks.read_text()) > len(frozen)

        assert kill_worker(home, "worker1") == [pid, task]
        assert not _alive(pid) and not _alive(task)
        with pytest.raises(StackError, match="worker1 is not running"):
            worker_groups(home, "worker1")
    finally:
        stop_stack(home, timeout=5)
        for each in (pid, task):
            if _alive(each):
                os.kill(each, signal.SIGKILL)


def test_the_options_of_a_stack_reach_its_processes(tmp_path: Path) -> None:
    from console.stack import StackError, plan_stack, stack_environment, start_worker
    from mes_rollout.config import load_settings

    settings = load_settings(
        {"MES_DATABASE_URL": f"sqlite:///{tmp_path / 'mes.db'}", "MES_VAR_DIR": str(tmp_path / "var")}
    )
    plain = stack_environment(plan_stack(settings, home=tmp_path / "a"), base={})
    assert not [name for name in plain if "HEARTBEAT_TIMEOUT" in name or "RETRY_DELAY" in name]

    plan = plan_stack(
        settings,
        home=tmp_path / "b",
        task_heartbeat_timeout=15,
        max_task_retry_delay=10,
        environment={"MES_SEND_LEASE": "8", "MES_DATABASE_URL": "sqlite:///elsewhere.db"},
    )
    environment = stack_environment(plan, base={"MES_SMTP_RATE": "1"})
    assert environment["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] == "15"
    assert environment["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL"] == "3.0"
    assert environment["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"] == "2"
    assert environment["AIRFLOW__CORE__MAX_TASK_RETRY_DELAY"] == "10"
    assert environment["MES_SEND_LEASE"] == "8" and environment["MES_SMTP_RATE"] == "1"
    assert environment["MES_DATABASE_URL"] == settings.database_url  # the plan's own settings win
    with pytest.raises(StackError, match="at least 1 second"):
        plan_stack(settings, home=tmp_path / "c", task_heartbeat_timeout=0)
    with pytest.raises(StackError, match="no Celery worker worker1"):
        start_worker(plan, "worker1")  # the embedded set-up has none
