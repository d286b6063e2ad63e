"""Every move a message's status may make, by channel: the one table the code and the feedback obey.

    email   created -> sending -> sent -> delivered
                          |        |       `-> permanent_failure   (a late bounce)
                          |        |-> permanent_failure | temporary_failure   (feedback)
                          |        `-- (the relay took it; feedback may also come while `sending`)
                          |-> sending (another attempt) | permanent_failure | technical_failure
    letter  created -> printed (in batch N) -> posted -> returned
    both    created -> cancelled (never sent: address not printable, wave rejected, everyone died)
"""

from __future__ import annotations

from mes_rollout.constants import Channel, NotificationStatus

S = NotificationStatus

TRANSITIONS: dict[Channel, dict[NotificationStatus, frozenset[NotificationStatus]]] = {
    Channel.EMAIL: {
        S.CREATED: frozenset({S.SENDING, S.CANCELLED}),
        S.SENDING: frozenset(
            {S.SENDING, S.SENT, S.PERMANENT_FAILURE, S.TECHNICAL_FAILURE, S.DELIVERED, S.TEMPORARY_FAILURE}
        ),
        S.SENT: frozenset({S.DELIVERED, S.PERMANENT_FAILURE, S.TEMPORARY_FAILURE}),
        S.DELIVERED: frozenset({S.PERMANENT_FAILURE}),
    },
    Channel.LETTER: {
        S.CREATED: frozenset({S.PRINTED, S.CANCELLED}),
        S.PRINTED: frozenset({S.POSTED}),
        S.POSTED: frozenset({S.RETURNED}),
    },
}


def sources(channel: str, target: NotificationStatus) -> frozenset[NotificationStatus]:
    """The statuses a message of `channel` may be in for it to move to `target`."""
    try:
        table = TRANSITIONS[Channel(channel)]
    except ValueError:
        return frozenset()
    return frozenset(source for source, targets in table.items() if target in targets)


def check(source: NotificationStatus, target: NotificationStatus) -> None:
    """Raise if no channel allows the move (a programming error, not bad input)."""
    if not any(target in table.get(source, ()) for table in TRANSITIONS.values()):
        raise ValueError(f"a message cannot go from {source.value} to {target.value}")
