"""The compliance page a reviewer reads: French headings, every code shown with its meaning in
French, Paris time to the second, a stopped run that shows nothing as migrated, a relaxed gate
flagged."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from mes_rollout.config import load_settings
from mes_rollout.constants import DmpIntakeReason, HoldBackReason, SkipReason
from mes_rollout.dmp_codes import CONFIDENTIALITY_FLAGS, CONFIDENTIALITY_LEVELS
from migration import run
from migration.intake import load_dmp_extract
from migration.pipeline import QualityGateStopped
from migration.store import open_store
from tests.migration.factories import ExtractBuilder, a_person, insert_space, load_people
from validation import legend
from validation.report import build_report, render_html, write_report

RUN = dt.date(2022, 3, 2)
STARTED = dt.datetime(2022, 3, 2, 8, 14, 3, 654321, tzinfo=dt.UTC)  # 09:14:03 in Paris (winter time)
FINISHED = dt.datetime(2022, 3, 2, 8, 20, 59, 100000, tzinfo=dt.UTC)


def test_paris_time_to_the_second_in_french() -> None:
    assert legend.paris_time(dt.datetime(2022, 3, 1, 8, 14, 3, 999999, tzinfo=dt.UTC)) == (
        "1 mars 2022 à 09:14:03 (heure de Paris)"
    )
    assert legend.paris_time(dt.datetime(2022, 7, 14, 22, 5, 0, tzinfo=dt.UTC)) == (
        "15 juillet 2022 à 00:05:00 (heure de Paris)"  # summer time, past midnight in Paris
    )
    assert legend.paris_day(dt.date(2022, 8, 1)) == "1 août 2022"
    assert legend.percent(0.05) == "5,00 %" and legend.percent(0.01) == "1,00 %"
    with pytest.raises(ValueError):
        legend.paris_time(dt.datetime(2022, 3, 1, 9, 14, 3))


def test_every_reason_and_confidentiality_code_has_a_french_meaning() -> None:
    codes = [*HoldBackReason, *SkipReason, *DmpIntakeReason]
    assert [code.value for code in codes if not legend.REASON_LABELS.get(code)] == []
    known = CONFIDENTIALITY_LEVELS | CONFIDENTIALITY_FLAGS
    assert sorted(known - set(legend.CONFIDENTIALITY_LABELS)) == []
    assert legend.CONFIDENTIALITY_LABELS["MASQUE_PS"] == "masqué aux professionnels de santé"


def _stopped_run(engine: Engine, tmp_path: Path) -> str:
    """A run the gate stops (2 of 7 documents held back, above a relaxed 5 %), its times set."""
    person, identity_wrong = a_person(sexe="F"), a_person(sexe="F")
    load_people(engine, tmp_path, [person, identity_wrong], dt.date(2022, 1, 20))
    builder = ExtractBuilder(tmp_path / "dmp")
    dmp_id = builder.add_dmp(person)
    for _ in range(3):
        builder.add_document(dmp_id)
    builder.add_document(dmp_id, confidentiality="R|MASQUE_PS", type_code="18748-4", class_code="31")
    builder.add_document(dmp_id, type_code="XX-DOC")  # UNKNOWN_TYPE_CODE
    builder.add_document(dmp_id, status="Deleted")  # skipped: DELETED
    other = builder.add_dmp(identity_wrong, sexe="M")  # IDENTITY_MISMATCH
    builder.add_document(other)
    load_dmp_extract(engine, builder.write())
    for someone in (person, identity_wrong):
        insert_space(engine, someone["nir"], dt.date(2022, 3, 1))
    settings = load_settings()
    store = open_store(settings)
    planned = run.start(engine, settings, RUN, holdback_threshold=0.05)
    run.classify(engine, settings, store, planned["run_id"])
    run.validate_decisions(engine, settings, planned["run_id"])
    with pytest.raises(QualityGateStopped):
        run.gate(engine, planned["run_id"])
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE migration_runs SET started_at = :started, finished_at = :finished"),
            {"started": STARTED, "finished": FINISHED},
        )
    return str(planned["run_id"])


@pytest.mark.slow
def test_the_page_of_a_stopped_run_in_french_with_its_legend(engine: Engine, settings_env: Path, tmp_path: Path) -> None:
    run_id = _stopped_run(engine, tmp_path)

    path = write_report(engine, load_settings(), run_id)

    report = json.loads(path.read_text(encoding="utf-8"))
    page = path.with_name("report.html").read_text(encoding="utf-8")
    assert report["documents"] == {"source": 7, "migrated": 4, "held_back": 2, "skipped": 1, "committed": 0}
    assert report["applied"] == {"migrated": 0, "held_back": 0, "skipped": 0}
    # French headings, no English left.
    for heading in ("<h1>Reprise des DMP : exécution dmp-20220302-001</h1>", "<h2>Seuil de qualité</h2>",
                    "<h2>Documents</h2>", "<h2>Motifs</h2>", "<h2>Par type de document</h2>",
                    "<h2>Par confidentialité</h2>", "<h2>Légende des codes</h2>", "<h2>Validations</h2>",
                    "<h2>DMP avec des documents retenus</h2>", "<h2>Provenance</h2>"):  # fmt: skip
        assert heading in page, heading
    for english in ("Quality gate", "By document type", "By confidentiality", "Reasons", "<th>held back</th>",
                    "<th>migrated</th>", "Generated"):
        assert english not in page, english
    # Paris time to the second.
    assert "commencée le 2 mars 2022 à 09:14:03 (heure de Paris)" in page
    assert "terminée le 2 mars 2022 à 09:20:59 (heure de Paris)" in page
    assert "Date de l'exécution : 2 mars 2022" in page
    assert "654321" not in page and "+00:00" not in page and "08:14:03" not in page
    # Stopped: nothing migrated; the decisions shown as decided, not applied.
    assert "<tr><td>appliqués</td><td>0</td><td>0 migré</td><td>0</td><td>0</td></tr>" in page
    assert "<tr><td>décidés, non appliqués</td><td>7</td><td>4</td><td>2</td><td>1</td></tr>" in page
    assert "arrêtée par le seuil de qualité" in page
    # The relaxed gate is flagged.
    assert "Attention : seuil assoupli." in page
    assert "de 5,00 %, au-dessus du seuil par défaut de 1,00 %" in page
    # Each code of the run with its meaning; none that the run does not have.
    for line in (
        "<dd>UNKNOWN_TYPE_CODE : code de type de document absent de la table acceptée</dd>",
        "<dd>IDENTITY_MISMATCH : NIR, date de naissance ou sexe du DMP différents du référentiel : tout le DMP est retenu</dd>",
        "<dd>DELETED : document supprimé dans le DMP : les documents supprimés ne sont pas repris</dd>",
        "<dd>N : confidentialité normale</dd>",
        "<dd>R : confidentialité restreinte (accès limité)</dd>",
        "<dd>MASQUE_PS : masqué aux professionnels de santé</dd>",
    ):
        assert line in page, line
    for absent in ("HASH_MISMATCH", "INVISIBLE_PATIENT", "<dd>V :"):
        assert absent not in page, absent
    assert report["legend"]["confidentiality"] == {
        "MASQUE_PS": "masqué aux professionnels de santé", "N": "confidentialité normale",
        "R": "confidentialité restreinte (accès limité)",
    }  # fmt: skip

    # At the default threshold, no warning.
    with engine.begin() as connection:
        connection.execute(text("UPDATE migration_runs SET holdback_threshold = 0.01"))
    at_default = build_report(engine, run_id)
    assert at_default["quality_gate"]["relaxed"] is False
    assert "seuil assoupli" not in render_html(at_default)
