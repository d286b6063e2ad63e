"""Small builders of DMP extracts, register rows and spaces for the migration tests (valid by default)."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from enrolment.register import load_register
from migration.intake import DMP_COLUMNS, DOCUMENT_COLUMNS
from tests.factories import person_row, write_csv

_numbers = itertools.count(1)


def content_for(label: str, size: int = 2048) -> bytes:
    seed = hashlib.sha256(label.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@dataclass
class ExtractBuilder:
    """A dmp/ folder: dmp.csv, documents.csv and content/ files, written by `write()`."""

    root: Path
    dmps: list[dict[str, str]] = field(default_factory=list)
    documents: list[dict[str, str]] = field(default_factory=list)
    contents: dict[str, bytes] = field(default_factory=dict)

    def add_dmp(self, person: dict[str, str], **overrides: Any) -> str:
        dmp_id = str(overrides.pop("dmp_id", f"DMP{next(_numbers):08d}"))
        row = {
            "dmp_id": dmp_id,
            "nir": person["nir"],
            "date_naissance": person["date_naissance"],
            "sexe": person["sexe"],
            "created_at": "2019-03-04T10:15:00+01:00",
            "status": "active",
        }
        row.update({key: str(value) for key, value in overrides.items()})
        self.dmps.append(row)
        return dmp_id

    def add_document(self, dmp_id: str, content: bytes | None = None, **overrides: Any) -> str:
        entry_uuid = str(overrides.pop("entry_uuid", uuid.uuid4()))
        body = content if content is not None else content_for(entry_uuid)
        content_path = str(overrides.pop("content_path", f"content/{entry_uuid[:2]}/{entry_uuid}.pdf"))
        row = {
            "entry_uuid": entry_uuid,
            "unique_id": f"1.2.250.1.213.{next(_numbers)}",
            "dmp_id": dmp_id,
            "type_code": "11488-4",
            "class_code": "10",
            "confidentiality": "N",
            "creation_time": "2020-05-06T09:00:00+02:00",
            "service_start_time": "2020-05-05T08:00:00+02:00",
            "author_role": "PS",
            "mime_type": "application/pdf",
            "size": str(len(body)),
            "hash": hashlib.sha1(body).hexdigest(),
            "status": "Approved",
            "replaces": "",
            "content_path": content_path,
            "title": "Compte rendu confidentiel",
        }
        row.update({key: str(value) for key, value in overrides.items()})
        self.documents.append(row)
        self.contents[content_path] = body
        return entry_uuid

    def write(self) -> Path:
        write_csv(self.root / "dmp.csv", self.dmps, DMP_COLUMNS)
        write_csv(self.root / "documents.csv", self.documents, DOCUMENT_COLUMNS)
        for relative, body in self.contents.items():
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        return self.root


def load_people(engine: Engine, folder: Path, people: list[dict[str, str]], as_of: dt.date) -> None:
    load_register(engine, write_csv(folder / f"register-{next(_numbers)}.csv", people), as_of=as_of)


def a_person(**overrides: Any) -> dict[str, str]:
    return person_row(**overrides)


def insert_space(engine: Engine, nir: str, created_on: dt.date, *, state: str = "active", cause: str = "automatic") -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO spaces (nir, state, created_on, creation_cause, updated_at)"
                " VALUES (:nir, :state, :created_on, :cause, :now)"
            ),
            {
                "nir": nir,
                "state": state,
                "created_on": created_on,
                "cause": cause,
                "now": dt.datetime(2022, 3, 1, tzinfo=dt.UTC),
            },
        )


def decide_and_commit(engine: Engine, store: Any, day: dt.date, threshold: float = 1.0, *, finish: bool = True) -> str:
    """plan, classify, gate and commit (the DAG's tasks without the GX ones), then mark the run
    succeeded unless `finish` is False (a run that died before its validation); returns the run id."""
    from mes_rollout.config import load_settings
    from mes_rollout.constants import MigrationRunState
    from migration import pipeline

    settings = load_settings()
    plan = pipeline.plan_run(engine, day, threshold=threshold, persons_per_batch=settings.migration_batch_persons)
    pipeline.classify_run(
        engine, store, plan.run_id, as_of=day, workers=settings.migration_content_workers,
        max_document_bytes=settings.max_document_bytes,
    )  # fmt: skip
    pipeline.check_gate(engine, plan.run_id)
    pipeline.commit_run(engine, store, plan.run_id, connections=settings.migration_commit_connections)
    if finish:
        pipeline.finish_run(engine, plan.run_id, MigrationRunState.SUCCEEDED)
    return plan.run_id


def outcomes(engine: Engine) -> dict[str, tuple[str, str | None, str | None]]:
    """entry_uuid -> (outcome, reason, version_role) of every committed outcome."""
    with engine.connect() as connection:
        return {
            row[0]: (row[1], row[2], row[3])
            for row in connection.execute(
                text("SELECT entry_uuid, outcome, reason, version_role FROM dmp_document_outcomes")
            )
        }
