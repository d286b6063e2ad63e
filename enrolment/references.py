"""Message references: the short, checked code a person reads out on the 3422 line to name a message.

A reference is 8 symbols drawn from the notification id, then a check symbol: 9 symbols of the
codes' alphabet (no 0/O, no 1/I/L), printed 4-4-1 for reading aloud ("K7QX-M4RT-9"). The alphabet
has 31 symbols, a prime, and the check makes sum(position x value) = 0 modulo 31 over positions
1 to 9. A wrong symbol at position p changes the sum by p x (the difference of two values), never
a multiple of 31; two symbols swapped at positions p and q change it by (p - q) x (their
difference), never a multiple of 31 either. So every single wrong symbol and every swap (adjacent
or not) is caught, and an agent can tell a caller "that reference does not exist" before any search.

The notification id stays the message's key (Message-ID, feedback.csv); the reference is stored
beside it, unique (sql/schema/0010_notification_reference.sql). It is drawn from the id, and on the
rare clash with another message's reference (31^8 = 8.5 x 10^11 bodies: 1 draw in 12 000 clashes
once 70 million messages exist) the next draw of the same id is taken: see `free_references`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from sqlalchemy import Connection, bindparam, text

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # as enrolment/codes.py: no 0/O, no 1/I/L
_VALUE = {symbol: value for value, symbol in enumerate(ALPHABET)}
_MODULUS = len(ALPHABET)  # 31, a prime: what makes the check catch every single error and swap
BODY_LENGTH = 8
LENGTH = BODY_LENGTH + 1
_CHECK_WEIGHT_INVERSE = pow(LENGTH, -1, _MODULUS)  # the check symbol sits at position 9
_SEPARATORS = re.compile(r"[\s\-./]+")
_CHUNK = 500
_MAX_DRAWS = 64  # 64 clashes in a row would take a rollout of 10^11 messages: a bug, not chance


class BadReference(ValueError):
    """The text is not a reference: wrong length, a symbol outside the alphabet, or a failed check."""


def _weighted_sum(symbols: str) -> int:
    return sum(position * _VALUE[symbol] for position, symbol in enumerate(symbols, start=1))


def check_symbol(body: str) -> str:
    """The 9th symbol of the reference whose first 8 are `body`."""
    if len(body) != BODY_LENGTH or any(symbol not in _VALUE for symbol in body):
        raise BadReference(f"a reference body is {BODY_LENGTH} symbols of {ALPHABET}")
    return ALPHABET[(-_weighted_sum(body) * _CHECK_WEIGHT_INVERSE) % _MODULUS]


def is_valid(reference: str) -> bool:
    """Nine symbols of the alphabet whose check holds (no separators: see `parse`)."""
    return (
        len(reference) == LENGTH
        and all(symbol in _VALUE for symbol in reference)
        and _weighted_sum(reference) % _MODULUS == 0
    )


def parse(typed: str) -> str:
    """A reference as typed or read out ('k7qx m4rt 9', 'K7QX-M4RT-9') in its stored form 'K7QXM4RT9'."""
    reference = _SEPARATORS.sub("", typed or "").upper()
    if len(reference) != LENGTH:
        raise BadReference(f"a reference has {LENGTH} symbols, not {len(reference)}")
    if any(symbol not in _VALUE for symbol in reference):
        raise BadReference(f"a reference is written with {ALPHABET} only (no 0, O, 1, I or L)")
    if not is_valid(reference):
        raise BadReference("the check symbol does not match: a symbol was misread or two were swapped")
    return reference


def grouped(reference: str) -> str:
    """The reference as printed and mailed: 'K7QX-M4RT-9'."""
    return f"{reference[:4]}-{reference[4:8]}-{reference[8:]}"


def draw(notification_id: str, attempt: int = 0) -> str:
    """The `attempt`-th reference drawn from a notification id: the same every time it is asked."""
    digest = hashlib.sha256(f"reference:{notification_id}:{attempt}".encode()).digest()
    number = int.from_bytes(digest[:16], "big")
    symbols = []
    for _ in range(BODY_LENGTH):
        number, value = divmod(number, _MODULUS)
        symbols.append(ALPHABET[value])
    body = "".join(symbols)
    return body + check_symbol(body)


_TAKEN = text(
    "SELECT reference, notification_id FROM notifications WHERE reference IN :references"
).bindparams(bindparam("references", expanding=True))


def free_references(connection: Connection, notification_ids: Iterable[str]) -> dict[str, str]:
    """A reference for each notification id, for its insert: the first draw that no other message
    holds and no other id of this call is given. A message that already holds a reference keeps it
    (a re-run inserts nothing new). A concurrent writer may take the same reference between this
    look-up and the insert: the UNIQUE index then fails that insert, and the re-run draws again."""
    pending = {notification_id: 0 for notification_id in dict.fromkeys(notification_ids)}
    chosen: dict[str, str] = {}
    given: set[str] = set()
    while pending:
        proposed = {notification_id: draw(notification_id, attempt) for notification_id, attempt in pending.items()}
        holders: dict[str, str] = {}
        wanted = list(dict.fromkeys(proposed.values()))
        for start in range(0, len(wanted), _CHUNK):
            for reference, holder in connection.execute(_TAKEN, {"references": wanted[start : start + _CHUNK]}):
                holders[reference] = holder
        for notification_id, reference in proposed.items():
            holder = holders.get(reference)
            if (holder is None or holder == notification_id) and reference not in given:
                chosen[notification_id] = reference
                given.add(reference)
                del pending[notification_id]
            elif pending[notification_id] + 1 >= _MAX_DRAWS:
                raise RuntimeError(f"no free reference after {_MAX_DRAWS} draws: is the references' index intact?")
            else:
                pending[notification_id] += 1
    return chosen
