"""A private, throw-away PostgreSQL cluster the fault tests may restart, stop and crash at will.

The shared server (127.0.0.1:5432) serves every other PostgreSQL test, in parallel: a fault test
never touches it. `private_cluster` initialises a cluster of its own (PostgreSQL's binaries,
`initdb` run as the `postgres` user when the tests run as root, which initdb refuses), in a
temporary folder: data directory, Unix socket and log there, listening on a free loopback port,
trust authentication. One per test session (one per xdist worker), stopped and deleted at the end.
Each test takes fresh databases in it (`private_database`).

Where the binaries or the `postgres` user are missing the tests are skipped with the reason; with
MES_REQUIRE_POSTGRES=1 (CI) they fail instead, as the suite's other PostgreSQL tests do.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from notifications.loopback_smtp import free_port
from tests.conftest import REQUIRE_POSTGRES

_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))
_START_TIMEOUT = 60


def _binaries() -> Path | None:
    """The folder of initdb/pg_ctl: MES_TEST_POSTGRES_BIN, Debian's layout, else the PATH."""
    candidates = [os.environ.get("MES_TEST_POSTGRES_BIN", ""), *_BIN_CANDIDATES]
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found and (Path(found).parent / "pg_ctl").is_file() else None


def _unavailable() -> str | None:
    if _binaries() is None:
        return "no PostgreSQL binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin nor on the PATH"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root and no runuser to run initdb as 'postgres'"
    return None


@dataclass
class PrivateCluster:
    """One PostgreSQL cluster of this test session: where it is, and its life (start, stop, restart)."""

    bin_dir: Path
    root: Path  # owned by the cluster's user: data/, the socket, server.log
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *arguments: str, timeout: float = _START_TIMEOUT + 30) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / arguments[0]), *arguments[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if completed.returncode != 0:
            raise RuntimeError(
                f"{' '.join(arguments[:1])} failed ({completed.returncode}): {completed.stdout}{completed.stderr}"
                f"\n--- {self.log_file}:\n{self._log_tail()}"
            )
        return completed

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def _pg_ctl(self, action: str, *options: str) -> None:
        self._run(
            "pg_ctl", action, "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", str(_START_TIMEOUT), *options
        )

    def initialise(self) -> None:
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale",
            "--no-sync",
        )  # fmt: skip
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "60",
            "shared_buffers": "32MB",
            # The operating system is not what fails here, only the server: without fsync a
            # crashed server (stop -m immediate) still recovers every commit from the WAL the
            # kernel holds. synchronous_commit stays on: a commit the client saw is durable.
            "fsync": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# mes-rollout fault tests\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are ended and the server shuts down cleanly; `immediate`: it quits
        at once, as in a crash, and the next start runs crash recovery from the WAL."""
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """Stop in `mode`, then start again on the same port (pg_ctl restart waits for both)."""
        if mode == "fast":
            self._pg_ctl("restart", "-m", "fast")
        else:
            self.stop(mode)
            self.start()

    def create_database(self, prefix: str = "mes_fault") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return name

    def drop_database(self, name: str) -> None:
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()

    def destroy(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass  # not running (a test left it stopped): nothing to stop
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[PrivateCluster]:
    problem = _unavailable()
    if problem:
        if REQUIRE_POSTGRES:
            pytest.fail(f"MES_REQUIRE_POSTGRES=1 but no private PostgreSQL cluster can be made: {problem}")
        pytest.skip(f"skipped: no private PostgreSQL cluster can be made: {problem}")
    bin_dir = _binaries()
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix="mes-pg-faults-"))
    os.chmod(root, 0o700)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = PrivateCluster(bin_dir, root, free_port())
    try:
        cluster.initialise()
        cluster.start()
    except Exception as error:
        cluster.destroy()
        if REQUIRE_POSTGRES:
            raise
        pytest.skip(f"skipped: the private PostgreSQL cluster did not start: {error}")
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def private_database(private_cluster: PrivateCluster) -> Iterator[Callable[[], str]]:
    """Make fresh databases in the private cluster (their URLs); all dropped after the test.
    A test that left the server stopped has it started again first."""
    names: list[str] = []

    def make() -> str:
        names.append(private_cluster.create_database())
        return private_cluster.url(names[-1])

    yield make
    if not _answers(private_cluster):
        private_cluster.start()
    for name in names:
        private_cluster.drop_database(name)


def _answers(cluster: PrivateCluster) -> bool:
    probe = create_engine(cluster.url(), connect_args={"connect_timeout": 2})
    try:
        with probe.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - whatever the reason, it does not answer
        return False
    finally:
        probe.dispose()


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0, interval: float = 0.005) -> None:
    """Poll `check` until it holds; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(interval)
