"""The production stack of Airflow on this machine: `mes-rollout airflow up | down | status`.

`up` starts, each in its own process group, the api-server, the scheduler, the dag-processor, the
triggerer and, with PostgreSQL, N Celery workers (CeleryExecutor, Redis as broker, PostgreSQL as
Airflow's metadata database `airflow_mes` and result backend beside the pipeline's database).
With nothing configured it runs the same on the embedded set-up: LocalExecutor (tasks run by the
scheduler) and SQLite. Before it starts anything it migrates both databases and creates the
secrets and the login once (0600 files under the Airflow home); once the api-server answers it
sets the pools, the `mes_smtp` connection (when MES_SMTP_URL is set) and unpauses the DAGs, all
through Airflow's REST API. airflow.cfg stays the project's: the stack hands its choices to the
processes as AIRFLOW__SECTION__KEY variables. Under the Airflow home: `run/<process>.pid`,
`logs/stack/<process>.log` (the processes), `logs/` (the tasks), `stack/stack.json` (what runs).
`down` stops each process with the tasks it runs (Airflow starts each task in a process group of
its own). One worker can be killed as a machine that dies would be (`kill_worker`) and started
again (`start_worker`): tests/stack/test_worker_kill.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from console.airflow_home import AIRFLOW_CONFIG, DAGS_FOLDER, PLUGINS_FOLDER
from mes_rollout.config import Settings

CELERY, LOCAL = "CeleryExecutor", "LocalExecutor"
METADATA_DATABASE = "airflow_mes"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PORT = 8080
LOOPBACK = "127.0.0.1"
# A wave-triggering calendar stays paused until an operator starts the rollout: unpaused, its
# catch-up from its start date would trigger every planned wave at once.
KEPT_PAUSED = frozenset({"rollout_calendar", "weekly_wave"})
# The environment variable naming a Celery worker, read back by `worker_hostname` in its tasks.
WORKER_NAME_VARIABLE = "MES_STACK_WORKER"
SMTP_CONNECTION_ID = "mes_smtp"
START_TIMEOUT = 240.0
STOP_TIMEOUT = 30.0


class StackError(RuntimeError):
    """The stack cannot start or answer as asked: the message says what to do."""


@dataclass(frozen=True)
class StackUser:
    """A login of the Airflow UI and REST API (simple auth manager): a name and its role."""

    username: str
    role: str  # viewer, user, op or admin
    approves_waves: bool = False  # answers a wave's approval (never of a wave they triggered)


def stack_users() -> list[StackUser]:
    """Everyone who may log in. The one place to add a user (each gets a generated password).

    The simple auth manager's roles: viewer reads everything; user also triggers, clears and marks
    runs and answers approvals; op also sets pools, connections and variables; admin everything.
    Who answers a wave's approval is narrowed further by MES_WAVE_APPROVERS (`wave_approvers`)."""
    return [
        StackUser("admin", "admin"),
        # Operators: trigger waves and intakes, answer approvals (two, so that four eyes are possible).
        StackUser("operator1", "user", approves_waves=True),
        StackUser("operator2", "user", approves_waves=True),
        # Runs, clears and marks tasks, sets pools and connections; not an approver of waves.
        StackUser("engineer", "op"),
        # Reads runs, reports and the audit trail; triggers and approves nothing.
        StackUser("compliance", "viewer"),
    ]


