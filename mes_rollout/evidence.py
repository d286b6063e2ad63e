"""Evidence files (compliance reports, Data Docs, print batches): written once under the folder of
the database's own rollout, recorded with their SHA-256 and provenance, checked by `verify`.

Ids of runs and batches are unique within one database only; a second database (a demo, a test,
a benchmark) sharing the same var/ makes the same ids. So every evidence file lives under
`<base>/<rollout_id>/...`, the rollout id being made once per database (`rollout_identity`), and
is never overwritten: `write_once` links a complete temporary file to its final name (the link
fails if the name is taken, like O_EXCL, and a reader never sees half a file); a file already
there with the same SHA-256 is a re-run and is accepted, any other is refused (`EvidenceConflict`).
Each file is recorded in `evidence_files` (path, kind, SHA-256, size, run id, provenance: the
database URL without its password, the code version, the inputs' SHA-256), in the caller's
transaction.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from mes_rollout.config import PROJECT_ROOT, Settings
from mes_rollout.files import create_private, private_folder

_HASH_BLOCK = 1 << 20


class EvidenceKind(StrEnum):
    """What an evidence file is."""

    MIGRATION_REPORT_JSON = "migration_report_json"
    MIGRATION_REPORT_HTML = "migration_report_html"
    DATA_DOCS = "data_docs"  # a page or an asset of a published Data Docs site
    PRINT_PDF = "print_pdf"
    PRINT_MANIFEST = "print_manifest"


class EvidenceConflict(FileExistsError):
    """Another content already holds (or was recorded under) this evidence path: never overwritten."""


@dataclass(frozen=True)
class EvidenceFile:
    path: Path
    kind: str
    sha256: str
    size: int
    written: bool  # False: the same bytes were already there (a re-run)


# --- the rollout's identity ---------------------------------------------------------------------


def rollout_id(connection: Connection) -> str:
    """This database's rollout id, made the first time it is asked for (in the caller's transaction)."""
    found = connection.execute(text("SELECT rollout_id FROM rollout_identity")).scalar()
    if found is not None:
        return str(found)
    connection.execute(
        text(
            "INSERT INTO rollout_identity (singleton, rollout_id, created_at) VALUES (1, :id, :now)"
            " ON CONFLICT DO NOTHING"
        ),
        {"id": f"rollout-{uuid.uuid4().hex[:12]}", "now": dt.datetime.now(dt.UTC)},
    )
    return str(connection.execute(text("SELECT rollout_id FROM rollout_identity")).scalar_one())


# --- provenance ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def code_version() -> str:
    """`git describe` of the checkout the code runs from, else the installed package's version."""
    try:
        described = subprocess.run(
            ["git", "describe", "--tags", "--always", "--dirty"],  # noqa: S607 - git from PATH, no shell
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        if described.stdout.strip():
            return f"git {described.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"mes-rollout {version('mes-rollout')}"
    except PackageNotFoundError:
        return "unknown"


def public_database_url(url: str) -> str:
    """The database URL without its password (and without its query string's secrets)."""
    parsed = make_url(url)
    return parsed._replace(password=None).difference_update_query(parsed.query).render_as_string(hide_password=False)


def input_digests(
    connection: Connection, kinds: Sequence[str], *, loaded_before: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """The input files of these kinds the pipeline read (before a moment, if given): kind, file
    name, SHA-256, when loaded. File names only: the folders are those of one machine."""
    if not kinds:
        return []
    marks = ", ".join(f":kind{n}" for n in range(len(kinds)))
    params: dict[str, Any] = {f"kind{n}": kind for n, kind in enumerate(kinds)}
    sql = f"SELECT kind, path, sha256, loaded_at FROM input_files WHERE kind IN ({marks})"  # noqa: S608 - bound marks
    if loaded_before is not None:
        sql += " AND loaded_at <= :before"
        params["before"] = loaded_before
    rows = connection.execute(text(sql + " ORDER BY loaded_at, id"), params).all()
    return [
        {"kind": kind, "file": Path(str(path)).name, "sha256": sha256, "loaded_at": str(loaded_at)}
        for kind, path, sha256, loaded_at in rows
    ]


def provenance(
    connection: Connection,
    database_url: str,
    run_id: str | None,
    *,
    input_kinds: Sequence[str] = (),
    inputs_before: dt.datetime | None = None,
) -> dict[str, Any]:
    """Where evidence comes from: the rollout, the database (no password), the run, the code, the inputs."""
    return {
        "rollout_id": rollout_id(connection),
        "database": public_database_url(database_url),
        "run_id": run_id,
        "code_version": code_version(),
        "inputs": input_digests(connection, input_kinds, loaded_before=inputs_before),
    }


# --- writing once -------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def write_once(
    path: Path,
    content: bytes,
    *,
    kind: str,
    run_id: str | None,
    provenance: dict[str, Any],
    connection: Connection,
    settings: Settings,
) -> EvidenceFile:
    """Write `content` at `path` unless it is there already, and record it in `evidence_files`.

    The same bytes already at `path` (a re-run) are accepted; other bytes, or anything but a
    regular file, raise EvidenceConflict, as does a path recorded with another SHA-256 (evidence
    deleted, then different content offered in its place). Files get settings.file_mode, missing
    folders settings.dir_mode.
    """
    digest = hashlib.sha256(content).hexdigest()
    recorded = connection.execute(
        text("SELECT sha256 FROM evidence_files WHERE path = :path"), {"path": str(path)}
    ).scalar()
    if recorded is not None and recorded != digest:
        raise EvidenceConflict(errno.EEXIST, "evidence recorded with another SHA-256: not replaced", str(path))
    private_folder(path.parent, settings.dir_mode)
    written = _create_new(path, content, settings.file_mode)
    if not written:
        if not path.is_file() or path.is_symlink():
            raise EvidenceConflict(errno.EEXIST, "something other than a file holds this evidence path", str(path))
        if sha256_of(path) != digest:
            raise EvidenceConflict(errno.EEXIST, "a different file is already there: not overwritten", str(path))
    connection.execute(
        text(
            "INSERT INTO evidence_files (path, kind, sha256, size, run_id, created_at, provenance)"
            " VALUES (:path, :kind, :sha256, :size, :run_id, :now, :provenance) ON CONFLICT (path) DO NOTHING"
        ),
        {
            "path": str(path),
            "kind": str(kind),
            "sha256": digest,
            "size": len(content),
            "run_id": run_id,
            "now": dt.datetime.now(dt.UTC),
            "provenance": json.dumps(provenance, sort_keys=True, default=str),
        },
    )
    return EvidenceFile(path, str(kind), digest, len(content), written)


def _create_new(path: Path, content: bytes, file_mode: int) -> bool:
    """Create `path` holding `content`, whole or not at all; False if the name is taken."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        descriptor = create_private(temporary, file_mode)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, path)  # atomic, and refuses a taken name (EEXIST)
        except FileExistsError:
            return False
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            return _create_exclusive(path, content, file_mode)  # a file system without hard links
        return True
    finally:
        temporary.unlink(missing_ok=True)


def _create_exclusive(path: Path, content: bytes, file_mode: int) -> bool:
    try:
        descriptor = create_private(path, file_mode)  # O_EXCL
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(content)
    return True


# --- checking -----------------------------------------------------------------------------------


@dataclass
class Verification:
    """Every recorded evidence file checked against its recorded SHA-256."""

    checked: int = 0
    intact: int = 0
    missing: list[dict[str, Any]] = field(default_factory=list)
    altered: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.altered

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def verify(connection: Connection, *, run_ids: Iterable[str] | None = None) -> Verification:
    """Check each recorded evidence file (of these runs, if given): present, same size, same SHA-256."""
    wanted = set(run_ids) if run_ids is not None else None
    result = Verification()
    rows = connection.execute(
        text("SELECT path, kind, sha256, size, run_id FROM evidence_files ORDER BY path")
    ).all()
    for path_text, kind, recorded_sha, recorded_size, run_id in rows:
        if wanted is not None and run_id not in wanted:
            continue
        result.checked += 1
        path = Path(path_text)
        entry = {"path": path_text, "kind": kind, "run_id": run_id, "sha256": recorded_sha}
        if not path.is_file():
            result.missing.append(entry)
            continue
        actual = sha256_of(path)
        if actual != recorded_sha:
            result.altered.append({**entry, "found_sha256": actual, "found_size": path.stat().st_size,
                                   "size": int(recorded_size)})  # fmt: skip
            continue
        result.intact += 1
    return result
