"""The 68 million projection: machine-hours of the whole rollout from per-stage throughputs.

Pure arithmetic on figures handed in (the simulation's measured rates, or the benchmarks'), so
that its unit test can pin it on literal inputs. A stage's hours are its volume at national scale
divided by its rate on one machine of the measured size (2 cores); the rollout's machine-hours are
their sum, the stages being run one after the other on one machine or spread over several.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

STAGES: tuple[str, ...] = (
    "intake",
    "dmp_intake",
    "planning",
    "emails",
    "letters",
    "decisions",
    "feedback",
    "creation",
    "migration",
)
UNITS: dict[str, str] = {
    "intake": "register rows",
    "dmp_intake": "DMP and document rows",
    "planning": "people selected",
    "emails": "emails",
    "letters": "letters",
    "decisions": "decision rows",
    "feedback": "feedback rows",
    "creation": "spaces created",
    "migration": "documents",
}
# BENCHMARKS.md, the final code's figures (PostgreSQL, this machine): bench-intake best of three
# (158 600 rows/s), bench-wave-planning (11 513 people/s), bench-emails end to end (2 031/s,
# integrator's run), bench-letters at 20 000 (758-900/s: the middle, 829/s), bench-migration
# (5 048 documents/s, integrator's run). The other stages have no benchmark.
BENCHMARK_RATES: dict[str, float] = {
    "intake": 158_600.0,
    "planning": 11_513.0,
    "emails": 2_031.0,
    "letters": 829.0,
    "migration": 5_048.0,
}


@dataclass(frozen=True)
class Rollout:
    """The national rollout's volumes, and the goal."""

    persons: int = 68_000_000
    notifications_per_day: int = 1_600_000
    working_days: int = 40
    email_share: float = 0.70
    dmps: int = 10_000_000
    documents_per_dmp: float = 12.0
    register_loads: int = 3  # the first extract, then one a month while the rollout runs
    decisions_per_person: float = 0.048  # oppositions 1.5 %, activations 3 %, late oppositions 0.3 %
    email_bounce: float = 0.02  # each a fallback letter
    letter_returned: float = 0.015  # each a feedback row
    spaces_per_person: float = 0.93  # told, minus oppositions, deaths, unreachable
    hours_per_working_day: float = 8.0
    goal_machine_hours: float = 10.0

    @property
    def notifications(self) -> int:
        return self.notifications_per_day * self.working_days

    def volumes(self) -> dict[str, float]:
        """Each stage's work for the whole rollout, in its unit."""
        emails = self.notifications * self.email_share
        letters = self.notifications * (1 - self.email_share) + emails * self.email_bounce
        documents = self.dmps * self.documents_per_dmp
        return {
            "intake": float(self.persons * self.register_loads),
            "dmp_intake": self.dmps + documents,
            "planning": float(self.persons),
            "emails": emails,
            "letters": letters,
            "decisions": self.persons * self.decisions_per_person,
            "feedback": emails + letters * self.letter_returned,
            "creation": self.persons * self.spaces_per_person,
            "migration": documents,
        }

    def sending_day(self) -> dict[str, float]:
        """One working day of the calendar: its people planned, its messages sent, the relay's
        answers to the day before's emails."""
        emails = self.notifications_per_day * self.email_share
        return {
            "planning": self.persons / self.working_days,
            "emails": emails,
            "letters": self.notifications_per_day * (1 - self.email_share) + emails * self.email_bounce,
            "feedback": emails,
        }

    def busiest_day(self) -> dict[str, float]:
        """A sending day from March on, when the spaces of the waves a month earlier are created
        and their DMPs carried over the same day."""
        day = self.sending_day()
        day["creation"] = self.persons * self.spaces_per_person / self.working_days
        day["migration"] = self.dmps * self.documents_per_dmp / self.working_days
        return day


@dataclass(frozen=True)
class StageProjection:
    stage: str
    unit: str
    rate_per_second: float
    rate_source: str
    volume: float
    machine_hours: float


