"""The last line of defence of the logs: no email address, NIR or bound SQL parameters in a record.

The code never logs personal data on purpose (NIRs go through `mes_rollout.nir.mask`); this filter
catches what slips through anyway, whoever logs it (a library's debug line, an exception message
carrying a row): it rewrites each record it passes, message, arguments and traceback, masking
email addresses, NIR-shaped strings and SQLAlchemy's "[parameters: ...]" block (bound values such
as names). Install it on a handler (`install(handler)`), so that it sees the records of every
logger that reaches that handler, or on all the handlers of the root logger (`install_on_root()`)
from a DAG task.
"""

from __future__ import annotations

import logging
import re
import traceback

# A NIR: sex digit, year, month, place (2A/2B for Corsica), commune, order, and the key when it
# is there (13 or 15 characters), not inside a longer run of digits or letters.
NIR_PATTERN = re.compile(r"(?<![0-9A-Za-z])[1-478]\d{2}[0-9]{2}(?:\d{2}|2[AB])\d{6}(?:\d{2})?(?![0-9A-Za-z])")
EMAIL_PATTERN = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+")
# SQLAlchemy appends the bound values of a failed statement to its error message.
SQL_PARAMETERS = re.compile(r"\[parameters: .*?\](?=\n|$)", re.DOTALL)

EMAIL_MASK = "<email>"
PARAMETERS_MASK = "[parameters: hidden]"


def _mask_nir(match: re.Match[str]) -> str:
    value = match.group(0)
    return value[:5] + "*" * (len(value) - 5)  # as mes_rollout.nir.mask: sex, year, month of birth


def mask_text(text: str) -> str:
    """`text` with email addresses, NIR-shaped strings and SQL parameter lists masked."""
    if not text:
        return text
    text = SQL_PARAMETERS.sub(PARAMETERS_MASK, text)
    if "@" in text:
        text = EMAIL_PATTERN.sub(EMAIL_MASK, text)
    return NIR_PATTERN.sub(_mask_nir, text)


class RedactingFilter(logging.Filter):
    """Masks personal data in every record it passes (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_mes_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a badly formatted record is still logged, as its template
            message = str(record.msg)
        record.msg = mask_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        record._mes_redacted = True
        return True


def install(handler: logging.Handler) -> logging.Handler:
    """Put the filter on `handler` (once) and return it."""
    if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
        handler.addFilter(RedactingFilter())
    return handler


def install_on_root() -> None:
    """Put the filter on every handler of the root logger (a DAG task may call it first thing)."""
    for handler in logging.getLogger().handlers:
        install(handler)
