"""Progress bars on the console's long work, without touching the business code: a thread polls
counts (rows of the database, or how far a file has been read) while the work runs, and draws
them with rich on the terminal the command started on.

Drawn only when standard output is a terminal and the command was not asked for --json
(`enable()`, by the command line). The counts come from the small read functions below: what an
operator would look at to know how far the work is.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from console.render import number
from mes_rollout.config import load_settings

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
_state = {"enabled": False}


def enable(wanted: bool) -> None:
    """Draw progress from now on if `wanted` (a terminal, no --json)."""
    _state["enabled"] = wanted


def enabled() -> bool:
    return _state["enabled"]


@dataclass
class Counter:
    """One bar: `read` gives the current count (from the database, or not); the bar shows how far it
    moved since the work started, against `total` when it is known."""

    label: str
    read: Callable[[Connection], int]
    total: int | None = None
    start: int = field(default=0, init=False)


class _Counts(ProgressColumn):
    def render(self, task: Task) -> Text:
        done = number(int(task.completed))
        return Text(f"{done} / {number(int(task.total))}" if task.total is not None else done, style="progress.download")


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        if elapsed < 0.5 or not task.completed:
            return Text("")
        return Text(f"{number(round(task.completed / elapsed))}/s", style="progress.data.speed")


def _terminal() -> Console:
    """A console on a copy of the terminal's descriptor: an in-process DAG run points descriptors
    1 and 2 at its log file meanwhile, the bars must stay on the terminal."""
    stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    return Console(file=stream, force_terminal=True)


@contextlib.contextmanager
def tracking(counters: Callable[[Connection], list[Counter]], title: str = "") -> Iterator[None]:
    """Draw the bars of `counters` (built with a first connection) while the block runs."""
    if not enabled():
        yield
        return
    engine = create_engine(load_settings().database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            bars = counters(connection)
            for bar in bars:
                bar.start = bar.read(connection)
            connection.rollback()
    except Exception:  # noqa: BLE001 - progress is a courtesy: no bars rather than no work
        log.debug("no progress bars", exc_info=True)
        engine.dispose()
        yield
        return
    console = _terminal()
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), _Counts(), _Rate(), TimeElapsedColumn(),
        console=console, transient=True, refresh_per_second=4,
    )
    tasks = [progress.add_task(f"{title}{bar.label}", total=bar.total) for bar in bars]
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(POLL_SECONDS):
            try:
                with engine.connect() as connection:
                    for task, bar in zip(tasks, bars, strict=True):
                        progress.update(task, completed=max(bar.read(connection) - bar.start, 0))
                    connection.rollback()
            except Exception:  # noqa: BLE001 - a busy database: try again at the next tick
                log.debug("progress poll failed", exc_info=True)

    poller = threading.Thread(target=poll, name="mes-progress", daemon=True)
    progress.start()
    poller.start()
    try:
        yield
    finally:
        stop.set()
        poller.join()
        progress.stop()
        engine.dispose()
        console.file.close()


def _count(sql: str, **params: Any) -> Callable[[Connection], int]:
    def read(connection: Connection) -> int:
        return int(connection.execute(text(sql), params).scalar() or 0)

    return read


# --- what each command's bars count ----------------------------------------------------------


def file_rows(path: Path) -> list[Counter]:
    """Rows of a CSV read so far, from the read position of the file in this process (Linux's
    /proc/self/fdinfo) against its size; the rows are counted once at the start."""
    resolved = path.resolve()
    size = resolved.stat().st_size or 1
    lines = 0
    with resolved.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            lines += chunk.count(b"\n")
    rows = max(lines - 1, 0)

    def read(_connection: Connection) -> int:
        position = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir("/proc/self/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/self/fd/{fd}") == str(resolved):
                        fields = Path(f"/proc/self/fdinfo/{fd}").read_text().split()
                        position = max(position, int(fields[fields.index("pos:") + 1]))
        return min(rows, round(rows * position / size))

    return [Counter("rows read", read, rows)]


def planning(wave_id: str) -> Callable[[Connection], list[Counter]]:
    def counters(_connection: Connection) -> list[Counter]:
        return [Counter("messages planned", _count("SELECT COUNT(*) FROM notifications WHERE wave_id = :w", w=wave_id))]

    return counters


def sending(day: dt.date) -> Callable[[Connection], list[Counter]]:
    """Emails sent for the day against those waiting; letters printed against those waiting."""

    def counters(connection: Connection) -> list[Counter]:
        waiting = (
            "SELECT COUNT(*) FROM notifications n JOIN waves w ON w.wave_id = n.wave_id"
            " WHERE w.state = 'approved' AND w.send_date <= :day AND n.channel = :channel"
            " AND n.status IN ('created', 'sending', 'temporary_failure')"
        )
        emails = _count(waiting, day=day, channel="email")(connection)
        letters = _count(waiting, day=day, channel="letter")(connection)
        return [
            Counter("emails sent", _count(
                "SELECT COUNT(*) FROM sending_attempts a JOIN notifications n ON n.notification_id = a.notification_id"
                " WHERE n.send_date = :day AND a.outcome <> 'temporary_failure'", day=day), emails),
            Counter("letters printed", _count(
                "SELECT COALESCE(SUM(letters), 0) FROM print_batches WHERE print_date = :day", day=day), letters),
        ]

    return counters


def since(started: dt.datetime) -> Callable[[Connection], list[Counter]]:
    """What the daily DAGs did since `started`: DAG-days done, emails sent, documents decided."""

    def counters(_connection: Connection) -> list[Counter]:
        return [
            Counter("DAG-days done", _count("SELECT COUNT(*) FROM daily_runs WHERE finished_at >= :t", t=started)),
            Counter("emails sent", _count(
                "SELECT COUNT(*) FROM sending_attempts WHERE finished_at >= :t AND outcome = 'sent'", t=started)),
            Counter("DMP documents decided", _count(
                "SELECT COUNT(*) FROM dmp_document_outcomes WHERE decided_at >= :t", t=started)),
        ]

    return counters


def migration() -> Callable[[Connection], list[Counter]]:
    def counters(_connection: Connection) -> list[Counter]:
        return [Counter("DMP documents decided", _count("SELECT COUNT(*) FROM dmp_document_outcomes"))]

    return counters


def elapsed(label: str) -> Callable[[Connection], list[Counter]]:
    """A spinner and the time, for work that shows no count on the way."""
    began = time.monotonic()

    def counters(_connection: Connection) -> list[Counter]:
        return [Counter(label, lambda _c: int(time.monotonic() - began))]

    return counters
