"""The rollout calendar: which départements each working day's wave covers (enrolment/data/rollout_plan.csv).

The default plan: every French working day from 2022-01-31 to 2022-03-28 (weekends and public
holidays excluded; there is none in that stretch), the départements in numeric order (01..19,
2A, 2B, 21..95, 971..976) without the pilots 31, 44 and 80 (enrolled in 2021), spread so that the
estimated messages of every day are about equal and below 2 million. The estimate is the
population of the département (enrolment/data/departements_population.csv: APPROXIMATE municipal
populations, rounded from INSEE's 2019 census figures from memory; good enough to balance days,
not a statistic) times 0.79 messages per person (the under-18s, about a fifth, are listed in a
parent's message). Day k takes the stretch [k*T, (k+1)*T) of the départements laid end to end
(T = total / days): a département cut by a day boundary is listed on both days, and since a wave
only takes people not yet enrolled, the second day takes the rest. Every wave carries a cap of
2 million recipients, enforced at planning (the excess is reported OVER_CAP and left for a later
wave): the daily limit holds even where the estimates are wrong.

Operators edit the CSV (day;wave_id;departements;recipient_cap, départements comma-separated) or
regenerate it: `python -m enrolment.plan [--out PATH]`.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from enrolment.waves import DEFAULT_RECIPIENT_CAP, departement_order

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_PLAN = DATA_DIR / "rollout_plan.csv"
POPULATION_FILE = DATA_DIR / "departements_population.csv"
FIRST_DAY = dt.date(2022, 1, 31)
LAST_DAY = dt.date(2022, 3, 28)
PILOT_DEPARTEMENTS = ("31", "44", "80")
DAILY_LIMIT = DEFAULT_RECIPIENT_CAP
MESSAGES_PER_PERSON = 0.79
COLUMNS = ("day", "wave_id", "departements", "recipient_cap")


@dataclass(frozen=True)
class PlannedWave:
    day: dt.date
    wave_id: str
    departements: tuple[str, ...]
    recipient_cap: int = DAILY_LIMIT
    estimated_messages: int = 0

    def as_conf(self) -> dict[str, object]:
        """The enrolment_wave run conf of the day's wave."""
        return {
            "wave_id": self.wave_id,
            "departements": list(self.departements),
            "send_date": self.day.isoformat(),
            "recipient_cap": self.recipient_cap,
            "dry_run": False,
        }


def easter_sunday(year: int) -> dt.date:
    """Gregorian Easter (the anonymous algorithm, Meeus/Jones/Butcher)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    leap = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * leap) // 451
    month, day = divmod(h + leap - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


def french_public_holidays(year: int) -> frozenset[dt.date]:
    """The 11 public holidays of metropolitan France (Alsace-Moselle's two extra days aside)."""
    easter = easter_sunday(year)
    fixed = [(1, 1), (5, 1), (5, 8), (7, 14), (8, 15), (11, 1), (11, 11), (12, 25)]
    moving = [easter + dt.timedelta(days=offset) for offset in (1, 39, 50)]  # Monday, Ascension, Whit Monday
    return frozenset([dt.date(year, month, day) for month, day in fixed] + moving)


def working_days(first: dt.date, last: dt.date) -> list[dt.date]:
    holidays = frozenset().union(*(french_public_holidays(year) for year in range(first.year, last.year + 1)))
    days = (first + dt.timedelta(days=n) for n in range((last - first).days + 1))
    return [day for day in days if day.weekday() < 5 and day not in holidays]


def read_population(path: Path = POPULATION_FILE) -> dict[str, int]:
    with path.open(encoding="utf-8", newline="") as stream:
        return {row["departement"]: int(row["population"]) for row in csv.DictReader(stream, delimiter=";")}


def generate_plan(
    population: dict[str, int],
    days: Sequence[dt.date],
    *,
    skip: Iterable[str] = PILOT_DEPARTEMENTS,
    limit: int = DAILY_LIMIT,
    messages_per_person: float = MESSAGES_PER_PERSON,
) -> list[PlannedWave]:
    """Lay the départements end to end in numeric order and cut the line into equal days."""
    skipped = set(skip)
    estimates = [
        (code, round(population[code] * messages_per_person))
        for code in sorted(population, key=departement_order)
        if code not in skipped
    ]
    total = sum(estimate for _, estimate in estimates)
    if not days:
        raise ValueError("no working day to plan")
    per_day = total / len(days)
    if per_day > limit:
        raise ValueError(f"{total} messages over {len(days)} days exceed {limit} a day")
    plan: list[PlannedWave] = []
    position = 0.0
    spans = []
    for code, estimate in estimates:
        spans.append((code, position, position + estimate))
        position += estimate
    for index, day in enumerate(days):
        start, end = index * per_day, (index + 1) * per_day
        listed = tuple(code for code, low, high in spans if low < end and high > start)
        plan.append(PlannedWave(day, f"rollout-{day.isoformat()}", listed, limit, round(end - start)))
    return plan


def write_plan(plan: Iterable[PlannedWave], path: Path = DEFAULT_PLAN) -> Path:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter=";", lineterminator="\n")
        writer.writerow(COLUMNS)
        for wave in plan:
            writer.writerow((wave.day.isoformat(), wave.wave_id, ",".join(wave.departements), wave.recipient_cap))
    return path


def read_plan(path: Path = DEFAULT_PLAN) -> list[PlannedWave]:
    with Path(path).open(encoding="utf-8-sig", newline="") as stream:
        reader = csv.DictReader(stream, delimiter=";")
        missing = set(COLUMNS[:3]) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return [
            PlannedWave(
                dt.date.fromisoformat(row["day"].strip()),
                row["wave_id"].strip(),
                tuple(code.strip() for code in row["departements"].split(",") if code.strip()),
                int(row.get("recipient_cap") or DAILY_LIMIT),
            )
            for row in reader
            if (row.get("day") or "").strip()
        ]


def wave_of_day(day: dt.date, path: Path = DEFAULT_PLAN) -> PlannedWave | None:
    """The day's wave in the plan, or None on a day without one (weekend, holiday, after the end)."""
    matches = [wave for wave in read_plan(path) if wave.day == day]
    if len(matches) > 1:
        raise ValueError(f"{path}: {len(matches)} waves on {day}: one wave a day")
    return matches[0] if matches else None


def default_plan() -> list[PlannedWave]:
    return generate_plan(read_population(), working_days(FIRST_DAY, LAST_DAY))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the default rollout plan.")
    parser.add_argument("--out", type=Path, default=DEFAULT_PLAN)
    args = parser.parse_args(argv)
    plan = default_plan()
    write_plan(plan, args.out)
    print(f"{len(plan)} waves from {plan[0].day} to {plan[-1].day} written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
