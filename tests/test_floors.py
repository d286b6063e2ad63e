"""The floors are enforced: import-linter's contracts (pyproject.toml) pass on the tree, and fail on
a copy of it given one upward import and one cycle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from mes_rollout.config import PROJECT_ROOT

PACKAGES = ("mes_rollout", "enrolment", "notifications", "migration", "validation", "console", "dags")
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(PROJECT_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_tree_keeps_its_floors() -> None:
    result = _lint(PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_an_upward_import_breaks_the_floors(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    config = root / "mes_rollout" / "config.py"
    config.write_text(config.read_text() + "\nfrom enrolment import window  # noqa: E402, F401\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "mes_rollout.config -> enrolment.window" in result.stdout


def test_a_cycle_inside_a_package_breaks_the_floors(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    nir = root / "mes_rollout" / "nir.py"
    nir.write_text(nir.read_text() + "\nimport mes_rollout.postal_address  # noqa: E402, F401\n")
    address = root / "mes_rollout" / "postal_address.py"
    address.write_text(address.read_text() + "\nimport mes_rollout.nir  # noqa: E402, F401\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "No cycles are allowed in mes_rollout" in result.stdout