def wave_approvers(settings_approvers: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Who may answer a wave's approval on the stack: MES_WAVE_APPROVERS when set, else the stack's
    operators. The approval task removes the login that triggered the wave (four eyes)."""
    return settings_approvers or tuple(user.username for user in stack_users() if user.approves_waves)


@dataclass(frozen=True)
class StackPlan:
    """What `up` starts, decided once from the settings and the options."""

    home: Path
    executor: str
    metadata_url: str  # Airflow's own database (SQLAlchemy URL)
    pipeline_url: str  # MES_DATABASE_URL
    var_dir: Path
    port: int
    workers: int = 0
    worker_concurrency: int = 2
    broker_url: str = ""
    wave_approvers: tuple[str, ...] = ()  # MES_WAVE_APPROVERS of the stack's processes
    smtp_url: str = ""  # MES_SMTP_URL when not embedded: becomes the `mes_smtp` connection
    smtp_slots: int = 2
    task_slots: int = 16
    log_server_port: int = 0
    trigger_log_server_port: int = 0
    unpause: tuple[str, ...] | None = None  # None: every DAG but KEPT_PAUSED
    # Seconds without a heartbeat before the scheduler declares a running task dead and retries
    # it ([scheduler] task_instance_heartbeat_timeout); None: Airflow's default, 300.
    task_heartbeat_timeout: int | None = None
    # The longest wait before a retry ([core] max_task_retry_delay, which caps the tasks' own
    # exponential backoff); None: Airflow's default, a day (the tasks' own cap, 10 minutes, rules).
    max_task_retry_delay: int | None = None
    # Variables every process of the stack gets beside the caller's (MES_* settings): kept in the
    # plan, so that a worker started again later runs with the same.
    environment: tuple[tuple[str, str], ...] = ()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def result_backend(self) -> str:
        return f"db+{self.metadata_url}"


@dataclass
class Process:
    name: str
    argv: list[str]
    environment: dict[str, str] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _with_database(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def plan_stack(
    settings: Settings,
    *,
    home: Path,
    workers: int = 2,
    celery: bool = False,
    port: int = DEFAULT_PORT,
    redis_url: str = DEFAULT_REDIS_URL,
    metadata_database: str = METADATA_DATABASE,
    worker_concurrency: int = 2,
    smtp_slots: int = 2,
    unpause: tuple[str, ...] | None = None,
    task_heartbeat_timeout: int | None = None,
    max_task_retry_delay: int | None = None,
    environment: Mapping[str, str] | None = None,
) -> StackPlan:
    """The stack of these settings: Celery where the pipeline's database is PostgreSQL (or asked
    for), else the LocalExecutor on SQLite."""
    for name, seconds in (
        ("task heartbeat timeout", task_heartbeat_timeout), ("max task retry delay", max_task_retry_delay)
    ):  # fmt: skip
        if seconds is not None and seconds < 1:
            raise StackError(f"{name}: at least 1 second")
    on_postgres = settings.dialect == "postgresql"
    if celery and not on_postgres:
        raise StackError(
            "--celery needs PostgreSQL: set MES_DATABASE_URL=postgresql+psycopg://USER@HOST/DB"
            " (Airflow's metadata database goes beside it, in database " + metadata_database + ")"
        )
    common: dict[str, Any] = {
        "home": home.resolve(),
        "pipeline_url": settings.database_url,
        "var_dir": settings.var_dir,
        "port": port,
        "smtp_url": "" if settings.is_embedded_smtp else settings.smtp_url,
        "smtp_slots": smtp_slots,
        "log_server_port": _free_port(),
        "trigger_log_server_port": _free_port(),
        "unpause": unpause,
        "wave_approvers": wave_approvers(settings.wave_approvers),
        "task_heartbeat_timeout": task_heartbeat_timeout,
        "max_task_retry_delay": max_task_retry_delay,
        "environment": tuple(sorted((environment or {}).items())),
    }
    if on_postgres:
        if workers < 1:
            raise StackError("--workers: at least one Celery worker")
        return StackPlan(
            executor=CELERY,
            metadata_url=_with_database(settings.database_url, metadata_database),
            workers=workers,
            worker_concurrency=worker_concurrency,
            broker_url=redis_url,
            task_slots=max(workers * worker_concurrency, 2),
            **common,
        )
    return StackPlan(
        executor=LOCAL, metadata_url=f"sqlite:///{home.resolve() / 'airflow.db'}", task_slots=2, **common
    )


# --- files under the Airflow home -------------------------------------------------------------


def _run_dir(home: Path) -> Path:
    return home / "run"


def _process_log_dir(home: Path) -> Path:
    return home / "logs" / "stack"


def _state_file(home: Path) -> Path:
    return home / "stack" / "stack.json"


def passwords_file(home: Path) -> Path:
    return home / "stack" / "passwords.json"


def _write_private(path: Path, content: str) -> None:
    """Write a file only its owner reads (0600), created so from the start."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(content)
    os.chmod(path, 0o600)


