"""An aiosmtpd handler the tests script: per recipient, the answers to give (451, 550, a dropped
connection), then 250; it keeps every message it accepted, parsed back with the `email` package."""

from __future__ import annotations

import email
import email.policy
from collections import defaultdict
from email.message import EmailMessage
from typing import Any


class ScriptedRelay:
    def __init__(self) -> None:
        self.script: dict[str, list[str]] = defaultdict(list)  # "451", "550", "drop"
        self.received: list[bytes] = []
        self.attempts: dict[str, int] = defaultdict(int)

    def answer(self, address: str, *answers: str) -> None:
        self.script[address].extend(answers)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        self.attempts[address] += 1
        plan = self.script.get(address)
        if plan and plan[0] == "451":
            plan.pop(0)
            return "451 4.3.0 mailbox busy, try again later"
        if plan and plan[0] == "550":
            plan.pop(0)
            return f"550 5.1.1 <{address}>: no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for address in envelope.rcpt_tos:
            plan = self.script.get(address)
            if plan and plan[0] == "drop":
                plan.pop(0)
                server.transport.close()  # the connection drops before the relay answers
                return "421 4.4.2 gone"
        self.received.append(envelope.original_content or envelope.content)
        return "250 2.0.0 queued"

    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[misc]
            for raw in self.received
        ]

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages() if message["To"] == address]
