"""The folder document store: content-addressed, verified before it is visible, atomic, configurable."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import pytest

from mes_rollout.config import ConfigError, load_settings
from mes_rollout.constants import HoldBackReason
from migration.content import CopyJob, CopyResult, copy_one
from migration.store import FolderStore, HashMismatch, SizeMismatch, open_store

MAX_BYTES = 256 * 1024 * 1024


def sha1(content: bytes) -> str:
    return hashlib.sha1(content).hexdigest()


def visible_files(store: FolderStore) -> list[Path]:
    return [path for path in store.root.rglob("*") if path.is_file() and ".tmp" not in path.parts]


def test_put_stores_under_the_sha256_and_reads_back(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "store")
    content = b"%PDF-1.4 compte rendu" * 50
    key = store.put(content, sha1=sha1(content).upper(), size=len(content))
    assert key == hashlib.sha256(content).hexdigest()
    assert store.exists(key) and store.size(key) == len(content)
    with store.open(key) as stream:
        assert stream.read() == content
    assert store.put(io.BytesIO(content), sha1=sha1(content), size=len(content)) == key  # same content, same key
    assert visible_files(store) == [store.path_of(key)]


@pytest.mark.parametrize("size", [100, 3 * 1024 * 1024 + 7])  # in memory, and streamed through a temp file
def test_content_that_does_not_match_never_becomes_visible(tmp_path: Path, size: int) -> None:
    store = FolderStore(tmp_path / "store")
    content = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    altered = content[:-1] + bytes([content[-1] ^ 1])
    with pytest.raises(HashMismatch):
        store.put(io.BytesIO(altered), sha1=sha1(content), size=size)
    with pytest.raises(SizeMismatch):
        store.put(io.BytesIO(content + b"!"), sha1=sha1(content), size=size)
    with pytest.raises(SizeMismatch):
        store.put(io.BytesIO(content[:-1]), sha1=sha1(content), size=size)
    assert visible_files(store) == []
    assert list((store.root / ".tmp").iterdir()) == []
    key = store.put(io.BytesIO(content), sha1=sha1(content), size=size)
    assert hashlib.sha256(store.path_of(key).read_bytes()).hexdigest() == key


@pytest.mark.parametrize("nameless", [True, False])  # O_TMPFILE + linkat, and the named temporary file
def test_both_ways_of_publishing_leave_only_the_document(tmp_path: Path, nameless: bool) -> None:
    store = FolderStore(tmp_path / "store")
    store._nameless = nameless
    content = b"%PDF-1.7 lettre de liaison" * 40
    key = store.put(io.BytesIO(content), sha1=sha1(content), size=len(content))
    assert store.put(content, sha1=sha1(content), size=len(content)) == key  # already there: same key
    assert visible_files(store) == [store.path_of(key)]
    assert store.path_of(key).read_bytes() == content
    assert list((store.root / ".tmp").iterdir()) == []


def test_a_write_that_fails_midway_leaves_nothing_under_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FolderStore(tmp_path / "store")
    content = b"z" * 9000
    real_write = os.write

    def write_half_then_fail(descriptor: int, data: bytes) -> int:
        real_write(descriptor, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(os, "write", write_half_then_fail)
        with pytest.raises(OSError):
            store.put(content, sha1=sha1(content), size=len(content))
    assert visible_files(store) == [] and list((store.root / ".tmp").iterdir()) == []
    key = store.put(content, sha1=sha1(content), size=len(content))
    assert store.path_of(key).read_bytes() == content


def test_without_o_tmpfile_the_store_falls_back_to_named_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kernel without O_TMPFILE reads the flag as O_DIRECTORY alone: opening for writing fails EISDIR.
    monkeypatch.setattr(os, "O_TMPFILE", os.O_DIRECTORY)
    store = FolderStore(tmp_path / "store")
    content = b"compte rendu" * 100
    key = store.put(content, sha1=sha1(content), size=len(content))
    assert not store._nameless
    assert visible_files(store) == [store.path_of(key)] and store.path_of(key).read_bytes() == content


def test_a_file_cut_short_under_a_key_is_rewritten(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "store")
    content = b"a" * 5000
    key = store.put(content, sha1=sha1(content), size=len(content))
    store.path_of(key).write_bytes(b"")  # what a power cut before the sync could leave
    assert store.put(content, sha1=sha1(content), size=len(content)) == key
    assert store.path_of(key).read_bytes() == content


def test_abandoned_temporary_files_are_swept_not_shown(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "store")
    (store.root / ".tmp" / "123-abandoned-0").write_bytes(b"half a docu")
    assert store.keys() == []
    assert store.sweep_abandoned(older_than_seconds=3600) == 0
    assert store.sweep_abandoned(older_than_seconds=-1) == 1


@pytest.mark.parametrize(
    "content_path", ["../outside.pdf", "/etc/passwd", "", "content/../../x", "content/absent.pdf", ".", "content"]
)
def test_content_outside_the_extract_or_absent_is_held_back(tmp_path: Path, content_path: str) -> None:
    (tmp_path / "outside.pdf").write_bytes(b"secret")
    extract = tmp_path / "extract"
    (extract / "content").mkdir(parents=True)
    job = CopyJob(str(extract), content_path, 6, sha1(b"secret"))
    result = copy_one(FolderStore(tmp_path / "store"), job, max_bytes=MAX_BYTES)
    expected = {
        "../outside.pdf": HoldBackReason.CONTENT_OUTSIDE_EXTRACT,
        "/etc/passwd": HoldBackReason.CONTENT_OUTSIDE_EXTRACT,
        "content/../../x": HoldBackReason.CONTENT_OUTSIDE_EXTRACT,
        ".": HoldBackReason.CONTENT_OUTSIDE_EXTRACT,
        "": HoldBackReason.CONTENT_MISSING,
        "content/absent.pdf": HoldBackReason.CONTENT_MISSING,
        "content": HoldBackReason.CONTENT_NOT_REGULAR,  # a folder
    }[content_path]
    assert result == CopyResult(None, expected)


def test_copy_checks_the_size_on_disk_then_the_hash(tmp_path: Path) -> None:
    extract = tmp_path / "extract"
    (extract / "content").mkdir(parents=True)
    (extract / "content" / "a.pdf").write_bytes(b"0123456789")
    store = FolderStore(tmp_path / "store")
    def copy(path: str, size: int, content: bytes) -> CopyResult:
        return copy_one(store, CopyJob(str(extract), path, size, sha1(content)), max_bytes=MAX_BYTES)

    assert copy("content/a.pdf", 11, b"0123456789").reason == "SIZE_MISMATCH"
    assert copy("content/a.pdf", 10, b"0123456788").reason == "HASH_MISMATCH"
    ok = copy("content/a.pdf", 10, b"0123456789")
    assert ok.reason is None and ok.store_key == hashlib.sha256(b"0123456789").hexdigest()
    # A `..` that stays inside the extract is read as written (the path is normalised first).
    assert copy("content/./absent/../a.pdf", 10, b"0123456789") == ok


def test_the_store_is_chosen_by_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MES_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("MES_DOCUMENT_STORE_URL", raising=False)
    settings = load_settings()
    default = open_store(settings)
    assert isinstance(default, FolderStore) and default.root == settings.document_store_dir
    monkeypatch.setenv("MES_DOCUMENT_STORE_URL", f"file://{tmp_path / 'elsewhere'}")
    assert open_store(settings).root == settings.document_store_dir  # type: ignore[attr-defined]  # read once
    elsewhere = open_store(load_settings())
    assert isinstance(elsewhere, FolderStore) and elsewhere.root == tmp_path / "elsewhere"
    monkeypatch.setenv("MES_DOCUMENT_STORE_URL", "s3://bucket/documents")
    with pytest.raises(ConfigError):
        open_store(load_settings())
