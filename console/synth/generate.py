"""The `synth` entry point: one call writes a register extract, a DMP extract and faults.csv."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from random import Random

from console.synth.dmp import DmpExtract
from console.synth.faults import DMP_FAULTS, REGISTER_FAULTS, FaultDispenser, FaultLog, NaturalAnomalies
from console.synth.people import Population
from console.synth.pools import Pools
from console.synth.register import RegisterExtract

REFERENCE_DATE = date(2022, 1, 15)  # the day the extracts were taken, a fortnight before the first wave
# From this population size on, every fault kind (when dirty) and every natural anomaly appears
# at least once: the kinds not drawn by the time half the people are written are made due.
EVERY_KIND_FROM = 1000


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote: counts, fault counts (rows of faults.csv per kind), and the paths."""

    persons: int
    register_rows: int
    dmps: int
    documents: int
    content_files: int
    content_bytes: int
    faults: Mapping[str, int]
    paths: Mapping[str, Path]
    seed: int
    dirty: float
    reference_date: date

    def as_dict(self) -> dict[str, object]:
        return {
            "persons": self.persons,
            "register_rows": self.register_rows,
            "dmps": self.dmps,
            "documents": self.documents,
            "content_files": self.content_files,
            "content_bytes": self.content_bytes,
            "faults": dict(self.faults),
            "paths": {name: str(path) for name, path in self.paths.items()},
            "seed": self.seed,
            "dirty": self.dirty,
            "reference_date": self.reference_date.isoformat(),
        }


def generate(
    persons: int,
    seed: int,
    out: Path,
    dirty: float = 0.0,
    reference_date: date = REFERENCE_DATE,
    with_dmp: bool = True,
) -> SynthSummary:
    """Write a synthetic register.csv, dmp/ and faults.csv into `out`.

    The same arguments give byte-identical files. `dirty` is the probability that a register row
    or a document carries an injected fault; faults.csv lists those and the anomalies any extract
    has (deleted and duplicated documents, late DMPs, mistyped emails), each with the code the
    pipeline must give. `reference_date` is the day the extracts were taken: births, deaths and
    documents come before it, the "in the future" faults after it. Minors are those under 18 on
    2022-01-31 (or on `reference_date` if later). `out/dmp/content` belongs to the generator and is
    replaced; with `with_dmp=False` the DMP files hold only their headers (the intake benchmark).
    """
    if persons < 0:
        raise ValueError(f"persons must be 0 or more, not {persons}")
    if not 0.0 <= dirty <= 1.0:
        raise ValueError(f"dirty is a probability between 0 and 1, not {dirty}")
    out = Path(out)
    dmp_folder = out / "dmp"
    dmp_folder.mkdir(parents=True, exist_ok=True)
    # Content files of an earlier run would be left over and counted as part of this extract.
    shutil.rmtree(dmp_folder / "content", ignore_errors=True)
    paths = {
        "register": out / "register.csv",
        "dmp": dmp_folder / "dmp.csv",
        "documents": dmp_folder / "documents.csv",
        "content": dmp_folder / "content",
        "faults": out / "faults.csv",
    }

    # Separate random streams, so that the register is the same with or without `with_dmp`, and the
    # faults' draws do not shift the people's.
    register_faults = FaultDispenser(REGISTER_FAULTS, dirty, Random(f"{seed}/register-faults"))
    dmp_faults = FaultDispenser(DMP_FAULTS, dirty, Random(f"{seed}/dmp-faults"))
    register_natural = NaturalAnomalies(Random(f"{seed}/register-natural"))
    population = Population(Pools.draw(seed), seed, reference_date, register_faults)
    every_kind_at = persons // 2 if persons >= EVERY_KIND_FROM else None

    with (
        FaultLog(paths["faults"]) as log,
        RegisterExtract(
            paths["register"],
            population,
            register_faults,
            register_natural,
            Random(f"{seed}/register-plant"),
            log,
        ) as register,
        DmpExtract(dmp_folder, seed, reference_date, dmp_faults, log) as dmps,
    ):
        written = 0
        for household in population.households(persons):
            for person in household:
                register.write(person)
                if with_dmp and person.fault is None:
                    dmps.consider(person)
            written += len(household)
            if every_kind_at is not None and written >= every_kind_at:
                every_kind_at = None
                for dispenser in (register_faults, dmp_faults):
                    dispenser.request_missing()
                register_natural.force_missing()
                dmps.force_missing()

    return SynthSummary(
        persons=persons,
        register_rows=register.rows,
        dmps=dmps.dmps,
        documents=dmps.documents,
        content_files=dmps.content_files,
        content_bytes=dmps.content_bytes,
        faults=dict(sorted(log.counts.items())),
        paths=paths,
        seed=seed,
        dirty=dirty,
        reference_date=reference_date,
    )