def _private_json(path: Path, fill: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    """A 0600 JSON object kept under the home: read it, let `fill` add what is missing, save."""
    values: dict[str, str] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if fill(values) or not path.exists():
        _write_private(path, json.dumps(values, indent=2) + "\n")
    os.chmod(path, 0o600)
    return values


def stack_secrets(home: Path) -> dict[str, str]:
    """The api-server's `secret_key` and the JWT `jwt_secret`: generated once, kept 0600."""

    def fill(values: dict[str, str]) -> bool:
        missing = [name for name in ("secret_key", "jwt_secret") if not values.get(name)]
        for name in missing:
            values[name] = secrets.token_urlsafe(48)
        return bool(missing)

    return _private_json(home / "stack" / "secrets.json", fill)


def stack_passwords(home: Path) -> dict[str, str]:
    """Each user's password (the simple auth manager's passwords file): generated once, 0600."""

    def fill(values: dict[str, str]) -> bool:
        missing = [user.username for user in stack_users() if not values.get(user.username)]
        for username in missing:
            values[username] = secrets.token_urlsafe(18)
        return bool(missing)

    return _private_json(passwords_file(home), fill)


def worker_hostname() -> str:
    """Airflow's `hostname_callable` in the Celery workers: the worker's own name, so that a task
    instance's `hostname` tells which of the workers of one machine ran it."""
    return os.environ.get(WORKER_NAME_VARIABLE) or socket.getfqdn()


# --- the processes --------------------------------------------------------------------------


def stack_environment(plan: StackPlan, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every process of the stack: the caller's (MES_* settings included) and
    Airflow's settings as AIRFLOW__ variables over the project's airflow.cfg."""
    keys = stack_secrets(plan.home)
    environment = dict(os.environ if base is None else base)
    environment.update(dict(plan.environment))
    environment.update(
        {
            "AIRFLOW_HOME": str(plan.home),
            "AIRFLOW_CONFIG": str(AIRFLOW_CONFIG),
            "MES_DATABASE_URL": plan.pipeline_url,
            "MES_VAR_DIR": str(plan.var_dir),
            "MES_WAVE_APPROVERS": ",".join(plan.wave_approvers),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": plan.executor,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{plan.url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{user.username}:{user.role}" for user in stack_users()
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(plan.home)),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": plan.metadata_url,
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__API__PORT": str(plan.port),
            "AIRFLOW__API__BASE_URL": plan.url,
            "AIRFLOW__API__SECRET_KEY": keys["secret_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(plan.home / "logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(plan.log_server_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(plan.trigger_log_server_port),
            # Asset-triggered and cleared runs start within seconds, not at the next minute.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        }
    )
    if plan.task_heartbeat_timeout is not None:
        environment.update(heartbeat_settings(plan.task_heartbeat_timeout))
    if plan.max_task_retry_delay is not None:
        environment["AIRFLOW__CORE__MAX_TASK_RETRY_DELAY"] = str(plan.max_task_retry_delay)
    if plan.metadata_url.startswith("postgresql"):
        # psycopg 3 is async too: without this Airflow would want asyncpg for its async engine.
        environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = plan.metadata_url
    if plan.executor == CELERY:
        environment.update(
            {
                "AIRFLOW__CELERY__BROKER_URL": plan.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": plan.result_backend,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(plan.worker_concurrency),
                # A task a killed worker held goes back to the queue (acks at the end of the task),
                # and the scheduler re-queues what no worker took in time.
                "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
            }
        )
    else:
        # SQLite takes one writer at a time: a few tasks at once.
        environment["AIRFLOW__CORE__PARALLELISM"] = "2"
    return environment


def heartbeat_settings(timeout: int) -> dict[str, str]:
    """How soon a task whose worker died is noticed: a running task's supervisor heartbeats at
    least six times within `timeout` ([workers] min_heartbeat_interval), the scheduler declares it
    dead after `timeout` seconds without one and looks for such tasks five times within it."""
    return {
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(timeout),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": str(
            max(1.0, min(10.0, timeout / 5))
        ),
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": str(max(1, min(5, timeout // 6))),
    }


def stack_processes(plan: StackPlan) -> list[Process]:
    airflow = str(Path(sys.executable).with_name("airflow"))
    processes = [
        Process("api-server", [airflow, "api-server", "--host", LOOPBACK, "--port", str(plan.port)]),
        Process("scheduler", [airflow, "scheduler"]),
        Process("dag-processor", [airflow, "dag-processor"]),
        Process("triggerer", [airflow, "triggerer"]),
    ]
    host = socket.gethostname().split(".", 1)[0]
    for number in range(1, plan.workers + 1):
        name = f"worker{number}@{host}"
        processes.append(
            Process(
                f"worker{number}",
                [
                    airflow,
                    "celery",
                    "worker",
                    "--celery-hostname",
                    name,
                    "--concurrency",
                    str(plan.worker_concurrency),
                    "--skip-serve-logs",
                ],  # fmt: skip
                {
                    WORKER_NAME_VARIABLE: name,
                    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "console.stack.worker_hostname",
                },
            )
        )
    return processes


def _pid_file(home: Path, name: str) -> Path:
    return _run_dir(home) / f"{name}.pid"


def _processes() -> Iterator[tuple[int, int, int, str]]:
    """Every live process (pid, parent pid, process group, state letter), read from /proc. A
    zombie (state Z: exited, not yet reaped by its parent) is reaped when it is a child of this
    process, and left out either way: it runs nothing."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            state, parent, group = stat[stat.rindex(")") + 2 :].split()[:3]
        except (OSError, ValueError, IndexError):
            continue
        if state == "Z":
            if int(parent) == os.getpid():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(int(entry.name), os.WNOHANG)
            continue
        yield int(entry.name), int(parent), int(group), state


def _group_members(group: int) -> list[tuple[int, str]]:
    """The live processes of a process group (pid, command line)."""
    members = []
    for pid, _, member_group, _ in _processes():
        if member_group != group:
            continue
        try:
            command = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        members.append((pid, command.decode(errors="replace")))
    return members


def _our_group(group: int) -> bool:
    """Does this process group still hold a process of the stack (a pid file may outlive a crash
    and its number be reused by another program)?"""
    return any("airflow" in command or "celery" in command for _, command in _group_members(group))


def _recorded_groups(home: Path) -> dict[str, int]:
    groups = {}
    for pid_file in sorted(_run_dir(home).glob("*.pid")):
        try:
            groups[pid_file.stem] = int(pid_file.read_text().strip())
        except ValueError:
            continue
    return groups


def start_process(home: Path, process: Process, environment: Mapping[str, str]) -> int:
    """Start one process of the stack in its own process group, its output in its log file."""
    log_path = _process_log_dir(home) / f"{process.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with log_path.open("ab") as log:
        log.write(f"\n--- {dt.datetime.now(dt.UTC).isoformat()} {' '.join(process.argv[1:])}\n".encode())
        log.flush()
        child = subprocess.Popen(
            process.argv,
            env={**environment, **process.environment},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: `down` stops it with its children
            cwd=str(home),
        )
    _run_dir(home).mkdir(parents=True, exist_ok=True, mode=0o700)
    _pid_file(home, process.name).write_text(f"{child.pid}\n")
    return child.pid


def _tree_groups(group: int) -> list[int]:
    """A process group of the stack, then the groups of the processes below it: Airflow's
    supervisors start each task process (and the triggerer its runner) in a group of its own, which
    a signal to the group above does not reach."""
    processes = list(_processes())
    children: dict[int, list[int]] = {}
    for pid, parent, _, _ in processes:
        children.setdefault(parent, []).append(pid)
    group_of = {pid: member_group for pid, _, member_group, _ in processes}
    tree = {pid for pid, _, member_group, _ in processes if member_group == group}
    pending = list(tree)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in tree:
                tree.add(child)
                pending.append(child)
    return [group, *sorted({group_of[pid] for pid in tree} - {group})]


def _signal_groups(groups: list[int], signum: int) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signum)


