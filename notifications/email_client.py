"""The one module that talks SMTP: where the relay is, connections to it, and typed errors.

A caller decides what to do from the type of the error, never from its text (GOV.UK Notify's
habit): `TemporaryEmailError` (4xx, timeout, refused or dropped connection: retry later; its subclass
`RelayUnreachableError` when no connection could be made or kept),
`PermanentEmailError` (5xx on the recipient: the address is bad), `MessageRejectedError` (5xx on
the message itself: no retry), `RelayConfigurationError` (we cannot log in: stop the run). Errors
carry the SMTP code only: a relay's text often quotes the recipient's address, which must not
reach logs.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from mes_rollout.config import ConfigError
from mes_rollout.constants import DeliveryErrorKind
from notifications.render import DEFAULT_SENDER


class EmailClientError(Exception):
    """A message could not be handed to the relay; `kind` says what the caller should do."""

    kind: DeliveryErrorKind = DeliveryErrorKind.TECHNICAL

    def __init__(self, smtp_code: int | None, stage: str) -> None:
        super().__init__(f"{self.kind.value} failure at {stage}" + (f" (SMTP {smtp_code})" if smtp_code else ""))
        self.smtp_code = smtp_code
        self.stage = stage


class TemporaryEmailError(EmailClientError):
    """Try again later: 4xx, timeout, connection refused or dropped."""

    kind = DeliveryErrorKind.TEMPORARY


class RelayUnreachableError(TemporaryEmailError):
    """The connection to the relay could not be made or was lost: nothing says the message is bad."""


class PermanentEmailError(EmailClientError):
    """The relay refuses the recipient for good (5xx on RCPT): a letter is sent instead."""

    kind = DeliveryErrorKind.PERMANENT


class MessageRejectedError(EmailClientError):
    """The relay refuses the message itself (5xx on MAIL FROM or DATA): retrying will not help."""

    kind = DeliveryErrorKind.TECHNICAL


class RelayConfigurationError(EmailClientError):
    """The relay refuses us (authentication, TLS): no message can go, the run must stop."""

    kind = DeliveryErrorKind.TECHNICAL


def _by_code(code: int, stage: str, permanent: type[EmailClientError]) -> EmailClientError:
    return TemporaryEmailError(code, stage) if 400 <= code < 500 else permanent(code, stage)


def classify(error: BaseException) -> EmailClientError:
    """The typed error for whatever aiosmtplib or the network raised."""
    if isinstance(error, EmailClientError):
        return error
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in error.recipients]
        code = max(codes) if codes else 550
        return _by_code(code, "RCPT", PermanentEmailError)
    if isinstance(error, aiosmtplib.SMTPRecipientRefused):
        return _by_code(error.code, "RCPT", PermanentEmailError)
    if isinstance(error, aiosmtplib.SMTPAuthenticationError):
        return RelayConfigurationError(error.code, "AUTH")
    if isinstance(error, aiosmtplib.SMTPSenderRefused):
        return _by_code(error.code, "MAIL", MessageRejectedError)
    if isinstance(error, aiosmtplib.SMTPDataError):
        return _by_code(error.code, "DATA", MessageRejectedError)
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return _by_code(error.code, "SMTP", MessageRejectedError)
    if isinstance(error, aiosmtplib.SMTPNotSupported | ssl.SSLError):
        return RelayConfigurationError(None, "TLS")
    if isinstance(error, aiosmtplib.SMTPException | OSError | asyncio.TimeoutError | EOFError):
        # Disconnected, refused, timed out.
        return RelayUnreachableError(None, "CONNECTION")
    raise error


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to reach the relay."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    implicit_tls: bool = False
    validate_certs: bool = True
    ca_file: str | None = None
    timeout: float = 30.0
    sender: str = DEFAULT_SENDER

    @classmethod
    def from_url(cls, url: str, default_timeout: float = 30.0) -> SmtpTarget:
        """`smtp://host:port`, `smtp+starttls://user:pass@host:port` or `smtps://...`; query options
        `from=address`, `ca_file=path`, `verify=false`, `timeout=seconds`."""
        parts = urlsplit(url)
        schemes = {"smtp": (False, False), "smtp+starttls": (True, False), "smtps": (False, True)}
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError("MES_SMTP_URL must be 'embedded' or smtp://host:port, smtp+starttls://... or smtps://...")
        starttls, implicit_tls = schemes[parts.scheme]
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit_tls else 587 if starttls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            starttls=starttls,
            implicit_tls=implicit_tls,
            validate_certs=options.get("verify", "true").lower() not in ("0", "false", "no"),
            ca_file=options.get("ca_file"),
            timeout=float(options.get("timeout", default_timeout)),
            sender=options.get("from", DEFAULT_SENDER),
        )

    @classmethod
    def from_airflow_connection(cls, connection: Any, default_timeout: float = 30.0) -> SmtpTarget:
        """From an Airflow SMTP connection, read as the SMTP provider's hook reads it: login and
        password, extras `disable_tls` (STARTTLS unless true), `disable_ssl` (implicit TLS unless
        true), `from_email`, `timeout`, and `ssl_context` ('none' skips certificate checks)."""
        extra = dict(getattr(connection, "extra_dejson", None) or {})
        implicit_tls = not _truthy(extra.get("disable_ssl", False))
        return cls(
            host=connection.host or "localhost",
            port=int(connection.port or (465 if implicit_tls else 587)),
            username=connection.login or None,
            password=connection.password or None,
            starttls=not implicit_tls and not _truthy(extra.get("disable_tls", False)),
            implicit_tls=implicit_tls,
            validate_certs=str(extra.get("ssl_context", "default")).lower() != "none",
            ca_file=extra.get("ca_file"),
            timeout=float(extra.get("timeout", default_timeout)),
            sender=extra.get("from_email") or DEFAULT_SENDER,
        )

    @property
    def sender_address(self) -> str:
        """The bare address of the sender (MAIL FROM), whether `sender` has a display name or not."""
        return self.sender.rsplit("<", 1)[-1].strip(" >")


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes", "on")


class RateLimiter:
    """At most `rate` hand-overs a second across every connection of a process (0 = no limit)."""

    def __init__(self, rate_per_second: float) -> None:
        self._interval = 1.0 / rate_per_second if rate_per_second > 0 else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


class RelayConnection:
    """One SMTP connection, opened on first use and again after it was lost."""

    def __init__(self, target: SmtpTarget, limiter: RateLimiter) -> None:
        self._target = target
        self._limiter = limiter
        self._smtp: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        target = self._target
        smtp = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            timeout=target.timeout,
            use_tls=target.implicit_tls,
            start_tls=target.starttls,
            validate_certs=target.validate_certs,
            cert_bundle=target.ca_file,
        )
        await smtp.connect()  # EHLO, STARTTLS and AUTH as configured
        return smtp

    async def send(self, recipient: str, message: bytes) -> None:
        """Hand one message to the relay; returns once the relay accepted it (250)."""
        await self._limiter.wait()
        try:
            if self._smtp is None or not self._smtp.is_connected:
                self._smtp = None
                self._smtp = await self._connect()
            await self._smtp.sendmail(self._target.sender_address, [recipient], message)
        except Exception as error:  # noqa: BLE001 - every failure is classified, unknown ones re-raised
            typed = classify(error)
            if isinstance(typed, RelayUnreachableError | RelayConfigurationError) or typed.smtp_code == 421:
                await self.close()
            raise typed from None

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await asyncio.wait_for(smtp.quit(), timeout=5)
            except Exception:  # noqa: BLE001 - closing a broken connection may fail in any way
                smtp.close()


class EmailClient:
    """A few connections to the relay sharing one rate limit."""

    def __init__(self, target: SmtpTarget, *, connections: int, rate_per_second: float = 0.0) -> None:
        if connections < 1:
            raise ConfigError("MES_SMTP_CONNECTIONS must be at least 1")
        limiter = RateLimiter(rate_per_second)
        self.target = target
        self.connections = [RelayConnection(target, limiter) for _ in range(connections)]

    async def close(self) -> None:
        await asyncio.gather(*(connection.close() for connection in self.connections))
