"""The one place where settings are read: the environment, with embedded defaults."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mes_rollout.postal_address import MAX_LINE_LENGTH, PostalAddress, normalised_line

PROJECT_ROOT = Path(__file__).resolve().parent.parent

_WINDOW_PATTERN = re.compile(r"^P(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?$")


class ConfigError(ValueError):
    """A setting has a value the pipeline cannot use."""


@dataclass(frozen=True)
class OptOutWindow:
    """Length of the opt-out window: calendar months plus weeks plus days (ISO 8601 duration), and
    the later lengths a decree set, each for the messages sent from its effective date on
    (`changes`, in date order). `enrolment.window.window_for` says which applies to a message."""

    months: int = 1
    weeks: int = 0
    days: int = 0
    changes: tuple[tuple[dt.date, OptOutWindow], ...] = ()

    @classmethod
    def parse(cls, text: str) -> OptOutWindow:
        """`P1M`, or a first length then dated ones: `P1M;2022-04-01=P6W` (P6W for the messages
        sent on 1 April 2022 or later)."""
        first, *dated = [part.strip() for part in text.split(";")]
        base = cls._duration(first, text)
        changes: list[tuple[dt.date, OptOutWindow]] = []
        for part in dated:
            day, _, duration = part.partition("=")
            try:
                effective = dt.date.fromisoformat(day.strip())
            except ValueError:
                raise ConfigError(f"MES_OPT_OUT_WINDOW={text!r}: {part!r} is not DATE=DURATION (2022-04-01=P6W)") from None
            if changes and effective <= changes[-1][0]:
                raise ConfigError(f"MES_OPT_OUT_WINDOW={text!r}: effective dates must increase")
            changes.append((effective, cls._duration(duration, text)))
        return cls(base.months, base.weeks, base.days, tuple(changes))

    @classmethod
    def _duration(cls, part: str, text: str) -> OptOutWindow:
        match = _WINDOW_PATTERN.match(part.strip().upper())
        if not match or not any(match.groupdict().values()):
            raise ConfigError(
                f"MES_OPT_OUT_WINDOW={text!r}: expected an ISO 8601 duration such as P1M or P6W,"
                " optionally followed by dated changes (P1M;2022-04-01=P6W)"
            )
        parts = {name: int(value or 0) for name, value in match.groupdict().items()}
        return cls(parts["months"], parts["weeks"], parts["days"])

    def __str__(self) -> str:
        text = "P" + "".join(
            f"{value}{unit}" for value, unit in ((self.months, "M"), (self.weeks, "W"), (self.days, "D")) if value
        )
        text = text if text != "P" else "P0D"
        return text + "".join(f";{effective.isoformat()}={window}" for effective, window in self.changes)


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
    # Below Airflow's task heartbeat timeout (300 s) plus the first retry delay (60 s): when a
    # worker dies, its shard's retry finds the dead sender's lease passed and sends what it held.
    send_lease_seconds: int = 240
    # A weekly wave of at most this many messages is approved without an operator; a larger one
    # waits for the approval of enrolment_wave (0: every weekly wave waits).
    weekly_auto_approve_cap: int = 20_000
    # Planner statistics refreshed (ANALYZE) at the end of every bulk write of our own tables:
    # without them PostgreSQL plans a fresh table as nearly empty (mes_rollout.db.analyze).
    analyze_after_writes: bool = True
    # The sender's block at the top left of every letter, where La Poste returns a letter it could
    # not deliver (NPAI): AFNOR lines, as MES_RETURN_ADDRESS gives them (see _return_address).
    return_address: tuple[str, ...] = ("ASSURANCE MALADIE", "MON ESPACE SANTE", "TSA 12345", "75000 PARIS CEDEX")
    # Who may answer a wave's approval (Airflow logins, MES_WAVE_APPROVERS=a,b), never the login
    # that triggered the wave: empty = any login allowed to answer (in-process runs, the CLI).
    # `mes-rollout airflow up` sets it to the stack's operator logins unless it is set.
    wave_approvers: tuple[str, ...] = ()

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


def _at_least_zero(name: str, text: str) -> int:
    value = int(text)
    if value < 0:
        raise ConfigError(f"{name}={text!r}: expected a count, 0 or more")
    return value


def _return_address(text: str) -> tuple[str, ...]:
    """MES_RETURN_ADDRESS: lines separated by '|', the sender's name first and 'POSTCODE LOCALITY'
    last ('Assurance Maladie|Mon espace santé|TSA 12345|75000 PARIS CEDEX'), checked as a postal
    address (6 lines of 38 characters at most) and printed as AFNOR lines."""
    name, *middle, last = [line.strip() for line in text.split("|")] if "|" in text else ("", text)
    postcode, _, locality = last.partition(" ")
    address = PostalAddress(tuple(middle), postcode, locality)
    problems = list(address.full_problems())
    if not normalised_line(name) or len(normalised_line(name)) > MAX_LINE_LENGTH:
        problems.insert(0, f"the first line (the sender) must be 1 to {MAX_LINE_LENGTH} characters")
    if problems:
        raise ConfigError(f"MES_RETURN_ADDRESS={text!r}: {'; '.join(problems)}")
    return address.printable_lines(name)


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
            send_lease_seconds=int(env.get("MES_SEND_LEASE", "240")),
            weekly_auto_approve_cap=_at_least_zero("MES_WEEKLY_AUTO_APPROVE_CAP", env.get("MES_WEEKLY_AUTO_APPROVE_CAP", "20000")),
            analyze_after_writes=_flag(env.get("MES_ANALYZE_AFTER_WRITES", "1"), "MES_ANALYZE_AFTER_WRITES"),
            return_address=_return_address(
                env.get("MES_RETURN_ADDRESS", "Assurance Maladie|Mon espace santé|TSA 12345|75000 PARIS CEDEX")
            ),
            wave_approvers=tuple(
                name.strip() for name in env.get("MES_WAVE_APPROVERS", "").split(",") if name.strip()
            ),
        )
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"invalid setting: {error}") from error
