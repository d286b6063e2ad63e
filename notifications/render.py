"""The one place that renders a message: its content, the email (MIME bytes) and the letter's text.

What a message says comes from the database row and is computed again at render time: each
person's provisional code (HMAC of the NIR under the wave's key, never stored in clear) and the
last day to oppose (from the message's send date). Names are data: autoescaped in HTML, reduced
to one line of printable characters everywhere, and never put in a header. The message shows its
short reference (enrolment/references.py, drawn when the message was created), the one a person
reads out on the 3422 line; the notification id stays in the Message-ID only. A representative
is named as their sex says: "le représentant légal", "la représentante légale".
"""

from __future__ import annotations

import binascii
import datetime as dt
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from functools import lru_cache

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import escape

from enrolment.codes import formatted, provisional_code
from enrolment.references import grouped, parse
from enrolment.window import last_day_to_oppose
from mes_rollout.config import OptOutWindow
from notifications.french_dates import date_in_words

PHONE = "3422"
WEBSITE = "www.monespacesante.fr"
SUBJECT = "Mon espace santé : votre espace santé personnel"
DEFAULT_SENDER = "ne-pas-repondre@mes-rollout.invalid"
SENDER_NAME = "Mon espace santé - Assurance Maladie"
_BOUNDARY = "==mes-rollout-alternative=="  # "==" never occurs in quoted-printable text
# A recipient address as the register accepts it: no spaces, quotes, angle brackets or line breaks.
_HEADER_SAFE_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+$")
_MESSAGE_ID = re.compile(r"<(?P<reference>[^<>@\s]+)@[^<>\s]+>")


class UnsafeRecipientAddress(ValueError):
    """The email address cannot be put in a header as it is (it would fail at the relay anyway)."""


@dataclass(frozen=True)
class PersonCode:
    name: str
    code: str  # formatted for reading: XXXX-XXXX-XX


@dataclass(frozen=True)
class MessageContent:
    """Everything a message says, whatever the channel."""

    notification_id: str  # the Message-ID's, which the relay and feedback.csv give back
    reference: str  # the short reference as shown, for the 3422 line and returns: K7QX-M4RT-9
    recipient_name: str
    people: tuple[PersonCode, ...]
    audience: str  # self | self_and_represented | represented
    send_date: dt.date
    last_day: dt.date
    feminine: bool = False  # the recipient is a woman: "la représentante légale"

    def template_values(self) -> dict[str, object]:
        deadline = date_in_words(self.last_day)
        represented = len(self.people) - (0 if self.audience == "represented" else 1)
        return {
            "reference": self.reference,
            "recipient_name": self.recipient_name,
            "people": self.people,
            "audience_sentence": audience_sentence(self.audience, represented, deadline, self.feminine),
            "deadline": deadline,
            "send_date": date_in_words(self.send_date),
            "phone": PHONE,
            "website": WEBSITE,
        }


@dataclass(frozen=True)
class Member:
    """A person a message is for, as read from the database."""

    nir: str
    prenom: str | None
    nom: str | None
    sexe: str | None = None  # persons.sexe, M or F: how the recipient is addressed


def one_line(text: str | None) -> str:
    """A name as the message shows it: one line, printable characters only, single spaces."""
    if not text:
        return ""
    if not text.isprintable():  # rare: control or format characters become spaces
        text = "".join(char if char.isprintable() else " " for char in text)
    return " ".join(text.split())


def display_name(prenom: str | None, nom: str | None) -> str:
    """'Camille MARTIN': the first name as written, the name in capitals."""
    return one_line(f"{one_line(prenom)} {one_line(nom).upper()}")


def message_content(
    notification_id: str,
    recipient_nir: str,
    recipient: Member,
    members: Sequence[Member],
    wave_key: bytes,
    send_date: dt.date,
    window: OptOutWindow,
    *,
    reference: str,
) -> MessageContent:
    """What the message `notification_id` says; `reference` is its stored short reference
    (notifications.reference), checked here: a corrupted one is never printed."""
    people = tuple(
        PersonCode(display_name(member.prenom, member.nom), formatted(provisional_code(wave_key, member.nir)))
        for member in sorted(members, key=lambda member: (member.nir != recipient_nir, member.nir))
    )
    nirs = {member.nir for member in members}
    if nirs == {recipient_nir}:
        audience = "self"
    elif recipient_nir in nirs:
        audience = "self_and_represented"
    else:
        audience = "represented"
    return MessageContent(
        notification_id=notification_id,
        reference=grouped(parse(reference)),
        recipient_name=display_name(recipient.prenom, recipient.nom),
        people=people,
        audience=audience,
        send_date=send_date,
        last_day=last_day_to_oppose(send_date, window),
        feminine=recipient.sexe == "F",
    )


