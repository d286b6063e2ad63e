"""Without PostgreSQL its tests are skipped with the reason, and CI (MES_REQUIRE_POSTGRES=1) fails instead."""

from __future__ import annotations

import os
import subprocess
import sys

from mes_rollout.config import PROJECT_ROOT

# A database test of the suite, and a port where no server listens.
_ONE_DATABASE_TEST = "tests/enrolment/test_register.py::test_a_representative_known_from_an_earlier_extract_is_accepted"
_NOBODY_THERE = "postgresql+psycopg://postgres@127.0.0.1:9/postgres"


def _run_suite_part(require: bool) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MES_TEST_POSTGRES_URL": _NOBODY_THERE}
    environment.pop("MES_REQUIRE_POSTGRES", None)
    if require:
        environment["MES_REQUIRE_POSTGRES"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rs", _ONE_DATABASE_TEST],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_without_postgres_its_runs_are_skipped_with_the_reason() -> None:
    completed = _run_suite_part(require=False)
    assert completed.returncode == 0, completed.stdout[-2000:]
    assert "1 passed, 1 skipped" in completed.stdout
    assert "PostgreSQL not reachable at" in completed.stdout


def test_ci_refuses_the_skip() -> None:
    completed = _run_suite_part(require=True)
    assert completed.returncode != 0
    assert "MES_REQUIRE_POSTGRES=1 but PostgreSQL not reachable" in completed.stdout
