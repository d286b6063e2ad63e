"""The spaces' document store: content-addressed, verified on the way in, written atomically.

`DocumentStore` is the small interface the migration uses; `FolderStore` is the embedded default
(a folder, `settings.document_store_dir`). An object store can replace it by configuration
(`settings.document_store_url`, MES_DOCUMENT_STORE_URL) without the migration changing. Documents
are health data: their files are created with `settings.file_mode` (default 0600) in folders of
`settings.dir_mode` (0700), whatever the process's umask.

Content is only ever visible under its key once complete and verified. Checked against the size
and SHA-1 the DMP gave, it is written to a file that has no name yet (`O_TMPFILE`, in the key's
folder) and only then named (`linkat`, atomic, refused if the key exists): a crash leaves nothing
behind, the file system frees a nameless file. That is one directory operation per document where
a named temporary file costs three (create in `.tmp/`, then a rename out of it under the file
system's rename lock): about 1.5x faster on ext4. Where `O_TMPFILE` or `/proc` is missing, and for
content too large to hold in memory, bytes go to a named temporary file under `.tmp/` that is
renamed into place (`os.replace`, atomic); a crash then leaves at most a temporary file, swept
later. Durability is bought once per run rather than per file: `flush()` syncs the file system
before the first database row that references the content is committed, so a committed row never
points at content that a power cut could lose.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import io
import itertools
import os
import re
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

from mes_rollout.config import ConfigError, Settings
from mes_rollout.constants import HoldBackReason
from mes_rollout.files import create_private

KEY_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_BLOCK = 1 << 20
SMALL_CONTENT = _BLOCK  # content below this size is checked and written from memory
_TEMP_FOLDER = ".tmp"
_FAN_OUT = 2  # hex characters of the key naming its folder


class ContentError(Exception):
    """The content cannot be carried: `reason` is the hold-back code."""

    reason: HoldBackReason = HoldBackReason.CONTENT_MISSING


class ContentMissing(ContentError):
    reason = HoldBackReason.CONTENT_MISSING


class SizeMismatch(ContentError):
    reason = HoldBackReason.SIZE_MISMATCH


class HashMismatch(ContentError):
    reason = HoldBackReason.HASH_MISMATCH


class ContentOutside(ContentError):
    reason = HoldBackReason.CONTENT_OUTSIDE_EXTRACT


class ContentLink(ContentError):
    reason = HoldBackReason.CONTENT_LINK


class ContentNotRegular(ContentError):
    reason = HoldBackReason.CONTENT_NOT_REGULAR


class ContentTooLarge(ContentError):
    reason = HoldBackReason.CONTENT_TOO_LARGE


def content_key(content: bytes) -> str:
    """The address of content: its SHA-256 (not the DMP's SHA-1, which collisions can be forged for)."""
    return hashlib.sha256(content).hexdigest()


class DocumentStore(Protocol):
    def put(self, content: BinaryIO | bytes, *, sha1: str, size: int) -> str:
        """Store content that must have this SHA-1 and size; returns its key, or raises ContentError."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """The stored size of the content under key, None if there is none."""
        ...

    def open(self, key: str) -> BinaryIO: ...

    def flush(self) -> None:
        """Make everything put so far durable (before the rows that reference it are committed)."""
        ...

    def sweep_abandoned(self, older_than_seconds: float) -> int:
        """Remove temporary files a crashed writer left behind; returns how many."""
        ...

    def describe(self) -> str: ...


class _NoTmpFile(Exception):
    """Nameless files cannot be written or named here: named temporary files are used instead."""


# O_TMPFILE unknown to the kernel (EISDIR: read as O_DIRECTORY alone) or to the file system.
_NO_TMPFILE_ERRORS = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOSYS})


class FolderStore:
    """Content in a folder: `<root>/<k[0:2]>/<key>` (256 folders), temporary files in `<root>/.tmp/`.

    Few folders keep the file system's metadata writes together (measured faster than 4 096 on
    the benchmark's disk); beyond tens of millions of documents an object store takes over. The hot
    path works on strings (os.path), not pathlib: it runs once per document.
    """

    def __init__(self, root: Path, *, file_mode: int = 0o600, dir_mode: int = 0o700) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        self._temp = self.root / _TEMP_FOLDER
        self._make_folder(self._root)
        self._make_folder(str(self._temp))
        self._temp_prefix = os.path.join(str(self._temp), f"{os.getpid()}-{uuid.uuid4().hex[:8]}-")
        self._sequence = itertools.count()
        self._made: set[str] = set()
        self._nameless = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")

    def describe(self) -> str:
        return f"folder:{self.root}"

    def path_of(self, key: str) -> Path:
        return Path(self._path(key))

    def _path(self, key: str) -> str:
        if not KEY_PATTERN.match(key):
            raise ValueError("not a content key")
        return os.path.join(self._root, key[:_FAN_OUT], key)

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def size(self, key: str) -> int | None:
        try:
            return os.stat(self._path(key)).st_size
        except (FileNotFoundError, ValueError):
            return None

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def put(self, content: BinaryIO | bytes, *, sha1: str, size: int) -> str:
        if isinstance(content, bytes):
            return self._put_small(content, sha1.lower(), size) if size < _BLOCK else self._put_streamed(
                content, io.BytesIO(b""), sha1.lower(), size
            )
        if size < _BLOCK:
            # Small content (the usual case) is read in one call of the right size: a read of a
            # block larger than the file would allocate (and fault in) the whole block each time.
            first = content.read(size + 1)
            if len(first) <= size:
                return self._put_small(first, sha1.lower(), size)
        else:
            first = content.read(_BLOCK)
        return self._put_streamed(first, content, sha1.lower(), size)

    def _put_small(self, content: bytes, sha1: str, size: int) -> str:
        if len(content) != size:
            raise SizeMismatch()
        if hashlib.sha1(content).hexdigest() != sha1:  # SHA-1: what the DMP recorded
            raise HashMismatch()
        key = content_key(content)
        if self._nameless:
            try:
                self._publish_nameless(content, key)
                return key
            except _NoTmpFile:
                self._nameless = False
        self._publish_named(content, key)
        return key

    def _publish_nameless(self, content: bytes, key: str) -> None:
        """Write verified content to a nameless file in its key's folder, then name it."""
        folder = self._folder(key)
        try:
            descriptor = os.open(folder, os.O_TMPFILE | os.O_WRONLY, self.file_mode)
        except OSError as error:
            if error.errno in _NO_TMPFILE_ERRORS:
                raise _NoTmpFile() from error
            raise
        try:
            os.fchmod(descriptor, self.file_mode)  # the mode set, not what the umask leaves of it
            with memoryview(content) as view:
                written = 0
                while written < len(view):
                    written += os.write(descriptor, view[written:])
            target = os.path.join(folder, key)
            try:
                # An absolute source path ignores src_dir_fd; giving one makes CPython call
                # linkat(..., AT_SYMLINK_FOLLOW), which follows /proc's link to the open file
                # (link(2), its default, would not).
                os.link(f"/proc/self/fd/{descriptor}", target, src_dir_fd=descriptor)
            except FileExistsError:
                if not self._already_there(target, len(content)):
                    self._publish_named(content, key)  # cut short under its key: replaced whole
            except FileNotFoundError as error:  # no /proc
                raise _NoTmpFile() from error
        finally:
            os.close(descriptor)

    def _publish_named(self, content: bytes, key: str) -> None:
        target = self._path(key)
        if self._already_there(target, len(content)):
            return
        temporary = self._temporary()
        with self._create(temporary) as out:
            out.write(content)
        self._move_into_place(temporary, key, target)

    def _folder(self, key: str) -> str:
        prefix = key[:_FAN_OUT]
        folder = os.path.join(self._root, prefix)
        if prefix not in self._made:
            self._make_folder(folder)
            self._made.add(prefix)
        return folder

    def _make_folder(self, folder: str) -> None:
        """Create a folder of the store with its mode (one made before is left as it is)."""
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        try:
            os.mkdir(folder, self.dir_mode)
        except FileExistsError:
            return
        os.chmod(folder, self.dir_mode)

    def _create(self, path: str) -> BinaryIO:
        """A new file of the store's mode, open for writing."""
        return os.fdopen(create_private(Path(path), self.file_mode), "wb")

    def _put_streamed(self, first: bytes, stream: BinaryIO, sha1: str, size: int) -> str:
        sha1_digest, sha256_digest, total = hashlib.sha1(), hashlib.sha256(), 0
        temporary = self._temporary()
        try:
            with self._create(temporary) as out:
                block = first
                while block:
                    total += len(block)
                    if total > size:
                        raise SizeMismatch()
                    sha1_digest.update(block)
                    sha256_digest.update(block)
                    out.write(block)
                    # Never more than size + 1 bytes in all: enough to see the content is too long.
                    block = stream.read(min(_BLOCK, size + 1 - total))
            if total != size:
                raise SizeMismatch()
            if sha1_digest.hexdigest() != sha1:
                raise HashMismatch()
            key = sha256_digest.hexdigest()
            target = self._path(key)
            if self._already_there(target, size):
                os.unlink(temporary)
            else:
                self._move_into_place(temporary, key, target)
            return key
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def _temporary(self) -> str:
        return f"{self._temp_prefix}{next(self._sequence)}"

    def _already_there(self, target: str, size: int) -> bool:
        # Same key, same size: the same content (a file cut short by a power cut has another size).
        try:
            return os.stat(target).st_size == size
        except FileNotFoundError:
            return False

    def _move_into_place(self, temporary: str, key: str, target: str) -> None:
        self._folder(key)
        os.replace(temporary, target)

    def flush(self) -> None:
        _sync_file_system(self.root)

    def sweep_abandoned(self, older_than_seconds: float) -> int:
        limit = time.time() - older_than_seconds
        removed = 0
        for leftover in self._temp.iterdir():
            try:
                if leftover.stat().st_mtime < limit:
                    leftover.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def keys(self) -> list[str]:
        """Every key in the store (tests and audits; walks the whole folder)."""
        found = []
        for folder in self.root.iterdir():
            if folder.name != _TEMP_FOLDER and folder.is_dir():
                found += [path.name for path in folder.iterdir()]
        return sorted(found)


def _sync_file_system(path: Path) -> None:
    """syncfs(2) on the store's file system where libc has it, else sync(2)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        syncfs = getattr(libc, "syncfs", None)
        if syncfs is not None:
            descriptor = os.open(path, os.O_RDONLY)
            try:
                if syncfs(descriptor) == 0:
                    return
            finally:
                os.close(descriptor)
    os.sync()


def open_store(settings: Settings) -> DocumentStore:
    """The store the settings name: `document_store_url` (MES_DOCUMENT_STORE_URL, file:///path),
    by default the folder `document_store_dir`."""
    url = settings.document_store_url
    if not url:
        root = settings.document_store_dir
    else:
        parsed = urlparse(url)
        if parsed.scheme != "file":
            raise ConfigError(f"MES_DOCUMENT_STORE_URL: no document store for scheme {parsed.scheme!r} (file:// only)")
        root = Path(parsed.path)
    return FolderStore(root, file_mode=settings.file_mode, dir_mode=settings.dir_mode)
