"""Provisional codes: unguessable, reproducible at sending time, stored in the database only as hashes.

Each wave has a secret key drawn with `secrets` and kept outside the database (a file readable by
the pipeline only; a key management service in production). A person's code is an HMAC of their
NIR under the wave's key: whoever holds the database alone cannot compute a code, and a message
re-sent after a crash carries the same code as the first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import uuid
from pathlib import Path

CODE_LENGTH = 10
# Crockford-like alphabet without 0/O and 1/I/L, which people misread when typing from a letter.
_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
_KEY_BYTES = 32


def keys_dir(var_dir: Path) -> Path:
    return var_dir / "keys"


def wave_key(var_dir: Path, wave_id: str, *, create: bool = False) -> bytes:
    """The secret key of a wave; drawn once (create=True at planning), read afterwards."""
    path = keys_dir(var_dir) / f"wave-{hashlib.sha256(wave_id.encode()).hexdigest()[:32]}.key"
    if path.exists():
        return base64.b64decode(path.read_bytes())
    if not create:
        raise FileNotFoundError(f"no provisional-code key for wave {wave_id!r} under {keys_dir(var_dir)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(_KEY_BYTES)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as stream:
        stream.write(base64.b64encode(key))
    try:
        os.link(temporary, path)  # atomic and exclusive: a concurrent planner keeps the first key
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return base64.b64decode(path.read_bytes())


def provisional_code(key: bytes, nir: str) -> str:
    """The person's code, e.g. 'K7RM-4QX2-9T' without separators: 10 symbols, ~49 bits."""
    digest = hmac.new(key, nir.encode(), hashlib.sha256).digest()
    number = int.from_bytes(digest[:16], "big")
    symbols = []
    for _ in range(CODE_LENGTH):
        number, index = divmod(number, len(_ALPHABET))
        symbols.append(_ALPHABET[index])
    return "".join(symbols)


def notification_id(key: bytes, wave_id: str, recipient_nir: str) -> str:
    """The id of the wave's one message to a recipient: made at planning, before any work is queued,
    and the same when planning is re-run. Keyed like the codes, so that an id printed on a letter or
    carried in a Message-ID cannot be traced back to a NIR without the wave's key."""
    digest = hmac.new(key, f"notification:{wave_id}:{recipient_nir}".encode(), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def code_hash(nir: str, code: str) -> str:
    """What the database keeps of a code (the website checks a typed code against it). Salted with
    the NIR, so that one table of hashes cannot be matched against every person at once."""
    return hashlib.sha256(f"{nir}:{code}".encode()).hexdigest()


def formatted(code: str) -> str:
    """The code as printed and mailed: groups of 4-4-2 for reading aloud on the 3422 line."""
    return f"{code[:4]}-{code[4:8]}-{code[8:]}"