@lru_cache(maxsize=256)
def audience_sentence(audience: str, represented: int, deadline: str, feminine: bool = False) -> str:
    """Who the message is for and by when they can oppose (no name in it: cached per wording)."""
    template = environment().get_template("_audience.txt.j2")
    return template.render(audience=audience, represented=represented, deadline=deadline, feminine=feminine)


def _autoescape(template_name: str | None) -> bool:
    # On everywhere but the plain-text templates, where escaping would only garble names.
    return not (template_name or "").endswith(".txt.j2")


@lru_cache(maxsize=1)
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("notifications", "templates"),
        autoescape=_autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )


def render_text(content: MessageContent, values: dict[str, object] | None = None) -> str:
    return environment().get_template("email.txt.j2").render(values or content.template_values())


def render_html(content: MessageContent, values: dict[str, object] | None = None) -> str:
    return environment().get_template("email.html.j2").render(values or content.template_values())


def letter_paragraphs(content: MessageContent) -> list[str]:
    """The letter's body, one paragraph a line ('# ' a heading, '- ' a person's code)."""
    text = environment().get_template("letter.txt.j2").render(content.template_values())
    return [line for line in text.splitlines() if line.strip()]


def _encoded_word(text: str) -> str:
    """An RFC 2047 header value for a fixed text (the subject, the sender's name)."""
    encoded = binascii.b2a_qp(text.encode(), header=True).decode("ascii").replace("?", "=3F")
    return f"=?utf-8?q?{encoded}?="


_SUBJECT_HEADER = _encoded_word(SUBJECT)


def _quoted_printable(text: str) -> bytes:
    # Soft line breaks at 76 characters; every line ends CRLF as SMTP wants.
    return binascii.b2a_qp(text.replace("\r\n", "\n").encode(), istext=True).replace(b"\n", b"\r\n")


def message_id(notification_id: str, sender: str) -> str:
    """The Message-ID of a notification: the same for every attempt, so that a mail client shows a
    re-sent copy once; the relay and the feedback file give the notification id back."""
    domain = sender.rsplit("@", 1)[-1].strip(" >") or "mes-rollout.invalid"
    return f"<{notification_id}@{domain}>"


def reference_of(message_id_header: str) -> str | None:
    """The notification id carried by a Message-ID header, or None."""
    match = _MESSAGE_ID.search(message_id_header or "")
    return match.group("reference") if match else None


def build_email(
    content: MessageContent, to_address: str, *, sender: str = DEFAULT_SENDER, attempt: int = 1,
    now: dt.datetime | None = None,
) -> bytes:
    """The email as MIME bytes: multipart/alternative with a plain-text and an HTML part, both
    quoted-printable UTF-8. Built by hand: the `email` package costs more than the rest of sending.
    The bodies come from the templates rendered once per wording (`_EmailBody`): only the lines
    with a name, a code or the reference are filled in and encoded for each message."""
    if not _HEADER_SAFE_ADDRESS.match(to_address or ""):
        raise UnsafeRecipientAddress("the recipient address cannot be used in a header")
    head = (
        f"{_from_header(sender)}"
        f"To: {to_address}\r\n"
        f"Subject: {_SUBJECT_HEADER}\r\n"
        f"Date: {_date_header(now)}\r\n"
        f"Message-ID: {message_id(content.notification_id, sender)}\r\n"
        f"X-Mes-Attempt: {attempt}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Language: fr\r\n"
        f'Content-Type: multipart/alternative; boundary="{_BOUNDARY}"\r\n'
        "\r\n"
    ).encode("ascii")
    values = _slot_values(content)
    if values is None:  # a value the slots cannot carry: render this one message in full
        text_body = _quoted_printable(render_text(content))
        html_body = _quoted_printable(render_html(content))
    else:
        text_part, html_part = _email_bodies(content.audience, len(content.people), content.send_date,
                                             content.last_day, content.feminine)
        text_body = text_part.fill(values)
        html_body = html_part.fill({slot: str(escape(value)) for slot, value in values.items()})
    return b"".join((head, _TEXT_PART_HEAD, text_body, b"\r\n", _HTML_PART_HEAD, html_body, _CLOSING))


