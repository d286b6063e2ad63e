"""Content is read only from regular files inside the extract: links, FIFOs, devices, sockets and
oversized files are held back with their own reason, without blocking and without reading past the
declared size; what is migrated is stored owner-only (MES_FILE_MODE)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mes_rollout.config import load_settings
from mes_rollout.constants import HoldBackReason
from migration.content import CopyJob, CopyResult, copy_one
from migration.intake import load_dmp_extract
from migration.store import FolderStore, SizeMismatch, open_store
from tests.migration.factories import (
    ExtractBuilder,
    a_person,
    decide_and_commit,
    insert_space,
    load_people,
    outcomes,
)
from validation.report import build_report

MAX_BYTES = 256 * 1024 * 1024
PASSWD = Path("/etc/passwd")


def sha1(content: bytes) -> str:
    return hashlib.sha1(content).hexdigest()


def visible_files(store: FolderStore) -> list[Path]:
    return [path for path in store.root.rglob("*") if path.is_file() and ".tmp" not in path.parts]


@pytest.fixture
def extract(tmp_path: Path) -> Path:
    folder = tmp_path / "extract"
    (folder / "content").mkdir(parents=True)
    return folder


def finish_within(seconds: float, call: Callable[[], CopyResult], unblock: Callable[[], None]) -> CopyResult:
    """Run `call` in a thread; if it is still blocked after `seconds`, unblock it and fail."""
    results: list[CopyResult] = []
    worker = threading.Thread(target=lambda: results.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        unblock()
        worker.join(5)
        pytest.fail(f"copying did not finish within {seconds} s: it blocked")
    return results[0]


def test_a_link_to_a_file_outside_is_held_back_not_read(tmp_path: Path, extract: Path) -> None:
    secret = PASSWD.read_bytes()
    (extract / "content" / "evil_link").symlink_to(PASSWD)
    store = FolderStore(tmp_path / "store")
    job = CopyJob(str(extract), "content/evil_link", len(secret), sha1(secret))  # declared to match
    assert copy_one(store, job, max_bytes=MAX_BYTES) == CopyResult(None, HoldBackReason.CONTENT_LINK)
    assert visible_files(store) == []


def test_a_linked_folder_is_held_back(tmp_path: Path, extract: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = b"root:x:0:0:root:/root:/bin/bash\n"
    (outside / "passwd").write_bytes(secret)
    (extract / "content" / "linkdir").symlink_to(outside, target_is_directory=True)
    (extract / "linked").symlink_to(extract / "content", target_is_directory=True)  # a link inside, too
    store = FolderStore(tmp_path / "store")
    for path in ("content/linkdir/passwd", "linked/linkdir/passwd"):
        job = CopyJob(str(extract), path, len(secret), sha1(secret))
        assert copy_one(store, job, max_bytes=MAX_BYTES) == CopyResult(None, HoldBackReason.CONTENT_LINK)
    assert visible_files(store) == []


def test_a_fifo_is_held_back_at_once(tmp_path: Path, extract: Path) -> None:
    fifo = extract / "content" / "pipe.pdf"
    os.mkfifo(fifo)
    below = extract / "content" / "pipe_folder"
    os.mkfifo(below)
    store = FolderStore(tmp_path / "store")

    def unblock() -> None:  # a writer lets a reader blocked in open() go on
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    def copy(path: str) -> CopyResult:
        return copy_one(store, CopyJob(str(extract), path, 10, sha1(b"0123456789")), max_bytes=MAX_BYTES)

    for path in ("content/pipe.pdf", "content/pipe_folder/x.pdf"):
        result = finish_within(5, functools.partial(copy, path), unblock)
        assert result == CopyResult(None, HoldBackReason.CONTENT_NOT_REGULAR)


def test_dev_zero_through_a_link_or_as_a_path_is_held_back(tmp_path: Path, extract: Path) -> None:
    (extract / "content" / "zero").symlink_to("/dev/zero")
    store = FolderStore(tmp_path / "store")
    zeros = b"\0" * 4096
    for path, reason in (
        ("content/zero", HoldBackReason.CONTENT_LINK),
        ("/dev/zero", HoldBackReason.CONTENT_OUTSIDE_EXTRACT),
        ("content/../../../../../dev/zero", HoldBackReason.CONTENT_OUTSIDE_EXTRACT),
    ):
        job = CopyJob(str(extract), path, len(zeros), sha1(zeros))
        assert copy_one(store, job, max_bytes=MAX_BYTES) == CopyResult(None, reason), path
    assert visible_files(store) == []


def test_a_device_or_a_socket_inside_the_extract_is_not_a_regular_file(tmp_path: Path, extract: Path) -> None:
    store = FolderStore(tmp_path / "store")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listening:
        listening.bind(str(extract / "content" / "socket.pdf"))
        job = CopyJob(str(extract), "content/socket.pdf", 10, sha1(b"0123456789"))
        assert copy_one(store, job, max_bytes=MAX_BYTES) == CopyResult(None, HoldBackReason.CONTENT_NOT_REGULAR)
    try:
        os.mknod(extract / "content" / "zero.pdf", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    job = CopyJob(str(extract), "content/zero.pdf", 4096, sha1(b"\0" * 4096))
    assert copy_one(store, job, max_bytes=MAX_BYTES) == CopyResult(None, HoldBackReason.CONTENT_NOT_REGULAR)
    assert visible_files(store) == []


def test_a_document_above_the_size_limit_is_held_back(
    tmp_path: Path, extract: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MES_MAX_DOCUMENT_BYTES", "1000")
    limit = load_settings().max_document_bytes
    assert limit == 1000
    big = b"b" * 1001
    (extract / "content" / "big.pdf").write_bytes(big)
    os.mkfifo(extract / "content" / "pipe.pdf")  # declared too large: not even opened
    store = FolderStore(tmp_path / "store")

    def copy(path: str, size: int, content: bytes) -> CopyResult:
        return copy_one(store, CopyJob(str(extract), path, size, sha1(content)), max_bytes=limit)

    too_large = CopyResult(None, HoldBackReason.CONTENT_TOO_LARGE)
    assert copy("content/big.pdf", 1001, big) == too_large  # declared (and actual) size above the limit
    assert copy("content/pipe.pdf", 5 * 1024**3, b"") == too_large
    assert copy("content/big.pdf", 1000, big[:1000]) == too_large  # declared within it, the file is not
    assert visible_files(store) == []
    (extract / "content" / "fits.pdf").write_bytes(big[:1000])
    assert copy("content/fits.pdf", 1000, big[:1000]).store_key == hashlib.sha256(big[:1000]).hexdigest()


def test_a_file_larger_than_declared_is_not_read_past_the_declared_size(tmp_path: Path, extract: Path) -> None:
    declared = 3 * 1024 * 1024  # streamed through a temporary file, not held in memory
    body = bytes(range(256)) * (declared // 256)
    path = extract / "content" / "grown.pdf"
    path.write_bytes(body + b"tail that was never declared" * 1000)
    store = FolderStore(tmp_path / "store")
    job = CopyJob(str(extract), "content/grown.pdf", declared, sha1(body))
    assert copy_one(store, job, max_bytes=MAX_BYTES) == CopyResult(None, HoldBackReason.SIZE_MISMATCH)
    # The store itself, given the file as a stream (a file that grew after its size was checked):
    # it stops one byte past the declared size.
    with path.open("rb") as stream:
        with pytest.raises(SizeMismatch):
            store.put(stream, sha1=sha1(body), size=declared)
        assert stream.tell() == declared + 1
    with io.BytesIO(b"x" * 101) as small:
        with pytest.raises(SizeMismatch):
            store.put(small, sha1=sha1(b"x" * 100), size=100)
        assert small.tell() == 101
    assert visible_files(store) == [] and list((store.root / ".tmp").iterdir()) == []


@pytest.mark.parametrize("nameless", [True, False])
@pytest.mark.parametrize(("file_mode", "file_expected", "folder_expected"), [(None, 0o600, 0o700), ("0640", 0o640, 0o750)])
def test_stored_documents_get_the_configured_modes_whatever_the_umask(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nameless: bool,
    file_mode: str | None,
    file_expected: int,
    folder_expected: int,
) -> None:
    monkeypatch.setenv("MES_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("MES_DOCUMENT_STORE_URL", raising=False)
    if file_mode:
        monkeypatch.setenv("MES_FILE_MODE", file_mode)
    else:
        monkeypatch.delenv("MES_FILE_MODE", raising=False)
    previous = os.umask(0o027 if file_mode else 0o002)  # neither umask gives the configured modes
    try:
        store = open_store(load_settings())
        assert isinstance(store, FolderStore)
        store._nameless = nameless
        small, large = b"compte rendu" * 100, b"L" * (2 * 1024 * 1024)  # in memory, and streamed
        keys = [store.put(content, sha1=sha1(content), size=len(content)) for content in (small, large)]
    finally:
        os.umask(previous)
    for key in keys:
        assert stat.S_IMODE(store.path_of(key).stat().st_mode) == file_expected
        assert stat.S_IMODE(store.path_of(key).parent.stat().st_mode) == folder_expected
    for folder in (store.root, store.root / ".tmp"):
        assert stat.S_IMODE(folder.stat().st_mode) == folder_expected


def test_a_hostile_extract_is_held_back_with_its_reasons_and_reported(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MES_MAX_DOCUMENT_BYTES", "4096")
    monkeypatch.setenv("MES_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("MES_FILE_MODE", raising=False)
    person = a_person()
    load_people(engine, tmp_path, [person], dt.date(2022, 1, 20))
    builder = ExtractBuilder(tmp_path / "dmp")
    dmp_id = builder.add_dmp(person)
    secret = PASSWD.read_bytes()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_bytes(secret)
    fine = builder.add_document(dmp_id)
    link = builder.add_document(dmp_id, secret, content_path="content/evil_link")
    linked_folder = builder.add_document(dmp_id, secret, content_path="content/linkdir/passwd")
    fifo = builder.add_document(dmp_id, b"0123456789", content_path="content/pipe.pdf")
    too_large = builder.add_document(dmp_id, b"x" * 4097)
    for hostile in ("content/evil_link", "content/linkdir/passwd", "content/pipe.pdf"):
        del builder.contents[hostile]
    folder = builder.write()
    (folder / "content" / "evil_link").symlink_to(PASSWD)
    (folder / "content" / "linkdir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(folder / "content" / "pipe.pdf")
    load_dmp_extract(engine, folder)
    insert_space(engine, person["nir"], dt.date(2022, 3, 1))
    store = open_store(load_settings())

    finished: list[str] = []
    worker = threading.Thread(
        target=lambda: finished.append(decide_and_commit(engine, store, dt.date(2022, 3, 2))), daemon=True
    )
    worker.start()
    worker.join(60)
    if worker.is_alive():
        os.close(os.open(folder / "content" / "pipe.pdf", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the migration blocked on the FIFO")
    assert outcomes(engine) == {
        fine: ("migrated", None, "current"),
        link: ("held_back", "CONTENT_LINK", None),
        linked_folder: ("held_back", "CONTENT_LINK", None),
        fifo: ("held_back", "CONTENT_NOT_REGULAR", None),
        too_large: ("held_back", "CONTENT_TOO_LARGE", None),
    }
    assert isinstance(store, FolderStore)
    assert sha1(secret) not in {sha1(path.read_bytes()) for path in visible_files(store)}
    report = build_report(engine, finished[0])
    assert report["reasons"]["held_back"] == {"CONTENT_LINK": 2, "CONTENT_NOT_REGULAR": 1, "CONTENT_TOO_LARGE": 1}
    assert report["documents"] == {"source": 5, "migrated": 1, "held_back": 4, "skipped": 0, "committed": 5}
