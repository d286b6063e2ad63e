"""A query kept under sql/queries/ is filled at its markers, and a marker it lacks is an error,
not a query that silently keeps its comment."""

from __future__ import annotations

import pytest

from mes_rollout.db import load_query


def test_a_marker_is_replaced_by_its_sql() -> None:
    filled = load_query("notifications_pending_letters.sql", fill={"/* which letters */": "AND n.print_batch = :b"})
    assert "/* which letters */" not in filled
    assert filled.count("AND n.print_batch = :b") == 1


def test_a_marker_the_query_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match=r"notifications_pending_letters.sql has no /\* nowhere \*/ to fill"):
        load_query("notifications_pending_letters.sql", fill={"/* nowhere */": "AND FALSE"})
