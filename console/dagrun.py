"""Running a DAG in-process with `dag.test()`: the one path the CLI and the tests use.

Airflow's own output during the run (its task logs, which `dag.test()` writes to the process's
standard output and error) goes to one log file per run under `$AIRFLOW_HOME/logs/mes-rollout/`,
not to the terminal. A failed run names that file, expanded, and the first line of each failed
task's error.

A process that runs many DAGs (`advance`, `simulate`) parses the DAG folder once: `dag.test()`
would otherwise parse every DAG file of the folder and write every DAG to the metadata database
again on each run (about a second a run), although nothing changed. The parsed folder is kept while
its files are unchanged, and written to a metadata database once. The metadata database, when it
is SQLite, commits without waiting for the disk (WAL with synchronous=NORMAL: a crash of the
machine may lose its last transactions, never corrupt it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from console import logfile
from console.airflow_home import DAGS_FOLDER, prepare
from mes_rollout.config import load_settings


@dataclass(frozen=True)
class TaskFailure:
    task: str
    error: str  # the first line of the task's exception, as Airflow logged it


class DagRunFailed(RuntimeError):
    """The DAG run ended in failure; `failed_tasks` names the task ids that failed, `log_path` the
    file holding the run's logs and `errors` the first line of each failed task's error."""

    def __init__(
        self,
        dag_id: str,
        state: str,
        failed_tasks: list[str],
        log_path: Path | None = None,
        errors: list[TaskFailure] | None = None,
    ) -> None:
        self.dag_id = dag_id
        self.failed_tasks = failed_tasks
        self.log_path = log_path
        self.errors = errors or []
        failed = [task for task in failed_tasks if any(error.task == task for error in self.errors)] or failed_tasks
        not_run = len(failed_tasks) - len(failed)
        lines = [
            f"DAG {dag_id} ended {state}; failed tasks: {', '.join(failed) or 'none'}"
            + (f" ({not_run} downstream not run)" if not_run else "")
        ]
        lines += [f"  {failure.task}: {failure.error}" for failure in self.errors]
        if log_path is not None:
            lines.append(f"  log: {log_path}")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class DagRunResult:
    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str]
    xcom_returns: dict[str, Any]
    log_path: Path | None = None
    errors: list[TaskFailure] = field(default_factory=list)


def ensure_airflow_home() -> Path:
    """The Airflow home of in-process runs: $AIRFLOW_HOME when the caller set one, else var/airflow."""
    home = Path(os.environ.get("AIRFLOW_HOME") or load_settings().var_dir / "airflow")
    prepare(home)
    # Airflow replaces the root logger's handlers when first imported: import it now, then put
    # the console's back (its log file; Airflow's own output goes to the run's log file).
    import airflow  # noqa: F401

    logfile.reclaim()
    return home


def run_log_path(home: Path, dag_id: str, logical_date: dt.date | dt.datetime) -> Path:
    """A new file for one in-process run's logs: named after the DAG, the logical date and the
    moment it started, never reused."""
    folder = home / "logs" / "mes-rollout" / dag_id
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    started = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    day = logical_date.isoformat()[:10]
    path = folder / f"{day}_{started}_{os.getpid()}.log"
    return path.resolve()


# Text streams over file descriptors 1 and 2 themselves, never closed: a logger that keeps one
# (Airflow's structlog loggers cache the stream they were created with) writes wherever the
# descriptor points at the moment, the run's log file during a run, the terminal after it.
_DESCRIPTOR_STREAMS = {
    fd: open(fd, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    for fd in (1, 2)
}


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's standard output and error, file descriptors included, to `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
    saved_out, saved_err = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    # Python-level writers too (a test runner may have replaced sys.stdout by its own object), and
    # logging handlers, which hold the stream object they were given (not files, nor in-memory
    # captures such as a test's caplog).
    sys.stdout, sys.stderr = _DESCRIPTOR_STREAMS[1], _DESCRIPTOR_STREAMS[2]
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and not isinstance(handler.stream, io.StringIO)
    ]
    handler_streams = [_swap_stream(handler, _DESCRIPTOR_STREAMS[2]) for handler in handlers]
    try:
        yield
    finally:
        for stream in _DESCRIPTOR_STREAMS.values():
            stream.flush()
        for handler, previous in zip(handlers, handler_streams, strict=True):
            _swap_stream(handler, previous)
        sys.stdout, sys.stderr = saved_streams
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)


def _swap_stream(handler: logging.StreamHandler, stream: Any) -> Any:
    """Point a handler at another stream without flushing the old one (it may be closed)."""
    with handler.lock or contextlib.nullcontext():
        previous, handler.stream = handler.stream, stream
    return previous


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The last line of a Python traceback: "module.Error: message" (or a bare "Error").
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*)?(?:Error|Exception|Failed|Timeout\w*|Interrupt)\b.*")


def first_errors(log_path: Path, failed_tasks: list[str]) -> list[TaskFailure]:
    """The first line of each failed task's exception, read from the run's log file."""
    try:
        lines = [_ANSI.sub("", line).strip() for line in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return []
    failures: list[TaskFailure] = []
    for task in failed_tasks:
        base = task.split("[", 1)[0]
        error = ""
        inside = False
        for line in lines:
            if f"task_id={base}" in line or f"task_id='{base}'" in line or f"'{base}'" in line and "DAG TEST" in line:
                inside = True
            if inside and _EXCEPTION_LINE.match(line) and not line.startswith("Traceback"):
                error = line[:300]
                break
        failures.append(TaskFailure(task, error or "upstream task failed"))
    return failures


# Whether the runs of this process share one parse of the DAG folder (see reparse_every_run).
_REUSE_PARSED_FOLDER = True


@contextlib.contextmanager
def reparse_every_run() -> Iterator[None]:
    """Within: every run parses its DAG file, and `dag.test()` parses the whole folder and writes
    it to the metadata database, as before the folder was kept (to compare the two)."""
    global _REUSE_PARSED_FOLDER
    saved, _REUSE_PARSED_FOLDER = _REUSE_PARSED_FOLDER, False
    try:
        yield
    finally:
        _REUSE_PARSED_FOLDER = saved


@dataclass
class _ParsedFolder:
    """A DAG folder parsed once (Airflow's BundleDagBag), and the metadata databases it was written to."""

    folder: Path
    bundle_name: str
    fingerprint: tuple[tuple[str, int, int], ...]
    bag: Any
    written_to: set[str] = field(default_factory=set)


_parsed_folders: dict[tuple[Path, str], _ParsedFolder] = {}


def _fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Each Python file of the folder: its path, modification time and size."""
    files = []
    for path in sorted(folder.rglob("*.py")):
        stat = path.stat()
        files.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(files)


def _parsed_folder(folder: Path, bundle_name: str) -> _ParsedFolder:
    """The folder parsed as `dag.test()` parses it, again only when one of its files changed."""
    from airflow.dag_processing.dagbag import BundleDagBag

    fingerprint = _fingerprint(folder)
    parsed = _parsed_folders.get((folder, bundle_name))
    if parsed is None or parsed.fingerprint != fingerprint:
        bag = BundleDagBag(dag_folder=folder, bundle_path=folder, bundle_name=bundle_name)
        parsed = _parsed_folders[(folder, bundle_name)] = _ParsedFolder(folder, bundle_name, fingerprint, bag)
    return parsed


def _bundle_of(folder: Path) -> str | None:
    """The name of the configured DAG bundle whose path is `folder` (None when none is)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    for bundle in DagBundlesManager().get_all_dag_bundles():
        path = getattr(bundle, "path", None)
        if path is not None and Path(path).resolve() == folder:
            return str(bundle.name)
    return None


@contextlib.contextmanager
def _folder_kept(parsed: _ParsedFolder, dag_id: str) -> Iterator[None]:
    """While `dag.test()` runs: its parse of the bundle is the kept one, and it is written to this
    metadata database only if it never was (or the DAG has no version there).

    `dag.test()` (Airflow 3.3) looks both up in airflow.dag_processing.dagbag when called: it builds
    a BundleDagBag of the DAG's bundle, then sync_bag_to_db, on every call. Where a later Airflow
    names them otherwise, runs go on as before, parsing and writing every time."""
    import airflow.dag_processing.dagbag as dagbag_module
    from airflow import settings

    real_bag = getattr(dagbag_module, "BundleDagBag", None)
    real_sync = getattr(dagbag_module, "sync_bag_to_db", None)
    if real_bag is None or real_sync is None:
        yield
        return
    database = str(settings.engine.url) if settings.engine is not None else ""

    def kept_bag(*args: Any, **kwargs: Any) -> Any:
        folder, bundle_path = kwargs.get("dag_folder"), kwargs.get("bundle_path")
        if (
            not args
            and folder is not None
            and bundle_path is not None
            and Path(folder).resolve() == Path(bundle_path).resolve() == parsed.folder
            and kwargs.get("bundle_name") == parsed.bundle_name
            and set(kwargs) == {"dag_folder", "bundle_path", "bundle_name"}
        ):
            return parsed.bag
        return real_bag(*args, **kwargs)

    def sync_once(dagbag: Any, *args: Any, **kwargs: Any) -> None:
        if dagbag is parsed.bag and database in parsed.written_to and _has_version(dag_id):
            return
        real_sync(dagbag, *args, **kwargs)
        if dagbag is parsed.bag:
            parsed.written_to.add(database)

    with (
        mock.patch.object(dagbag_module, "BundleDagBag", kept_bag),
        mock.patch.object(dagbag_module, "sync_bag_to_db", sync_once),
    ):
        yield


def _has_version(dag_id: str) -> bool:
    from airflow.models.dag_version import DagVersion

    return DagVersion.get_version(dag_id) is not None


def _synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _commit_without_fsync() -> None:
    """The SQLite metadata database: WAL (Airflow sets it) with synchronous=NORMAL, so that a
    commit does not wait for the disk (a few milliseconds each, thousands of commits a simulation)."""
    from airflow import settings
    from sqlalchemy import event

    engine = settings.engine
    if engine is None or engine.dialect.name != "sqlite" or event.contains(engine, "connect", _synchronous_normal):
        return
    event.listen(engine, "connect", _synchronous_normal)
    engine.dispose()  # the connections already pooled open again with it


def _dag_to_run(dag_id: str) -> tuple[Any, Any, contextlib.AbstractContextManager[None]]:
    """The DAG object, the bag it came from (for its import errors), and what to hold while it runs."""
    from airflow.dag_processing.dagbag import DagBag

    folder = DAGS_FOLDER.resolve()
    bundle = _bundle_of(folder) if _REUSE_PARSED_FOLDER else None
    if bundle is None:
        bag = DagBag(dag_folder=str(DAGS_FOLDER / f"{dag_id}.py"))
        return bag.dags.get(dag_id), bag, contextlib.nullcontext()
    parsed = _parsed_folder(folder, bundle)
    return parsed.bag.dags.get(dag_id), parsed.bag, _folder_kept(parsed, dag_id)


def run_dag(
    dag_id: str, logical_date: dt.date | dt.datetime, conf: dict[str, Any] | None = None, *, raise_on_failure: bool = True
) -> DagRunResult:
    """Run one DAG to its end in this process for the logical date, and report its task states."""
    home = ensure_airflow_home()
    import pendulum

    _commit_without_fsync()
    if isinstance(logical_date, dt.datetime):
        when = pendulum.instance(logical_date)
    else:
        when = pendulum.datetime(logical_date.year, logical_date.month, logical_date.day, tz="UTC")
    log_path = run_log_path(home, dag_id, logical_date)
    with _output_to(log_path):
        dag, bag, holding = _dag_to_run(dag_id)
        if dag is not None:
            with holding:
                run = dag.test(logical_date=when, run_conf=conf or {})
    if dag is None:
        problems = "; ".join(f"{path}: {error}" for path, error in bag.import_errors.items())
        raise LookupError(f"DAG {dag_id} not found in {DAGS_FOLDER}" + (f" ({problems})" if problems else ""))
    task_states: dict[str, str] = {}
    xcoms: dict[str, Any] = {}
    for instance in run.get_task_instances():
        key = instance.task_id if instance.map_index < 0 else f"{instance.task_id}[{instance.map_index}]"
        task_states[key] = str(instance.state)
        if instance.state == "success" and instance.map_index < 0:
            xcoms[instance.task_id] = instance.xcom_pull(task_ids=instance.task_id, key="return_value")
    logfile.reclaim()  # in case the run configured logging again
    failed = [task for task, state in task_states.items() if state == "failed"]
    errors = first_errors(log_path, failed) if failed else []
    result = DagRunResult(dag_id, run.run_id, str(run.state), task_states, xcoms, log_path, errors)
    if raise_on_failure and result.state != "success":
        not_run = [task for task, state in task_states.items() if state == "upstream_failed"]
        raise DagRunFailed(dag_id, result.state, failed + not_run, log_path, errors)
    return result
