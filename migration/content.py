"""Copying documents' content into the store, verified, on a pool of threads (hashing and file I/O
release the GIL, so a few threads keep the disk busy while the main thread talks to the database)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from migration.store import ContentError, ContentMissing, DocumentStore, SizeMismatch


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
            stream = open(path, "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            raise ContentMissing() from None
        with stream:
            # The size on disk first: a wrong file is not read at all.
            if os.fstat(stream.fileno()).st_size != job.size:
                raise SizeMismatch()
            return CopyResult(store.put(stream, sha1=job.sha1, size=job.size), None)
    except ContentError as error:
        return CopyResult(None, error.reason.value)


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