def stop_stack(home: Path, timeout: float = STOP_TIMEOUT) -> dict[str, Any]:
    """Stop every process of the stack recorded under the home, with its process group and those
    of the tasks it runs: SIGTERM, then SIGKILL after `timeout`. Works after a crash too (the pid
    files remain)."""
    home = home.resolve()
    trees: dict[str, list[int]] = {}
    gone = []
    for name, group in _recorded_groups(home).items():
        if _our_group(group):
            trees[name] = _tree_groups(group)
            _signal_groups(trees[name], signal.SIGTERM)
        else:
            gone.append(name)

    def alive(name: str) -> bool:
        return any(_group_members(group) for group in trees[name])

    deadline = time.monotonic() + timeout
    killed = []
    for name in trees:
        while alive(name) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(name):
            _signal_groups(trees[name], signal.SIGKILL)
            killed.append(name)
    wait_until = time.monotonic() + 10
    while any(alive(name) for name in killed) and time.monotonic() < wait_until:
        time.sleep(0.1)
    for name in [*trees, *gone]:
        _pid_file(home, name).unlink(missing_ok=True)
    return {"home": str(home), "stopped": list(trees), "killed_after_timeout": killed, "not_running": gone}


# --- one worker: killed as a dying machine would be, started again ---------------------------


