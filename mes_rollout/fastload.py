"""The bulk-load engine of the intakes: two connections, rows streamed by COPY, keys rebuilt after a first load.

An intake that loads millions of rows in one transaction takes from here what does not depend on
its rules:

- `FastLoad`: the load's connection (its transaction) and, on PostgreSQL, a second one for scratch
  tables and statements that run beside it (on SQLite, the same connection). Whatever fails inside
  it, in any thread, stops every writer, aborts any COPY, cancels a statement in progress, and
  rolls back and closes both connections: no path leaves a connection waiting.
- `Writer`: rows (Arrow tables) streamed into a table, on PostgreSQL through COPY in a thread of
  its own, so that the server takes a batch in while the next is read and checked.
- `Spool`: rows held until there are enough of them to be worth a COPY of their own.
- `is_first_load`, `make_room`: on a first load (the target empty), its keys and indexes dropped,
  and what rebuilds them once the rows are in (PostgreSQL's recipe for populating a table).
- `SeenKeys`: a Bloom filter of integer keys, telling which keys surely come for the first time.
- `create_staging`, `collector_paused`, `repeated`: the small pieces around them.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from sqlalchemy import Connection, Engine

from mes_rollout import bulk
from mes_rollout.arrowcsv import int64_array, string_array

log = logging.getLogger(__name__)

T = TypeVar("T")

# PostgreSQL settings for a bulk load's transactions: memory for the hash joins of the rules over
# the whole file and for the index builds of a first load (a million keys: with the server's default
# 4 MB they spill to disk in dozens of batches), index builds shared with two parallel workers
# (1.4 s faster on two cores, measured, even beside the rules), and no JIT (its compiling costs
# more than it saves on these simple, large statements).
INTAKE_SETTINGS = {
    "work_mem": "256MB",
    "maintenance_work_mem": "256MB",
    "max_parallel_maintenance_workers": "2",
    "jit": "off",
}
# Column types of scratch tables other than TEXT, per dialect.
_TYPES = {
    "postgresql": {"BIGINT": "BIGINT", "BOOLEAN": "BOOLEAN", "DATE": "DATE", "TEXT": "TEXT"},
    "sqlite": {"BIGINT": "BIGINT", "BOOLEAN": "INTEGER", "DATE": "TEXT", "TEXT": "TEXT"},
}
# How long a failed load waits for a writer to stop by itself before cancelling what its connection
# is doing, then before closing the connection under it.
_STOP_GRACE_SECONDS = 2.0
_CANCEL_TIMEOUT_SECONDS = 5.0


class LoadAbandoned(RuntimeError):
    """The load failed elsewhere: the writer stopped without writing the rest."""


def _driver_connection(connection: Connection) -> Any:
    raw = connection.connection.driver_connection
    assert raw is not None
    return raw


def _cancel(connection: Connection) -> None:
    """Ask the server to cancel the statement in progress on the connection (from another thread)."""
    with contextlib.suppress(Exception):
        _driver_connection(connection).cancel_safe(timeout=_CANCEL_TIMEOUT_SECONDS)


class FastLoad:
    """The connections of one bulk load, and the writers that stream rows into them.

    `connection` holds the load's transaction: committed when the `with` block ends normally,
    rolled back otherwise. `side_connection` is, on PostgreSQL, a second connection (scratch tables
    and the statements that run beside the load's own; it commits nothing, it is rolled back at the
    end), on SQLite `connection` itself. Both run with INTAKE_SETTINGS.

    When the block fails (an exception in it, in a writer's thread, in `beside`), every writer is
    stopped (a COPY in progress aborted, a statement still running cancelled, as a last resort its
    connection closed), then both connections are rolled back and closed."""

    def __init__(self, engine: Engine, settings: Mapping[str, str] = INTAKE_SETTINGS) -> None:
        self.engine = engine
        self.settings = dict(settings)
        self.postgres = engine.dialect.name == "postgresql"
        self._writers: list[Writer] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> FastLoad:
        with contextlib.ExitStack() as stack:
            self.connection: Connection = stack.enter_context(self.engine.begin())
            self.side_connection: Connection = self.connection
            if self.postgres:
                self._apply_settings(self.connection)
                self.side_connection = stack.enter_context(self.engine.connect())
                self._apply_settings(self.side_connection)
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        failure: BaseException | None = None
        if exc is None:
            try:
                for writer in self._writers:
                    writer.close()
            except BaseException as error:
                failure = error
                exc_type, exc, traceback = type(error), error, error.__traceback__
        if exc is not None:
            for writer in self._writers:
                writer.abandon()
        if self.side_connection is not self.connection:
            with contextlib.suppress(Exception):
                self.side_connection.rollback()  # its scratch tables go with it
        self._stack.__exit__(exc_type, exc, traceback)  # closes the side connection, then commits or rolls back
        if failure is not None:
            raise failure

    def _apply_settings(self, connection: Connection) -> None:
        for name, value in self.settings.items():
            connection.exec_driver_sql(f"SET LOCAL {name} = '{value}'")

    def writer(self, connection: Connection) -> Writer:
        """A writer into `connection` (the load's or the side one), stopped with the load."""
        writer = Writer(connection)
        self._writers.append(writer)
        return writer

    def beside(self, on_main: Callable[[], None] | None, on_side: Callable[[], T]) -> T:
        """`on_side()` (statements on the side connection), while `on_main()` runs statements on the
        load's connection in a thread of its own; on SQLite one after the other, `on_side` first.
        If either fails, the other is cancelled or waited for, and the first error is raised."""
        if on_main is None:
            return on_side()
        if self.side_connection is self.connection:
            result = on_side()
            on_main()
            return result
        errors: list[BaseException] = []

        def run() -> None:
            try:
                on_main()
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                errors.append(error)

        thread = threading.Thread(target=run, name="fastload-beside", daemon=True)
        thread.start()
        try:
            result = on_side()
        except BaseException:
            if thread.is_alive():
                _cancel(self.connection)
            thread.join()
            raise
        thread.join()
        if errors:
            raise errors[0]
        return result


class Writer:
    """Where rows go while a file streams. On PostgreSQL a thread of its own sends them through
    COPY (CSV), one COPY per table until rows of another table or a statement come; on SQLite,
    executemany in turn. The caller's thread does not use the connection until `close` returns.

    A failure in the thread is raised by the caller's next `rows`, `call` or `close`. `abandon`
    stops the thread whatever it is doing (the transaction is left for the caller to roll back)."""

    _QUEUE_BATCHES = 6
    _PUT_WAIT_SECONDS = 0.2

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.postgres = connection.dialect.name == "postgresql"
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._closed = False
        if self.postgres:
            self.queue: queue.Queue[tuple[str, tuple[str, ...], pa.Table] | Callable[[Connection], None] | None]
            self.queue = queue.Queue(maxsize=self._QUEUE_BATCHES)
            self.thread = threading.Thread(target=self._run, name="fastload-writer", daemon=True)
            self.thread.start()

    def rows(self, table: str, columns: tuple[str, ...], rows: pa.Table) -> None:
        """Append `rows` (columns named and ordered as `columns`) to `table`."""
        if len(rows) == 0:
            return
        if not self.postgres:
            bulk.insert_rows(self.connection, table, columns, zip(*[column.to_pylist() for column in rows.columns], strict=True))
            return
        self._put((table, columns, rows))

    def call(self, work: Callable[[Connection], None]) -> None:
        """Run `work` on the connection, in turn with the rows."""
        if not self.postgres:
            work(self.connection)
            return
        self._put(work)

    def _put(self, item: tuple[str, tuple[str, ...], pa.Table] | Callable[[Connection], None] | None) -> None:
        # Never blocks for good: a thread that failed takes nothing more from the queue.
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(item, timeout=self._PUT_WAIT_SECONDS)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Everything written is in the database (raises the thread's error, if any)."""
        if self._closed:
            return
        self._closed = True
        if self.postgres:
            if self.thread.is_alive():
                self._put(None)
                self.thread.join()
            if self.error is not None:
                raise self.error

    def abandon(self) -> None:
        """Stop writing after a failure: the thread ends, a COPY in progress is aborted."""
        self._closed = True
        if not self.postgres or not self.thread.is_alive():
            return
        if self.error is None:
            self.error = LoadAbandoned("the load failed: rows left unwritten")
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)  # the queue is full only while the thread is busy: it sees _stopping next
        self.thread.join(_STOP_GRACE_SECONDS)
        if self.thread.is_alive():  # waiting on the server: cancel what it is doing
            _cancel(self.connection)
            self.thread.join(_CANCEL_TIMEOUT_SECONDS + _STOP_GRACE_SECONDS)
        if self.thread.is_alive():
            log.error("a writer did not stop after its statement was cancelled: closing its connection")
            with contextlib.suppress(Exception):
                _driver_connection(self.connection).close()
            self.thread.join(_STOP_GRACE_SECONDS)

    def _run(self) -> None:
        raw = _driver_connection(self.connection)
        copying: tuple[str, contextlib.ExitStack, Any] | None = None
        options = pcsv.WriteOptions(include_header=False)
        try:
            while (item := self.queue.get()) is not None and not self._stopping.is_set():
                if callable(item):
                    if copying is not None:
                        copying[1].close()
                        copying = None
                    item(self.connection)
                    continue
                table, columns, rows = item
                if copying is None or copying[0] != table:
                    if copying is not None:
                        copying[1].close()
                        copying = None
                    stack = contextlib.ExitStack()
                    cursor = stack.enter_context(raw.cursor())
                    copy = stack.enter_context(cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"))
                    copying = (table, stack, copy)
                buffer = io.BytesIO()
                pcsv.write_csv(rows, buffer, options)
                copying[2].write(buffer.getbuffer())
            if copying is not None and not self._stopping.is_set():
                copying[1].close()
                copying = None
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            self.error = error
        finally:
            if copying is not None:  # aborted: the server is told the COPY failed
                with contextlib.suppress(Exception):
                    copying[1].__exit__(LoadAbandoned, LoadAbandoned("the load failed"), None)


class Spool:
    """Rows for one table, sent `flush_rows` at a time (and by `flush`): each switch of a writer's
    COPY between tables ends a COPY and waits for the server, so rows that come a few at a time
    are sent in large batches."""

    def __init__(self, writer: Writer, table: str, columns: tuple[str, ...], flush_rows: int = 50_000) -> None:
        self.writer = writer
        self.table = table
        self.columns = columns
        self.flush_rows = flush_rows
        self._held: list[pa.Table] = []
        self._held_rows = 0

    def add(self, rows: pa.Table) -> None:
        self._held.append(rows)
        self._held_rows += len(rows)
        if self._held_rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if self._held:
            self.writer.rows(self.table, self.columns, pa.concat_tables(self._held))
            self._held, self._held_rows = [], 0


def create_staging(
    connection: Connection, table: str, columns: tuple[str, ...], types: Mapping[str, str] | None = None
) -> None:
    """A temporary table (replacing one of that name) with `columns`, TEXT unless `types` says
    BIGINT, BOOLEAN or DATE (on SQLite: INTEGER and TEXT)."""
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    names = _TYPES["postgresql" if connection.dialect.name == "postgresql" else "sqlite"]
    definition = ", ".join(f"{name} {names[(types or {}).get(name, 'TEXT')]}" for name in columns)
    connection.exec_driver_sql(f"CREATE TEMP TABLE {table} ({definition})")


def is_first_load(connection: Connection, table: str) -> bool:
    """Whether `table` is empty. On PostgreSQL the table is locked against other writers first:
    concurrent loads queue here rather than both taking the first-load path."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
    return connection.exec_driver_sql(f"SELECT 1 FROM {table} LIMIT 1").first() is None  # noqa: S608


def _secondary_indexes(connection: Connection, table: str) -> list[tuple[str, str]]:
    """The indexes of `table` other than its constraints', with the statements that build them."""
    if connection.dialect.name == "postgresql":
        query = (
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            f" AND tablename = '{table}' AND indexname NOT IN"
            f" (SELECT conname FROM pg_constraint WHERE conrelid = '{table}'::regclass)"
        )
    else:
        query = f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}' AND sql IS NOT NULL"  # noqa: S608
    return [(str(name), str(definition)) for name, definition in connection.exec_driver_sql(query)]


def _key_constraints(connection: Connection, table: str) -> list[tuple[str, str, str]]:
    """(table, name, definition) of `table`'s primary key, then of the foreign keys that reference it."""
    primary = connection.exec_driver_sql(
        f"SELECT '{table}', conname, pg_get_constraintdef(oid) FROM pg_constraint"  # noqa: S608
        f" WHERE conrelid = '{table}'::regclass AND contype = 'p'"
    ).one()
    referencing = connection.exec_driver_sql(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        f" WHERE confrelid = '{table}'::regclass AND contype = 'f' ORDER BY 1, 2"
    ).all()
    return [(str(owner), str(name), str(definition)) for owner, name, definition in [primary, *referencing]]


def make_room(connection: Connection, table: str) -> Callable[[], None]:
    """Before a first load: `table`'s secondary indexes dropped, and on PostgreSQL its primary key
    with the foreign keys that reference it (all empty when `table` is). Returns what builds them
    again, once, at the end (same transaction: nothing is seen half-done, a failure restores them)."""
    indexes = _secondary_indexes(connection, table)
    for name, _definition in indexes:
        connection.exec_driver_sql(f'DROP INDEX "{name}"')
    constraints = _key_constraints(connection, table) if connection.dialect.name == "postgresql" else []
    if constraints:
        connection.exec_driver_sql(f'ALTER TABLE {table} DROP CONSTRAINT "{constraints[0][1]}" CASCADE')

    def rebuild() -> None:
        for owner, name, definition in constraints:
            connection.exec_driver_sql(f'ALTER TABLE {owner} ADD CONSTRAINT "{name}" {definition}')
        for _name, definition in indexes:
            connection.exec_driver_sql(definition)

    return rebuild


class SeenKeys:
    """Which integer keys may have come before: one bit per hash of a key (a Bloom filter). A key
    seen before always finds its bit set; a new one finds it set now and then (a hash shared with
    another key), which only sends its row the longer way. So a load that sends a key's first
    sighting straight into its table sends at most one row per key there."""

    _MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, bits: int = 27) -> None:
        self.table = np.zeros(1 << max(bits - 3, 0), np.uint8)
        self.shift = np.uint64(64 - bits)

    def first_sightings(self, keys: np.ndarray) -> np.ndarray:
        """For each key, whether it surely appears for the first time, among the keys seen so far
        and earlier in `keys`; records them all as seen."""
        if len(keys) == 0:
            return np.zeros(0, bool)
        with np.errstate(over="ignore"):
            hashes = (keys.astype(np.uint64) * self._MULTIPLIER) >> self.shift
        byte = (hashes >> np.uint64(3)).astype(np.int64)
        bit = (np.uint8(1) << (hashes & np.uint64(7)).astype(np.uint8)).astype(np.uint8)
        unseen = (self.table[byte] & bit) == 0
        first = np.zeros(len(hashes), bool)
        first[np.unique(hashes, return_index=True)[1]] = True
        np.bitwise_or.at(self.table, byte, bit)
        return unseen & first


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while rows stream: rows and their fields form no cycles
    (reference counting frees them), and each batch of lists and dicts would otherwise set off
    collections that walk every live object."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def repeated(value: str, count: int) -> pa.Array:
    """A string array of `count` times `value`."""
    return pc.take(string_array([value]), int64_array(np.zeros(count)))
