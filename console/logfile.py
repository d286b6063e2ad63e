"""Where the console's logs go: every record, ours and every library's, to a log file; the terminal
gets only our warnings and anyone's errors. Personal data is masked on the way (mes_rollout.logsafe).

The file is `$MES_VAR_DIR/logs/mes-rollout-<day>.log` (owner-only). Importing Airflow replaces the
root logger's handlers by its own (a stream to standard output); `reclaim()`, called by
`console.dagrun` once Airflow is imported, puts ours back and keeps Airflow's handler for the
moments an in-process DAG run points it at the run's log file (`console.dagrun._output_to`).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import sys
from pathlib import Path

from mes_rollout import logsafe
from mes_rollout.config import Settings

# The project's own packages: their warnings are for the operator, a library's are not.
OUR_PACKAGES = frozenset({"console", "dags", "enrolment", "migration", "mes_rollout", "notifications", "validation"})
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_ours: list[logging.Handler] = []


class _ForTheOperator(logging.Filter):
    """Our packages' warnings and errors, and anyone's errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.split(".", 1)[0] in OUR_PACKAGES


class _OnlyWhileRedirected(logging.Filter):
    """Passes a record only while the handler's stream is not the one it had when adopted: a
    foreign handler on the terminal stays silent, but writes into a DAG run's log file."""

    def __init__(self, handler: logging.StreamHandler) -> None:
        super().__init__()
        self.handler = handler
        self.adopted_stream = handler.stream

    def filter(self, record: logging.LogRecord) -> bool:
        return self.handler.stream is not self.adopted_stream


def log_file_path(settings: Settings, day: dt.date | None = None) -> Path:
    day = day or dt.date.today()
    return settings.var_dir / "logs" / f"mes-rollout-{day.isoformat()}.log"


def current_log_file() -> Path | None:
    """The log file of this process, once `install` ran."""
    for handler in _ours:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


def install(settings: Settings) -> Path:
    """Send this process's logging to the day's log file and the operator's part to stderr.
    Idempotent: a second call (a demo runs commands through the same entry) keeps the first file."""
    existing = current_log_file()
    if existing is not None:
        reclaim()
        return existing
    path = log_file_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=settings.dir_mode)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, settings.file_mode))
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(FORMAT))
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(logging.WARNING)
    terminal.addFilter(_ForTheOperator())
    terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for handler in (file_handler, terminal):
        logsafe.install(handler)
        _ours.append(handler)
    logging.captureWarnings(True)
    reclaim()
    return path


def reclaim() -> None:
    """Put our handlers back on the root logger; a handler someone else put there (Airflow's)
    gets the masking filter and speaks only while redirected to a run's log file."""
    if not _ours:
        return
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        if handler in _ours:
            continue
        logsafe.install(handler)
        if (
            isinstance(handler, logging.StreamHandler)
            and not isinstance(handler, logging.FileHandler)
            and not isinstance(handler.stream, io.StringIO)  # an in-memory capture (a test's caplog)
        ):
            if not any(isinstance(existing, _OnlyWhileRedirected) for existing in handler.filters):
                handler.addFilter(_OnlyWhileRedirected(handler))
    for handler in _ours:
        if handler not in root.handlers:
            root.addHandler(handler)


def uninstall() -> None:
    """Take our handlers off the root logger and close the file (tests)."""
    root = logging.getLogger()
    for handler in _ours:
        root.removeHandler(handler)
        handler.close()
    _ours.clear()
