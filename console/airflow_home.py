"""The Airflow home of in-process runs (CLI and tests): environment set before Airflow is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mes_rollout.config import PROJECT_ROOT

DAGS_FOLDER = PROJECT_ROOT / "dags"
PLUGINS_FOLDER = PROJECT_ROOT / "plugins"  # the Rollout page and the Wave view (plugins/mes_rollout_ui.py)
AIRFLOW_CONFIG = PROJECT_ROOT / "airflow.cfg"
# Creating a metadata database takes under a minute; a migration that waits longer is stuck.
_MIGRATE_TIMEOUT = 900


def airflow_environment(home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW_CONFIG": str(AIRFLOW_CONFIG),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }


def prepare(home: Path) -> None:
    """Point this process at the Airflow home and create its metadata database once.

    Must run before the first `import airflow` of the process: Airflow reads its settings then.
    """
    home.mkdir(parents=True, exist_ok=True)
    environment = airflow_environment(home)
    os.environ.update(environment)
    marker = home / ".migrated"
    if not marker.exists():
        subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
            check=True,
            env={**os.environ, **environment},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=_MIGRATE_TIMEOUT,
        )
        marker.touch()
