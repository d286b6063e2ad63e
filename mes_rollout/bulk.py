"""Writing many rows at once: COPY on PostgreSQL, executemany on SQLite, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection


def insert_rows(connection: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Append rows (tuples in the order of `columns`) to a table; returns how many."""
    rows = list(rows)
    if not rows:
        return 0
    raw = connection.connection.driver_connection
    assert raw is not None
    if connection.dialect.name == "postgresql":
        with raw.cursor() as cursor:  # type: ignore[attr-defined]
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return len(rows)
    marks = ", ".join("?" for _ in columns)
    cursor = raw.cursor()
    try:
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)  # noqa: S608
    finally:
        cursor.close()
    return len(rows)


def copy_lines(connection: Connection, table: str, columns: Sequence[str], chunks: Iterable[list[str]]) -> int:
    """PostgreSQL only: append rows already written in COPY text format (one line each, escaped),
    a chunk of lines per write, in one COPY (the server parses a chunk while the next is made);
    returns how many. For row counts where formatting in Python is the cost (`insert_rows` formats
    value by value)."""
    raw = connection.connection.driver_connection
    assert raw is not None
    copied = 0
    with raw.cursor() as cursor:  # type: ignore[attr-defined]
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for lines in chunks:
                copy.write("".join(lines))  # one write per chunk: each write costs a round of the driver
                copied += len(lines)
    return copied
