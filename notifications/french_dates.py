"""Dates written out in French words ("lundi 28 février 2022"), with no dependency on the system locale."""

from __future__ import annotations

import datetime as dt

_WEEKDAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
_MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)


def date_in_words(day: dt.date) -> str:
    """'lundi 28 février 2022'; the first of the month is written '1er' as French typography wants."""
    number = "1er" if day.day == 1 else str(day.day)
    return f"{_WEEKDAYS[day.weekday()]} {number} {_MONTHS[day.month - 1]} {day.year}"
