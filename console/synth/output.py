"""The CSV files the generator writes, row by row, knowing the physical line each row starts on."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType


class CsvSink:
    """A `;`-separated UTF-8 CSV file with a header, as INPUTS.md describes, written as a stream.

    faults.csv points at physical lines (header = line 1); a quoted field with a line break makes a
    row span several lines, so the count follows the line breaks actually written.
    """

    def __init__(self, path: Path, header: Sequence[str]) -> None:
        self.path = path
        self.rows = 0
        self._stream = path.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._stream, delimiter=";", quotechar='"', lineterminator="\n")
        self._writer.writerow(header)
        self._next_line = 2

    def write(self, row: Sequence[str]) -> int:
        """Write one row; returns the physical line it starts on."""
        line = self._next_line
        self._writer.writerow(row)
        self._next_line += 1 + "".join(row).count("\n")
        self.rows += 1
        return line

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> CsvSink:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
