"""Fixtures shared by the whole suite: a database on SQLite and on PostgreSQL, an Airflow home.

Database tests take the `engine` fixture and run twice: on a SQLite file and on a fresh
PostgreSQL database (127.0.0.1:5432, user postgres). Where PostgreSQL does not answer, its runs
are skipped with the reason; with MES_REQUIRE_POSTGRES=1 (CI) they fail instead.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Airflow reads its settings when first imported: point it at a throw-away home before any test
# module imports it.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="mes-airflow-test-"))
from console.airflow_home import airflow_environment  # noqa: E402

os.environ.update(airflow_environment(_AIRFLOW_HOME))
# A statement a test leaves waiting on a lock fails within minutes, naming the statement, instead of
# the hour production allows (MES_STATEMENT_TIMEOUT): no test statement takes more than seconds.
os.environ.setdefault("MES_STATEMENT_TIMEOUT", "300")

from sqlalchemy import Engine, create_engine, text  # noqa: E402

from mes_rollout.db import make_engine, upgrade  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get("MES_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE_POSTGRES = os.environ.get("MES_REQUIRE_POSTGRES") == "1"
_postgres_problem: list[str] = []


def _postgres_unavailable() -> str | None:
    """None where PostgreSQL answers, else why not (checked once per session)."""
    if not _postgres_problem:
        try:
            probe = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
            with probe.connect() as connection:
                connection.execute(text("SELECT 1"))
            probe.dispose()
            _postgres_problem.append("")
        except Exception as error:  # noqa: BLE001 - any failure means: no server to test against
            _postgres_problem.append(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {type(error).__name__}")
    return _postgres_problem[0] or None


def skip_or_fail_without_postgres() -> None:
    problem = _postgres_unavailable()
    if problem:
        if REQUIRE_POSTGRES:
            pytest.fail(f"MES_REQUIRE_POSTGRES=1 but {problem}")
        pytest.skip(f"skipped: {problem}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    skip_or_fail_without_postgres()
    name = f"mes_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mes.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Path:
    """MES_* settings of one test: its database and a var/ folder of its own."""
    var = tmp_path / "var"
    monkeypatch.setenv("MES_VAR_DIR", str(var))
    monkeypatch.setenv("MES_DATABASE_URL", database_url)
    from mes_rollout.db import get_engine

    get_engine.cache_clear()
    return var


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's throw-away Airflow home, its metadata database created once."""
    from console.airflow_home import prepare

    prepare(_AIRFLOW_HOME)
    return _AIRFLOW_HOME


# A test that hangs: pytest-timeout (pyproject.toml, 600 s) ends its worker, and under xdist the
# worker's stderr, where it prints the threads' stacks, is lost. So each test's stacks are written
# a minute earlier to a file in a folder of this run (var/test-hangs/<run>, named to the workers
# through MES_TEST_HANG_DIR; a pytest a test starts makes its own), and the summary prints them.
_HANG_DUMP_AFTER = 540.0
_HANG_DIR = "MES_TEST_HANG_DIR"


def _hang_folder() -> Path | None:
    """This run's folder of hang dumps, where the controller made one."""
    named = os.environ.get(_HANG_DIR)
    return Path(named) if named and Path(named).is_dir() else None


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        folder = Path(config.rootpath) / "var" / "test-hangs" / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[_HANG_DIR] = str(folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = _hang_folder()
    if not hasattr(config, "workerinput") and folder is not None and not any(folder.iterdir()):
        folder.rmdir()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    import faulthandler

    folder = _hang_folder()
    if folder is None:
        yield
        return
    timeout = item.config.getini("timeout")
    after = min(_HANG_DUMP_AFTER, float(timeout) * 0.9) if timeout else _HANG_DUMP_AFTER
    path = folder / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{os.getpid()}-{uuid.uuid4().hex[:6]}.txt"
    with path.open("w", encoding="utf-8") as dump:
        dump.write(f"{item.nodeid} still running after {after:.0f} s; every thread's stack:\n")
        dump.flush()
        header = dump.tell()
        faulthandler.dump_traceback_later(after, file=dump)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
    try:
        if path.stat().st_size <= header:  # nothing dumped: the test ended in time
            path.unlink()
    except FileNotFoundError:
        pass


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    folder = _hang_folder()
    dumps = sorted(folder.glob("*.txt")) if folder is not None else []
    for dump in dumps:
        terminalreporter.section(f"hung test ({dump.name})")
        terminalreporter.write(dump.read_text(encoding="utf-8", errors="replace")[-20000:] + "\n")
