"""A small rollout run through the real commands, and Airflow's API server serving the plugin on
loopback with the simple auth manager (compliance: viewer, operator: user).

Session fixtures, each process stopped in a finally: `rollout` runs tests/ui/populate.py in a
subprocess (its own MES_VAR_DIR and Airflow home); `api_server` starts `airflow api-server` on a
free loopback port against that Airflow home (the project's airflow.cfg, plugins/ as the plugins
folder), waits for its health check, and reads the generated passwords.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from console.airflow_home import airflow_environment
from mes_rollout.config import PROJECT_ROOT

PLUGINS_FOLDER = PROJECT_ROOT / "plugins"
USERS = {"compliance": "viewer", "operator": "user"}
ARTIFACTS = PROJECT_ROOT / "var" / "test-artifacts" / "ui"
POPULATE_TIMEOUT = 240
SERVER_START_TIMEOUT = 120
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Rollout:
    var_dir: Path
    airflow_home: Path
    status: dict[str, Any]

    @property
    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            **airflow_environment(self.airflow_home),
            "MES_VAR_DIR": str(self.var_dir),
            "MES_DATABASE_URL": f"sqlite:///{self.var_dir / 'mes-rollout.db'}",
        }


@dataclass(frozen=True)
class ApiServer:
    base_url: str
    passwords: dict[str, str]

    def token(self, username: str) -> str:
        body = json.dumps({"username": username, "password": self.passwords[username]}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(json.load(response)["access_token"])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the process group we started (the API server forks workers)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def rollout() -> Iterator[Rollout]:
    reuse = os.environ.get("MES_UI_TEST_ROLLOUT")  # a folder populated by an earlier session (local runs)
    if reuse and (Path(reuse) / "status.json").is_file():
        folder = Path(reuse)
        yield Rollout(folder / "var", folder / "var" / "airflow", json.loads((folder / "status.json").read_text()))
        return
    folder = Path(tempfile.mkdtemp(prefix="mes-ui-"))
    var_dir, airflow_home = folder / "var", folder / "var" / "airflow"
    var_dir.mkdir()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    partial = Rollout(var_dir, airflow_home, {})
    log = (ARTIFACTS / "populate.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ui.populate"], cwd=PROJECT_ROOT, env=partial.environment,
        stdout=subprocess.PIPE, stderr=log, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = process.communicate(timeout=POPULATE_TIMEOUT)
    finally:
        _stop(process)
        log.close()
    assert process.returncode == 0, f"populating the rollout failed: see {ARTIFACTS / 'populate.log'}"
    status = json.loads(out.decode().strip().splitlines()[-1])
    (folder / "status.json").write_text(json.dumps(status))
    try:
        yield Rollout(var_dir, airflow_home, status)
    finally:
        if not os.environ.get("MES_UI_TEST_KEEP"):
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def api_server(rollout: Rollout) -> Iterator[ApiServer]:
    port = _free_port()
    passwords_file = rollout.airflow_home / "passwords.json"
    environment = {
        **rollout.environment,
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{user}:{role}" for user, role in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
    }
    log = (ARTIFACTS / "api-server.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "airflow"), "api-server", "--port", str(port), "--host", "127.0.0.1"],
        cwd=PROJECT_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"airflow api-server exited ({process.returncode}): see {ARTIFACTS / 'api-server.log'}")
            try:
                with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"airflow api-server did not answer in {SERVER_START_TIMEOUT}s")
                time.sleep(1)
        passwords = json.loads(passwords_file.read_text())
        yield ApiServer(base_url, passwords)
    finally:
        _stop(process)
        log.close()