def worker_process(hostname: str) -> str:
    """The stack's name of the Celery worker a task instance's `hostname` names (`worker2@vm` ->
    `worker2`: its pid file, its log)."""
    return hostname.split("@", 1)[0]


def worker_groups(home: Path, name: str) -> list[int]:
    """The process groups of one worker of the stack, its own first (the Celery main process and
    its pool), then the group of each task it runs."""
    group = _recorded_groups(home.resolve()).get(name)
    if group is None or not _our_group(group):
        raise StackError(f"{name} is not running under {home}")
    return _tree_groups(group)


def signal_worker(home: Path, name: str, signum: int) -> list[int]:
    """Send `signum` to every process group of a worker (`worker_groups`); returns the groups."""
    groups = worker_groups(home, name)
    _signal_groups(groups, signum)
    return groups


def freeze_worker(home: Path, name: str, timeout: float = 10.0) -> list[int]:
    """Stop every process of a worker where it stands (SIGSTOP) and return once all are stopped:
    from then on nothing of it runs, sends or reports until `thaw_worker` or `kill_worker`."""

    def frozen() -> list[int] | None:
        groups = signal_worker(home, name, signal.SIGSTOP)
        states = [state for _, _, group, state in _processes() if group in groups]
        # A task started meanwhile has a group of its own: the tree is read again until it holds still.
        still = set(worker_groups(home, name)) == set(groups) and all(state in "Tt" for state in states)
        return groups if still else None

    return list(wait_for(f"every process of {name} to stop", frozen, timeout, interval=0.01))


def thaw_worker(home: Path, name: str) -> list[int]:
    """Let a frozen worker go on (SIGCONT)."""
    return signal_worker(home, name, signal.SIGCONT)


def kill_worker(home: Path, name: str, timeout: float = 10.0) -> list[int]:
    """Kill a worker as a machine that dies would: every process of it frozen at once (nothing of
    it runs or reports from then on), then SIGKILL, tasks included; returns once none is left.
    Nothing tells the scheduler: it finds out when the tasks' heartbeats stop."""
    home = home.resolve()
    groups = freeze_worker(home, name, timeout)
    _signal_groups(groups, signal.SIGKILL)
    wait_for(
        f"the processes of {name} to die",
        lambda: not any(_group_members(group) for group in groups),
        timeout,
        interval=0.1,
    )
    return groups


def _workers(plan: StackPlan) -> dict[str, Process]:
    return {
        process.name: process
        for process in stack_processes(plan)
        if WORKER_NAME_VARIABLE in process.environment
    }


def start_worker(plan: StackPlan, name: str, *, wait: bool = True) -> int:
    """Start one Celery worker of the stack again (after it died or was killed): the name, command
    and environment `up` gave it. With `wait`, returns once it answers (`wait_for_worker`)."""
    workers = _workers(plan)
    if name not in workers:
        raise StackError(f"no Celery worker {name} in this stack (workers: {', '.join(workers) or 'none'})")
    group = _recorded_groups(plan.home).get(name)
    if group is not None and _our_group(group):
        raise StackError(f"{name} is running already")
    pid = start_process(plan.home, workers[name], stack_environment(plan))
    state_path = _state_file(plan.home)
    if state_path.exists():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        state.setdefault("pids", {})[name] = pid
        _write_private(state_path, json.dumps(state, indent=2))
    if wait:
        wait_for_worker(plan, name)
    return pid


