"""The phone agent's look-up: `notification find REF`, the message a reference read out on the 3422
line names (K7QX-M4RT-9), its people's states (NIRs masked) and its audit trail."""

from __future__ import annotations

import argparse
from typing import Any

from console.commands import Commands


def _find(args: argparse.Namespace) -> dict[str, Any]:
    from enrolment.references import BadReference
    from mes_rollout.db import get_engine
    from notifications.lookup import find_message

    try:
        with get_engine().connect() as connection:
            return find_message(connection, " ".join(args.reference))
    except BadReference as error:
        raise SystemExit(f"mes-rollout: not a message reference: {error}") from None


def add_commands(commands: Commands) -> None:
    notification = commands.top.add_parser(
        "notification", help="look a message up", description="look a message up by the reference it shows"
    )
    actions = notification.add_subparsers(dest="notification_command", required=True, metavar="ACTION")
    find = commands.add(
        actions, "find", _find,
        "the message a reference names (K7QX-M4RT-9, as read out on the 3422 line): status, people, audit trail",
    )
    find.add_argument("reference", nargs="+", help="the reference, with or without its hyphens or spaces")
