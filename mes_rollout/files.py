"""Files at rest (documents, emails kept by the loopback relay, print files, reports): created with
`settings.file_mode` (default 0600) in folders of `settings.dir_mode` (0700), whatever the process's
umask. They name people, their addresses, their health documents."""

from __future__ import annotations

import os
from pathlib import Path


def private_folder(path: Path, dir_mode: int) -> Path:
    """`path` and each missing parent, with `dir_mode` (an existing `path` is set to it too)."""
    missing = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for each in reversed(missing):
        try:
            each.mkdir(mode=dir_mode)
        except FileExistsError:  # made meanwhile by another process: set its mode all the same
            pass
        os.chmod(each, dir_mode)
    os.chmod(path, dir_mode)
    return path


def create_private(path: Path, file_mode: int) -> int:
    """A new file (FileExistsError if there is one) with exactly `file_mode`; returns its descriptor."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, file_mode)
    try:
        os.fchmod(descriptor, file_mode)  # the umask may have taken bits the setting grants
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def write_private(path: Path, content: bytes, file_mode: int) -> None:
    """A new file holding `content`, with exactly `file_mode`."""
    with os.fdopen(create_private(path, file_mode), "wb") as stream:
        stream.write(content)


def private_umask(dir_mode: int) -> int:
    """Set the process's umask so that whatever it creates without an explicit mode (a library's
    working files, a folder made on the way) is no more open than the folders' mode allows
    (0700 -> umask 077: files 0600); returns the previous umask. Inherited by child processes."""
    return os.umask(0o777 & ~dir_mode)
