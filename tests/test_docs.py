"""The documentation keeps up with the code: every `code:` and `test:` pointer in docs/ names a file,
function, class or test that exists; every reason code has its meaning written down; no document
names a folder of one machine."""

from __future__ import annotations

import ast
import enum
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

from mes_rollout import constants

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# `code: enrolment/window.py::last_day_to_oppose`, `code: sql/queries/enrolment_cohort.sql`,
# `test: tests/enrolment/test_window.py::test_deadline_examples`, `code: mes_rollout/nir.py::Nir.parse`
POINTER = re.compile(r"`(?P<kind>code|test): (?P<path>[^`:\s]+)(?:::(?P<name>[A-Za-z_][\w.]*))?`")
# The enums of constants.py whose values are reason codes: each value is explained in the docs.
REASON_ENUM_SUFFIXES = ("Reason", "Warning", "Exclusion")
# Folders that exist on one machine only (a developer's home, a CI workspace, a temporary folder).
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|home|tmp|Users)/")
SCANNED_SUFFIXES = (".md", ".cfg")


def _documents() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _pointers() -> list[tuple[str, str, str, str | None]]:
    """(where, kind, path, name) for every pointer in docs/**/*.md; where = file:line."""
    found = []
    for document in _documents():
        for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), start=1):
            for match in POINTER.finditer(line):
                where = f"{document.relative_to(ROOT)}:{number}"
                found.append((where, match["kind"], match["path"], match["name"]))
    return found


@cache
def _definitions(path: Path) -> frozenset[str]:
    """Names defined at module level (functions, classes, assigned constants) and `Class.method`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            for member in node.body:
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{node.name}.{member.name}")
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return frozenset(names)


def _problem(kind: str, path: str, name: str | None) -> str | None:
    target = ROOT / path
    if path.startswith("/") or ".." in Path(path).parts:
        return "a pointer is a path inside the repository"
    if not target.is_file():
        return "no such file"
    if kind == "test":
        if not (path.startswith("tests/") and target.suffix == ".py"):
            return "a test pointer names a Python file under tests/"
        if not name or not name.split(".")[-1].startswith("test_"):
            return "a test pointer names a test function (test_...)"
    if name is None:
        return None
    if target.suffix != ".py":
        return "only a Python file can name a function"
    if name not in _definitions(target):
        return f"{name} is not defined at module level (nor as a method of a module-level class)"
    return None


def test_the_docs_carry_pointers_to_code_and_tests() -> None:
    pointers = _pointers()
    kinds = {kind for _, kind, _, _ in pointers}
    assert kinds == {"code", "test"}, "the rules point at the code that implements them and the test that proves it"
    for rules in sorted((DOCS / "rules").glob("*.md")):
        mine = [kind for where, kind, _, _ in pointers if where.startswith(f"{rules.relative_to(ROOT)}:")]
        assert "code" in mine and "test" in mine, f"{rules.relative_to(ROOT)} has no code or no test pointer"


def test_every_pointer_resolves() -> None:
    broken = []
    for where, kind, path, name in _pointers():
        problem = _problem(kind, path, name)
        if problem:
            broken.append(f"{where}: `{kind}: {path}{'::' + name if name else ''}`: {problem}")
    assert not broken, "pointers that no longer resolve:\n" + "\n".join(broken)


def test_the_pointer_check_refuses_what_does_not_exist() -> None:
    assert _problem("code", "mes_rollout/nir.py", "Nir.parse") is None
    assert _problem("code", "sql/queries/enrolment_cohort.sql", None) is None
    assert _problem("code", "mes_rollout/nir.py", "Nir.no_such_method") is not None
    assert _problem("code", "mes_rollout/nir.py", "no_such_function") is not None
    assert _problem("code", "mes_rollout/no_such_module.py", None) is not None
    assert _problem("test", "tests/test_docs.py", "test_every_pointer_resolves") is None
    assert _problem("test", "tests/test_docs.py", "_pointers") is not None
    assert _problem("test", "mes_rollout/nir.py", "test_x") is not None
    line = "- `code: enrolment/window.py::last_day_to_oppose` `test: tests/enrolment/test_window.py::test_deadline_examples`"
    assert [(m["kind"], m["path"], m["name"]) for m in POINTER.finditer(line)] == [
        ("code", "enrolment/window.py", "last_day_to_oppose"),
        ("test", "tests/enrolment/test_window.py", "test_deadline_examples"),
    ]


def _reason_codes() -> dict[str, list[str]]:
    """Enum name -> its values, for every reason enum of mes_rollout/constants.py."""
    return {
        name: [str(member.value) for member in value]
        for name, value in vars(constants).items()
        if isinstance(value, type) and issubclass(value, enum.Enum) and name.endswith(REASON_ENUM_SUFFIXES)
    }


def test_every_reason_code_is_explained() -> None:
    text = "\n".join(path.read_text(encoding="utf-8") for path in [*sorted((DOCS / "rules").glob("*.md")), DOCS / "inputs.md"])
    # A code is explained on a line of a table or a list that starts with it: "| `NIR_KEY` | ..." or "- `NIR_KEY`: ...".
    explained = set(re.findall(r"^(?:\|\s*|[-*]\s+)`([A-Z][A-Z0-9_]+)`", text, flags=re.MULTILINE))
    reasons = _reason_codes()
    assert {"RegisterReason", "HoldBackReason", "DecisionReason", "WaveExclusion"} <= set(reasons)
    missing = sorted(f"{enum_name}.{code}" for enum_name, codes in reasons.items() for code in codes if code not in explained)
    assert not missing, "reason codes without a one-line meaning in docs/rules or docs/inputs.md: " + ", ".join(missing)


def _repository_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        pytest.skip("not a git working tree: no list of the repository's files")
    names = sorted({name for name in listed.decode("utf-8").split("\0") if name})
    return [ROOT / name for name in names if not name.startswith(".git/") and (ROOT / name).is_file()]


def test_no_document_names_a_folder_of_one_machine() -> None:
    found = []
    for path in _repository_files():
        if path.suffix not in SCANNED_SUFFIXES:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if MACHINE_PATH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "absolute paths of one machine (write a path relative to the project):\n" + "\n".join(found)


def test_the_machine_path_pattern() -> None:
    # Built from pieces, so that this test file itself names no machine path.
    assert MACHINE_PATH.search("Venv: `" + "/" + "work/main/.venv`")
    assert MACHINE_PATH.search("see file:///tmp/extract")
    assert MACHINE_PATH.search("(" + "/" + "home/alice/mes-rollout)")
    assert not MACHINE_PATH.search("the project's .venv, var/reports/migration/<run_id>/")
    assert not MACHINE_PATH.search("https://example.org/home/index.html")
    assert not MACHINE_PATH.search("mes-rollout://spaces/created")