@dataclass(frozen=True)
class Projection:
    stages: tuple[StageProjection, ...]
    machine_hours: float
    dominant_stage: str
    goal_machine_hours: float
    goal_met: bool
    # The dominant stage's rate that would meet the goal with the others as they are (None: the
    # other stages alone already exceed it).
    dominant_rate_for_goal: float | None
    sending_day_hours: float
    sending_day_workers: int
    busiest_day_hours: float
    busiest_day_workers: int
    rollout: Rollout

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine_hours": round(self.machine_hours, 2),
            "dominant_stage": self.dominant_stage,
            "goal_machine_hours": self.goal_machine_hours,
            "goal_met": self.goal_met,
            "dominant_rate_for_goal": None if self.dominant_rate_for_goal is None else round(self.dominant_rate_for_goal),
            "sending_day": {"machine_hours": round(self.sending_day_hours, 2), "workers_for_8_hours": self.sending_day_workers},
            "busiest_day": {"machine_hours": round(self.busiest_day_hours, 2), "workers_for_8_hours": self.busiest_day_workers},
            "stages": [
                {
                    "stage": stage.stage,
                    "unit": stage.unit,
                    "rate_per_second": round(stage.rate_per_second, 1),
                    "rate_source": stage.rate_source,
                    "volume": round(stage.volume),
                    "machine_hours": round(stage.machine_hours, 3),
                }
                for stage in self.stages
            ],
            "assumptions": asdict(self.rollout),
        }


def _hours(volumes: Mapping[str, float], rates: Mapping[str, float]) -> float:
    return sum(volume / rates[stage] for stage, volume in volumes.items()) / 3600


def project(
    measured: Mapping[str, float],
    rollout: Rollout = Rollout(),
    benchmarks: Mapping[str, float] | None = None,
) -> Projection:
    """Machine-hours of the rollout. `measured` gives each stage's rate (units per second) from the
    simulation; a stage in `benchmarks` takes the benchmark's rate instead. Every stage of STAGES
    needs a positive rate from one or the other."""
    rates: dict[str, float] = {}
    sources: dict[str, str] = {}
    for stage in STAGES:
        if benchmarks is not None and stage in benchmarks:
            rates[stage], sources[stage] = benchmarks[stage], "benchmark"
        elif stage in measured:
            rates[stage], sources[stage] = measured[stage], "simulation"
        else:
            raise ValueError(f"no rate for stage {stage}")
        if rates[stage] <= 0:
            raise ValueError(f"stage {stage}: the rate must be positive, not {rates[stage]}")
    volumes = rollout.volumes()
    stages = tuple(
        StageProjection(stage, UNITS[stage], rates[stage], sources[stage], volumes[stage], volumes[stage] / rates[stage] / 3600)
        for stage in STAGES
    )
    total = sum(stage.machine_hours for stage in stages)
    dominant = max(stages, key=lambda stage: stage.machine_hours)
    left_for_dominant = rollout.goal_machine_hours - (total - dominant.machine_hours)
    rate_for_goal = dominant.volume / (left_for_dominant * 3600) if left_for_dominant > 0 else None
    sending_hours = _hours(rollout.sending_day(), rates)
    busiest_hours = _hours(rollout.busiest_day(), rates)
    return Projection(
        stages=stages,
        machine_hours=total,
        dominant_stage=dominant.stage,
        goal_machine_hours=rollout.goal_machine_hours,
        goal_met=total <= rollout.goal_machine_hours,
        dominant_rate_for_goal=None if total <= rollout.goal_machine_hours else rate_for_goal,
        sending_day_hours=sending_hours,
        sending_day_workers=math.ceil(sending_hours / rollout.hours_per_working_day),
        busiest_day_hours=busiest_hours,
        busiest_day_workers=math.ceil(busiest_hours / rollout.hours_per_working_day),
        rollout=rollout,
    )


def markdown_table(projection: Projection) -> str:
    """The projection as the Markdown table of the report (and of BENCHMARKS.md)."""
    lines = [
        "| stage | rate (/s, one 2-core machine) | from | volume at 68 M | machine-hours |",
        "| --- | --- | --- | --- | --- |",
    ]
    for stage in projection.stages:
        lines.append(
            f"| {stage.stage} | {stage.rate_per_second:,.0f} {stage.unit}/s | {stage.rate_source} |"
            f" {stage.volume:,.0f} | {stage.machine_hours:.2f} |".replace(",", " ")
        )
    lines.append(f"| **total** | | | | **{projection.machine_hours:.2f}** |")
    return "\n".join(lines)
