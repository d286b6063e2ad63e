"""The console's tests: each command's logging starts afresh (the log file of the test's var/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from console import logfile, progress


@pytest.fixture(autouse=True)
def _fresh_console_logging() -> Iterator[None]:
    yield
    logfile.uninstall()
    progress.enable(False)