def wait_for_worker(plan: StackPlan, name: str, timeout: float = START_TIMEOUT) -> str:
    """Return the Celery hostname of worker `name` once it answers the broker's ping; StackError
    if its process stops meanwhile."""
    hostname = _workers(plan)[name].environment[WORKER_NAME_VARIABLE]

    def answers() -> bool:
        group = _recorded_groups(plan.home).get(name)
        if group is None or not _our_group(group):
            raise StackError(f"{name} is not running: see {_process_log_dir(plan.home) / (name + '.log')}")
        return hostname in _celery_workers(plan.broker_url)

    wait_for(f"Celery worker {hostname} to answer", answers, timeout, 2.0)
    return hostname


def _all_alive(home: Path) -> None:
    """StackError naming the log of any process of the stack that has died."""
    for name, group in _recorded_groups(home).items():
        if not _our_group(group):
            raise StackError(f"{name} stopped: see {_process_log_dir(home) / (name + '.log')}")


def stack_status(home: Path) -> dict[str, Any]:
    """Which processes of the stack run, the URL and where the logs are."""
    home = home.resolve()
    state_path = _state_file(home)
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.exists() else {}
    processes = {
        name: {"pid": group, "running": _our_group(group)} for name, group in _recorded_groups(home).items()
    }
    return {
        "home": str(home),
        "url": state.get("url"),
        "executor": state.get("executor"),
        "processes": processes,
        "running": bool(processes) and all(process["running"] for process in processes.values()),
        "logs": str(_process_log_dir(home)),
    }


# --- the REST API ---------------------------------------------------------------------------


class AirflowApi:
    """Airflow's REST API (v2) with a JWT from POST /auth/token."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 30.0) -> None:
        import httpx

        self.client = httpx.Client(base_url=url, timeout=timeout)
        response = self.client.post("/auth/token", json={"username": username, "password": password})
        if response.status_code not in (200, 201):
            raise StackError(f"login as {username} refused: HTTP {response.status_code}")
        self.client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        response = self.client.request(method, f"/api/v2{path}", **kwargs)
        if response.status_code not in ok:
            raise StackError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def dag_ids(self) -> list[str]:
        return [dag["dag_id"] for dag in self.request("GET", "/dags", params={"limit": 100})["dags"]]

    def set_pool(self, name: str, slots: int, description: str) -> None:
        # default_pool takes its slots only.
        fields = ["slots"] if name == "default_pool" else ["slots", "description"]
        body = {"pool": name, "slots": slots, "description": description, "include_deferred": False}
        response = self.client.patch(f"/api/v2/pools/{name}", json=body, params={"update_mask": fields})
        if response.status_code == 404:
            self.request("POST", "/pools", json={"name": name, "slots": slots, "description": description})
        elif response.status_code != 200:
            raise StackError(f"pool {name}: HTTP {response.status_code} {response.text[:300]}")

    def set_connection(self, body: dict[str, Any]) -> None:
        connection_id = body["connection_id"]
        response = self.client.patch(f"/api/v2/connections/{connection_id}", json=body)
        if response.status_code == 404:
            self.request("POST", "/connections", json=body)
        elif response.status_code != 200:
            raise StackError(f"connection {connection_id}: HTTP {response.status_code}")

    def unpause(self, dag_id: str, paused: bool = False) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(
        self, dag_id: str, *, logical_date: dt.datetime | None, conf: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:  # fmt: skip
        """Trigger a run now (its logical date may be another day: the day it works on)."""
        body: dict[str, Any] = {
            "logical_date": logical_date.isoformat() if logical_date else None,
            "conf": conf or {},
        }
        if run_id:
            body["dag_run_id"] = run_id
        return str(self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return list(self.request("GET", path, params={"limit": 1000})["task_instances"])

    def answer_hitl(
        self, dag_id: str, run_id: str, task_id: str, option: str, params_input: dict[str, Any] | None = None,
        map_index: int = -1,
    ) -> dict[str, Any]:  # fmt: skip
        """Answer a human-in-the-loop task (the approval of a wave), as the UI's Required actions do."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"
        return dict(
            self.request("PATCH", path, json={"chosen_options": [option], "params_input": params_input or {}})
        )


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Call `check` until it returns something true; StackError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last_error = None
        except StackError:
            raise
        except Exception as error:  # noqa: BLE001 - not ready yet: try again until the deadline
            last_error = error
        time.sleep(interval)
    reason = f" (last: {type(last_error).__name__}: {str(last_error)[:200]})" if last_error else ""
    raise StackError(f"timed out after {timeout:.0f} s waiting for {what}{reason}")


