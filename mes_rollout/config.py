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

    @property
    def is_embedded_smtp(self) -> bool:
        return self.smtp_url == "embedded"

    @property
    def dialect(self) -> str:
        return self.database_url.split(":", 1)[0].split("+", 1)[0]


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
        )
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"invalid setting: {error}") from error