_PART_HEAD = (
    f"--{_BOUNDARY}\r\nContent-Type: text/%s; charset=\"utf-8\"\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)
_TEXT_PART_HEAD = (_PART_HEAD % "plain").encode("ascii")
_HTML_PART_HEAD = (_PART_HEAD % "html").encode("ascii")
_CLOSING = f"\r\n--{_BOUNDARY}--\r\n".encode("ascii")


@lru_cache(maxsize=16)
def _from_header(sender: str) -> str:
    return f"From: {_encoded_word(SENDER_NAME)} <{sender}>\r\n"


_last_date: tuple[int, str] = (-1, "")


def _date_header(now: dt.datetime | None) -> str:
    """RFC 2822 date, to the second: written once a second on the hot path."""
    global _last_date  # noqa: PLW0603 - a one-entry cache
    if now is not None:
        return formatdate(now.timestamp(), localtime=False, usegmt=True)
    second = int(time.time())
    if _last_date[0] != second:
        _last_date = (second, formatdate(second, localtime=False, usegmt=True))
    return _last_date[1]


# Slots stand for a message's own values in a body rendered once per wording. NUL cannot come from
# a value (names are printable by `one_line`; references and codes are checked in `_slot_values`).
_SLOT = "\x00"
_SLOTTED = re.compile("\x00([a-z0-9_]+)\x00")


def _slot(name: str) -> str:
    return f"{_SLOT}{name}{_SLOT}"


def _slot_values(content: MessageContent) -> dict[str, str] | None:
    values = {"reference": content.reference, "recipient_name": content.recipient_name}
    for index, person in enumerate(content.people):
        values[f"name_{index}"] = person.name
        values[f"code_{index}"] = person.code
    if any(_SLOT in value for value in values.values()):
        return None
    return values


@dataclass(frozen=True)
class _EmailBody:
    """One body (text or HTML) as quoted-printable bytes: static lines encoded once; the lines
    holding slots kept as (literal, slot, literal, slot, ...) to fill and encode per message.
    Quoted-printable works line by line, so this is byte for byte what encoding the whole
    rendered body gives."""

    pieces: tuple[bytes | tuple[str, ...], ...]

    @classmethod
    def compile(cls, rendered: str) -> _EmailBody:
        pieces: list[bytes | tuple[str, ...]] = []
        static: list[str] = []
        lines = rendered.replace("\r\n", "\n").split("\n")
        for number, line in enumerate(lines):
            line += "\n" if number < len(lines) - 1 else ""
            if _SLOT not in line:
                static.append(line)
                continue
            if static:
                pieces.append(_quoted_printable("".join(static)))
                static = []
            pieces.append(tuple(_SLOTTED.split(line)))  # even indexes literal, odd ones slot names
        if static:
            pieces.append(_quoted_printable("".join(static)))
        return cls(tuple(pieces))

    def fill(self, values: dict[str, str]) -> bytes:
        out: list[bytes] = []
        for piece in self.pieces:
            if isinstance(piece, bytes):
                out.append(piece)
            else:
                line = "".join(values[part] if index % 2 else part for index, part in enumerate(piece))
                out.append(_quoted_printable(line))
        return b"".join(out)


@lru_cache(maxsize=64)
def _email_bodies(
    audience: str, people: int, send_date: dt.date, last_day: dt.date, feminine: bool
) -> tuple[_EmailBody, _EmailBody]:
    """The text and HTML bodies of one wording (audience, number of people, dates, the
    representative's gender), with slots."""
    placeholder = MessageContent(
        notification_id=_slot("notification_id"),
        reference=_slot("reference"),
        recipient_name=_slot("recipient_name"),
        people=tuple(PersonCode(_slot(f"name_{index}"), _slot(f"code_{index}")) for index in range(people)),
        audience=audience,
        send_date=send_date,
        last_day=last_day,
        feminine=feminine,
    )
    values = placeholder.template_values()
    return _EmailBody.compile(render_text(placeholder, values)), _EmailBody.compile(render_html(placeholder, values))