def wait_for_dag_run(api: AirflowApi, dag_id: str, run_id: str, timeout: float) -> str:
    """The run's final state (success or failed), waiting for it at most `timeout` seconds."""

    def finished() -> str | None:
        state = str(api.dag_run(dag_id, run_id)["state"])
        return state if state in ("success", "failed") else None

    return str(wait_for(f"{dag_id} run {run_id} to finish", finished, timeout))


def _healthy(plan: StackPlan) -> bool:
    import httpx

    _all_alive(plan.home)
    response = httpx.get(f"{plan.url}/api/v2/monitor/health", timeout=5)
    if response.status_code != 200:
        return False
    health = response.json()
    wanted = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all(health.get(part, {}).get("status") == "healthy" for part in wanted)


def _celery_workers(broker_url: str) -> set[str]:
    from celery import Celery

    app = Celery(broker=broker_url)
    try:
        replies = app.control.ping(timeout=1.0) or []
    finally:
        app.close()
    return {name for reply in replies for name in reply}


def smtp_connection_body(smtp_url: str) -> dict[str, Any]:
    """The Airflow SMTP connection `mes_smtp` saying what MES_SMTP_URL says (the way
    `SmtpTarget.from_airflow_connection` reads it back)."""
    from notifications.email_client import SmtpTarget

    target = SmtpTarget.from_url(smtp_url)
    extra: dict[str, Any] = {
        "disable_ssl": not target.implicit_tls,
        "disable_tls": not target.starttls,
        "from_email": target.sender,
        "timeout": target.timeout,
    }
    if not target.validate_certs:
        extra["ssl_context"] = "none"
    if target.ca_file:
        extra["ca_file"] = target.ca_file
    return {
        "connection_id": SMTP_CONNECTION_ID,
        "conn_type": "smtp",
        "description": "The SMTP relay of mes-rollout (from MES_SMTP_URL at `mes-rollout airflow up`)",
        "host": target.host,
        "port": target.port,
        "login": target.username,
        "password": target.password,
        "extra": json.dumps(extra),
    }


def configure(plan: StackPlan, api: AirflowApi) -> dict[str, Any]:
    """Pools, the SMTP connection and the DAGs' pause state, through the REST API (safe to repeat)."""
    from mes_rollout.constants import SMTP_RELAY_POOL

    api.set_pool(
        SMTP_RELAY_POOL,
        plan.smtp_slots,
        "SMTP relay: one slot per sending task; slots x MES_SMTP_CONNECTIONS = connections at most",
    )
    # Every task holds a slot of default_pool: this bounds the tasks at once, hence the
    # connections the pipeline opens on its database (a task holds a few at most).
    api.set_pool("default_pool", plan.task_slots, "Tasks at once: bounds the pipeline's database connections")
    configured: dict[str, Any] = {
        "pools": {SMTP_RELAY_POOL: plan.smtp_slots, "default_pool": plan.task_slots}
    }
    if plan.smtp_url:
        api.set_connection(smtp_connection_body(plan.smtp_url))
        configured["connections"] = [SMTP_CONNECTION_ID]
    expected = sorted(path.stem for path in DAGS_FOLDER.glob("*.py") if path.stem != "__init__")
    wanted = (
        [dag_id for dag_id in expected if dag_id not in KEPT_PAUSED] if plan.unpause is None else plan.unpause
    )
    parsed = wait_for(
        "the dag-processor to parse the DAGs",
        lambda: (ids := set(api.dag_ids())) >= set(wanted) and ids,
        START_TIMEOUT,
        interval=2.0,
    )
    for dag_id in wanted:
        api.unpause(dag_id)
    configured["unpaused"] = list(wanted)
    configured["paused"] = sorted(set(parsed) - set(wanted))
    return configured


