"""An SMTP server on loopback (aiosmtpd): the embedded relay, and a sink for the crash test and the benchmark.

- `outbox` mode (MES_SMTP_URL=embedded): every message received is kept as an .eml file under
  the outbox folder, named after its Message-ID (a second copy of the same message gets its own
  file: nothing received is lost from view). The files name people: they are written with
  settings.file_mode in a folder of settings.dir_mode.
- `record` mode: one line per message received, its Message-ID, appended to a file (the crash
  test counts copies per notification from it); `count` mode only counts.

`python -m notifications.loopback_smtp --port N --mode record --record-file F` runs it in a process
of its own, prints "ready" once it listens, and stops on SIGTERM.

aiosmtpd logs every command it receives at INFO on the `mail.log` logger, `RCPT TO:<address>`
included: the server is started with that logger at WARNING, so no address reaches the logs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from mes_rollout.config import Settings, load_settings
from mes_rollout.files import private_folder, write_private
from notifications.email_client import SmtpTarget

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^<>@\s]+)@", re.IGNORECASE | re.MULTILINE)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def message_reference(content: bytes) -> str:
    """The local part of the Message-ID of a raw message (our notification id), or 'unknown'."""
    header_end = content.find(b"\r\n\r\n")
    match = _MESSAGE_ID.search(content[: header_end if header_end >= 0 else len(content)])
    return match.group(1).decode("ascii", "replace") if match else "unknown"


class OutboxHandler:
    """Keeps each message as an .eml file of `file_mode`, in `outbox` (made with `dir_mode`)."""

    def __init__(self, outbox: Path, *, file_mode: int, dir_mode: int) -> None:
        self.outbox = private_folder(outbox, dir_mode)
        self._file_mode = file_mode
        self.received = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        stem = _SAFE_NAME.sub("_", message_reference(content))
        copy = 0
        while True:
            path = self.outbox / (f"{stem}.eml" if copy == 0 else f"{stem}.{copy}.eml")
            try:
                write_private(path, content, self._file_mode)
                break
            except FileExistsError:
                copy += 1
        with self._lock:
            self.received += 1
        return "250 2.0.0 kept"


class RecordingHandler:
    """Appends the Message-ID reference of each message to a file (or only counts)."""

    def __init__(self, record_file: Path | None) -> None:
        self.received = 0
        self._fd = os.open(record_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if record_file else None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        if self._fd is not None:
            # One write per message: a whole line even if this process is killed.
            os.write(self._fd, message_reference(envelope.original_content or envelope.content).encode() + b"\n")
        return "250 2.0.0 recorded"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(handler: Any, port: int | None = None) -> Iterator[SmtpTarget]:
    """Run an aiosmtpd server on 127.0.0.1 in a thread of this process for the block."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # its INFO lines quote RCPT TO:<address>
    controller = Controller(handler, hostname="127.0.0.1", port=port or free_port(), data_size_limit=1 << 20)
    controller.start()
    try:
        yield SmtpTarget(host="127.0.0.1", port=controller.port)
    finally:
        controller.stop()


def embedded_relay(settings: Settings) -> Any:
    """The embedded default: a loopback relay keeping every message under the outbox folder."""
    return serving(OutboxHandler(settings.outbox_dir, file_mode=settings.file_mode, dir_mode=settings.dir_mode))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="loopback SMTP sink")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("outbox", "record", "count"), default="count")
    parser.add_argument("--record-file", type=Path)
    parser.add_argument("--outbox", type=Path)
    args = parser.parse_args(argv)
    if args.mode == "outbox":
        settings = load_settings()
        handler: Any = OutboxHandler(args.outbox, file_mode=settings.file_mode, dir_mode=settings.dir_mode)
    else:
        handler = RecordingHandler(args.record_file if args.mode == "record" else None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with serving(handler, args.port):
        print("ready", flush=True)
        stop.wait()
    print(f"received {handler.received}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
