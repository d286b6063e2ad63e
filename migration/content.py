"""Reading a document's content from inside the extract and copying it into the store, verified.

The extract is not trusted: a content path is opened one component at a time below the extract
folder, never following a symbolic link (`O_NOFOLLOW` at every step, relative to the folder above),
so no link, absolute path or `..` reaches a file outside it. Only a regular file is read: the file
is opened without blocking (`O_NONBLOCK`: a FIFO would wait for a writer for ever) and checked with
`fstat` before a byte is read. A document declared larger than `settings.max_document_bytes` is
held back without being opened; no more than its declared size + 1 bytes are ever read.

Copies run on a pool of threads (`migration.pipeline.classify_run`): hashing and file I/O release
the GIL, so copying goes on while the main thread talks to the database.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from migration.store import (
    SMALL_CONTENT,
    ContentError,
    ContentLink,
    ContentMissing,
    ContentNotRegular,
    ContentOutside,
    ContentTooLarge,
    DocumentStore,
    SizeMismatch,
)

_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


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


def path_parts(content_path: str) -> list[str]:
    """The components of a content path below the extract folder. An empty path is missing
    content; an absolute path, the folder itself or a climb out of it with `..` is held back
    CONTENT_OUTSIDE_EXTRACT."""
    if not content_path or "\x00" in content_path:
        raise ContentMissing()
    if os.path.isabs(content_path):
        raise ContentOutside()
    parts = os.path.normpath(content_path).split(os.sep)
    if parts[0] in (os.curdir, os.pardir):  # "." (the folder itself) or a climb out of it
        raise ContentOutside()
    return parts


def open_content(extract_dir: str, content_path: str) -> int:
    """A descriptor open for reading on the content file, reached below `extract_dir` without
    following any link; raises the ContentError that says why not. The caller closes it."""
    parts = path_parts(content_path)
    try:
        folder = os.open(extract_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise ContentMissing() from None
    try:
        for name in parts[:-1]:
            try:
                below = os.open(name, _FOLDER_FLAGS, dir_fd=folder)
            except OSError as error:
                raise _refusal(folder, name, error) from None
            os.close(folder)
            folder = below
        try:
            return os.open(parts[-1], _FILE_FLAGS, dir_fd=folder)
        except OSError as error:
            raise _refusal(folder, parts[-1], error) from None
    finally:
        os.close(folder)


def _refusal(folder: int, name: str, error: OSError) -> ContentError:
    """Why `name` (in `folder`) could not be opened: a link, not a file or folder, or missing."""
    try:
        found = os.lstat(name, dir_fd=folder)
    except OSError:
        return ContentMissing()
    if stat.S_ISLNK(found.st_mode):
        return ContentLink()
    if error.errno in (errno.ENXIO, errno.ENOTDIR) and not stat.S_ISREG(found.st_mode):
        return ContentNotRegular()  # a socket (ENXIO), or a FIFO or device where a folder was due
    return ContentMissing()  # a file where a folder was due, no permission...


def copy_one(store: DocumentStore, job: CopyJob, *, max_bytes: int) -> CopyResult:
    try:
        if job.size > max_bytes:
            raise ContentTooLarge()  # not even opened
        descriptor = open_content(job.extract_dir, job.content_path)
        try:
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode):
                raise ContentNotRegular()
            if status.st_size > max_bytes:
                raise ContentTooLarge()
            # The size on disk first: a wrong file is not read at all.
            if status.st_size != job.size:
                raise SizeMismatch()
            if job.size < SMALL_CONTENT:
                # The usual case, once per document: one read of the whole file (and one byte more,
                # to see it did not grow), no buffered file object.
                return CopyResult(store.put(_read_up_to(descriptor, job.size + 1), sha1=job.sha1, size=job.size), None)
            with os.fdopen(descriptor, "rb", closefd=False) as stream:
                # The store reads at most size + 1 bytes of a stream.
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
