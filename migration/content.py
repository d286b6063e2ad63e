"""Copying documents' content into the store, verified, on a pool of threads (hashing and file I/O
release the GIL, so copying goes on while the main thread talks to the database; how many threads:
`migration.pipeline.CONTENT_WORKERS`)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from migration.store import SMALL_CONTENT, ContentError, ContentMissing, DocumentStore, SizeMismatch


@dataclass(frozen=True, slots=True)
class CopyJob:
    extract_dir: str
    content_path: str
    size: int
    sha1: str


@dataclass(frozen=True, slots=True)
class CopyResult:
    store_key: str | None
    reason: str | None  # a HoldBackReason when the content cannot be carried


def source_path(extract_dir: str, content_path: str) -> str | None:
    """The content file's path, or None where content_path is empty or leaves the extract folder."""
    if not content_path or os.path.isabs(content_path):
        return None
    base = os.path.normpath(extract_dir)
    path = os.path.normpath(os.path.join(base, content_path))
    return path if path.startswith(base + os.sep) else None


def copy_one(store: DocumentStore, job: CopyJob) -> CopyResult:
    path = source_path(job.extract_dir, job.content_path)
    try:
        if path is None:
            raise ContentMissing()
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            raise ContentMissing() from None
        try:
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode):
                raise ContentMissing()
            # The size on disk first: a wrong file is not read at all.
            if status.st_size != job.size:
                raise SizeMismatch()
            if job.size < SMALL_CONTENT:
                # The usual case, once per document: one read of the whole file (and one byte more,
                # to see it did not grow), no buffered file object.
                return CopyResult(store.put(_read_up_to(descriptor, job.size + 1), sha1=job.sha1, size=job.size), None)
            with os.fdopen(descriptor, "rb", closefd=False) as stream:
                return CopyResult(store.put(stream, sha1=job.sha1, size=job.size), None)
        finally:
            os.close(descriptor)
    except ContentError as error:
        return CopyResult(None, error.reason.value)


def _read_up_to(descriptor: int, limit: int) -> bytes:
    first = os.read(descriptor, limit)
    if len(first) in (0, limit):
        return first
    parts = [first]  # a short read (rare on a local file): read on to the end or the limit
    total = len(first)
    while total < limit:
        part = os.read(descriptor, limit - total)
        if not part:
            break
        parts.append(part)
        total += len(part)
    return b"".join(parts)


class ContentCopier:
    """A pool of threads copying content into one store; use as a context manager."""

    def __init__(self, store: DocumentStore, workers: int | None = None) -> None:
        self.store = store
        self.workers = workers or min(8, (os.cpu_count() or 2) * 2)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="dmp-content")

    def copy(self, jobs: Sequence[CopyJob]) -> Iterator[CopyResult]:
        """Results in the order of the jobs."""
        chunk = max(1, len(jobs) // (self.workers * 4))
        return self._pool.map(lambda job: copy_one(self.store, job), jobs, chunksize=chunk)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ContentCopier:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