def _prepare_databases(plan: StackPlan, environment: Mapping[str, str]) -> None:
    from sqlalchemy import create_engine, text

    from mes_rollout.db import make_engine, upgrade

    pipeline = make_engine(plan.pipeline_url)
    try:
        upgrade(pipeline)
    finally:
        pipeline.dispose()
    if plan.metadata_url.startswith("postgresql"):
        database = plan.metadata_url.rsplit("/", 1)[1].split("?", 1)[0]
        admin = create_engine(_with_database(plan.metadata_url, "postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                exists = connection.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database}
                ).first()
                if exists is None:
                    connection.execute(text(f'CREATE DATABASE "{database}"'))
        finally:
            admin.dispose()
    log_path = _process_log_dir(plan.home) / "db-migrate.log"
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with log_path.open("ab") as log:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
            env=dict(environment), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            timeout=600, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise StackError(f"`airflow db migrate` failed: see {log_path}")


def start_stack(plan: StackPlan) -> dict[str, Any]:
    """Start the whole stack and wait until it answers; stop what it started if any part fails."""
    home = plan.home
    if any(_our_group(group) for group in _recorded_groups(home).values()):
        raise StackError(f"the stack of {home} is running already: `mes-rollout airflow down` first")
    stop_stack(home)  # pid files of a crashed stack: nothing left of them
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    passwords = stack_passwords(home)
    environment = stack_environment(plan)
    began = time.monotonic()
    try:
        _prepare_databases(plan, environment)
        pids = {process.name: start_process(home, process, environment) for process in stack_processes(plan)}
        _write_private(
            _state_file(home),
            json.dumps(
                {**{k: str(v) for k, v in asdict(plan).items()}, "url": plan.url, "pids": pids}, indent=2
            ),
        )
        wait_for("the api-server and the scheduler to be healthy", lambda: _healthy(plan), START_TIMEOUT, 2.0)
        admin = stack_users()[0].username
        api = AirflowApi(plan.url, admin, passwords[admin])
        try:
            configured = configure(plan, api)
        finally:
            api.close()
        workers: list[str] = []
        if plan.executor == CELERY:
            workers = sorted(
                wait_for(
                    f"{plan.workers} Celery workers",
                    lambda: (
                        (names := _celery_workers(plan.broker_url)) >= set()
                        and len(names) >= plan.workers
                        and names
                    ),
                    START_TIMEOUT,
                    2.0,
                )
            )
    except BaseException:
        stop_stack(home)
        raise
    return {
        "url": plan.url,
        "executor": plan.executor,
        "metadata_database": _safe_url(plan.metadata_url),
        "pipeline_database": _safe_url(plan.pipeline_url),
        "broker": plan.broker_url or None,
        "workers": workers,
        "logins": [
            {"username": user.username, "role": user.role, "password": passwords[user.username]}
            for user in stack_users()
        ],
        # The approval of a wave: one of these, never the login that triggered it.
        "wave_approvers": list(plan.wave_approvers),
        "passwords_file": str(passwords_file(home)),
        "process_logs": str(_process_log_dir(home)),
        "task_logs": str(home / "logs"),
        "pids": pids,
        **configured,
        "seconds": round(time.monotonic() - began, 1),
    }


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@dataclass
class RunningStack:
    """A started stack and a logged-in REST client (tests and scripts): `with running(plan) as s`."""

    plan: StackPlan
    api: AirflowApi
    summary: dict[str, Any]


@contextlib.contextmanager
def running(plan: StackPlan) -> Iterator[RunningStack]:
    """Start the stack, yield it with an admin REST client, and stop it whatever happens."""
    try:
        summary = start_stack(plan)
        admin = stack_users()[0].username
        api = AirflowApi(plan.url, admin, stack_passwords(plan.home)[admin])
        try:
            yield RunningStack(plan, api, summary)
        finally:
            api.close()
    finally:
        stop_stack(plan.home)
