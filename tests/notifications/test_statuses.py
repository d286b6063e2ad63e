"""The table of status moves: complete, and enforced."""

from __future__ import annotations

import pytest

from mes_rollout.constants import Channel, NotificationStatus
from notifications import statuses

S = NotificationStatus


def test_every_status_is_reachable_from_created() -> None:
    reached = {S.CREATED}
    for table in statuses.TRANSITIONS.values():
        for targets in table.values():
            reached |= targets
    assert reached == set(NotificationStatus)


@pytest.mark.parametrize(
    ("channel", "target", "expected"),
    [
        (Channel.EMAIL, S.DELIVERED, {S.SENDING, S.SENT}),
        (Channel.EMAIL, S.PERMANENT_FAILURE, {S.SENDING, S.SENT, S.DELIVERED}),
        (Channel.LETTER, S.RETURNED, {S.POSTED}),
        (Channel.LETTER, S.DELIVERED, set()),
        (Channel.EMAIL, S.RETURNED, set()),
        ("fax", S.SENT, set()),
    ],
)
def test_the_sources_of_a_move_depend_on_the_channel(channel: str, target: S, expected: set[S]) -> None:
    assert statuses.sources(channel, target) == expected


@pytest.mark.parametrize(("source", "target"), [(S.PRINTED, S.SENT), (S.SENT, S.CREATED), (S.RETURNED, S.POSTED)])
def test_a_move_no_channel_allows_is_refused(source: S, target: S) -> None:
    with pytest.raises(ValueError, match="cannot go"):
        statuses.check(source, target)
