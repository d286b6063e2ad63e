"""The one place where settings are read: the environment, with embedded defaults."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

_WINDOW_PATTERN = re.compile(r"^P(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?$")


class ConfigError(ValueError):
    """A setting has a value the pipeline cannot use."""


@dataclass(frozen=True)
class OptOutWindow:
    """Length of the opt-out window: calendar months plus weeks plus days (ISO 8601 duration)."""

    months: int = 1
    weeks: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> OptOutWindow:
        match = _WINDOW_PATTERN.match(text.strip().upper())
        if not match or not any(match.groupdict().values()):
            raise ConfigError(f"MES_OPT_OUT_WINDOW={text!r}: expected an ISO 8601 duration such as P1M or P6W")
        parts = {name: int(value or 0) for name, value in match.groupdict().items()}
        return cls(**parts)

    def __str__(self) -> str:
        text = "P" + "".join(
            f"{value}{unit}" for value, unit in ((self.months, "M"), (self.weeks, "W"), (self.days, "D")) if value
        )
        return text if text != "P" else "P0D"


@dataclass(frozen=True)
class Settings:
    """Every setting of the pipeline. Build it with `load_settings()`."""

    var_dir: Path
    database_url: str
    smtp_url: str
    reports_dir: Path
    outbox_dir: Path
    print_dir: Path
    document_store_dir: Path
    opt_out_window: OptOutWindow = field(default_factory=OptOutWindow)
    smtp_rate_per_second: float = 0.0
    smtp_connections: int = 8
    holdback_threshold: float = 0.01
    shard_size: int = 10_000
    # DMP migration tuning and its document store ("" = the folder document_store_dir).
    document_store_url: str = ""
    migration_batch_persons: int = 500
    migration_content_workers: int = 1
    migration_commit_connections: int = 2
    validation_chunk_documents: int = 25_000
    # A DMP document's content above this size is held back without being read whole.
    max_document_bytes: int = 256 * 1024 * 1024
    # Files at rest (documents, emails kept, print files, reports, keys, the SQLite database):
    # owner-only by default; a deployment that needs a group sets 0640 (folders follow: 0750).
    file_mode: int = 0o600
    # Time limits: one database statement, one SMTP exchange, a sender's claim on a message.
    statement_timeout_seconds: int = 3600
    smtp_timeout_seconds: int = 60
    send_lease_seconds: int = 600
    # Planner statistics refreshed (ANALYZE) at the end of every bulk write of our own tables:
    # without them PostgreSQL plans a fresh table as nearly empty (mes_rollout.db.analyze).
    analyze_after_writes: bool = True

    @property
    def dir_mode(self) -> int:
        """The folders' mode: the file mode with search (x) wherever reading is allowed."""
        mode = self.file_mode | 0o700
        for read_bit, search_bit in ((0o040, 0o010), (0o004, 0o001)):
            if mode & read_bit:
                mode |= search_bit
        return mode

    @property
    def is_embedded_smtp(self) -> bool:
        return self.smtp_url == "embedded"

    @property
    def dialect(self) -> str:
        return self.database_url.split(":", 1)[0].split("+", 1)[0]


def _file_mode(text: str) -> int:
    """An octal file mode that keeps the owner's read and write and gives nobody execute."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise ConfigError(f"MES_FILE_MODE={text!r}: expected an octal mode such as 0600 or 0640") from None
    if mode & ~0o666 or mode & 0o600 != 0o600:
        raise ConfigError(f"MES_FILE_MODE={text!r}: the owner reads and writes, nobody executes (0600, 0640, 0660)")
    return mode


def _flag(text: str, name: str) -> bool:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={text!r}: expected 1 or 0 (true/false, yes/no, on/off)")


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the settings from the environment (or the mapping given, for tests)."""
    env = dict(os.environ if environ is None else environ)
    var_dir = Path(env.get("MES_VAR_DIR", str(PROJECT_ROOT / "var"))).resolve()
    try:
        return Settings(
            var_dir=var_dir,
            database_url=env.get("MES_DATABASE_URL", f"sqlite:///{var_dir / 'mes-rollout.db'}"),
            smtp_url=env.get("MES_SMTP_URL", "embedded"),
            reports_dir=Path(env.get("MES_REPORTS_DIR", str(var_dir / "reports"))),
            outbox_dir=Path(env.get("MES_OUTBOX_DIR", str(var_dir / "outbox"))),
            print_dir=Path(env.get("MES_PRINT_DIR", str(var_dir / "print"))),
            document_store_dir=Path(env.get("MES_DOCUMENT_STORE_DIR", str(var_dir / "documents"))),
            opt_out_window=OptOutWindow.parse(env.get("MES_OPT_OUT_WINDOW", "P1M")),
            smtp_rate_per_second=float(env.get("MES_SMTP_RATE", "0")),
            smtp_connections=int(env.get("MES_SMTP_CONNECTIONS", "8")),
            holdback_threshold=float(env.get("MES_HOLDBACK_THRESHOLD", "0.01")),
            shard_size=int(env.get("MES_SHARD_SIZE", "10000")),
            document_store_url=env.get("MES_DOCUMENT_STORE_URL", ""),
            migration_batch_persons=int(env.get("MES_MIGRATION_BATCH_PERSONS", "500")),
            migration_content_workers=int(env.get("MES_MIGRATION_CONTENT_WORKERS", "1")),
            migration_commit_connections=int(env.get("MES_MIGRATION_COMMIT_CONNECTIONS", "2")),
            validation_chunk_documents=int(env.get("MES_VALIDATION_CHUNK_DOCUMENTS", "25000")),
            max_document_bytes=int(env.get("MES_MAX_DOCUMENT_BYTES", str(256 * 1024 * 1024))),
            file_mode=_file_mode(env.get("MES_FILE_MODE", "0600")),
            statement_timeout_seconds=int(env.get("MES_STATEMENT_TIMEOUT", "3600")),
            smtp_timeout_seconds=int(env.get("MES_SMTP_TIMEOUT", "60")),
            send_lease_seconds=int(env.get("MES_SEND_LEASE", "600")),
            analyze_after_writes=_flag(env.get("MES_ANALYZE_AFTER_WRITES", "1"), "MES_ANALYZE_AFTER_WRITES"),
        )
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"invalid setting: {error}") from error
