"""GX validations of a migration run catch what a broken migration would get wrong; the compliance
report counts by reason, type and confidentiality, links the Data Docs, masks NIRs, shows no title."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from mes_rollout.config import load_settings
from mes_rollout.nir import mask
from migration import run
from migration.intake import load_dmp_extract
from migration.store import open_store
from tests.migration.factories import ExtractBuilder, a_person, insert_space, load_people
from validation.migration_checks import ValidationFailed, folder_of_run

RUN = dt.date(2022, 3, 2)
TITLE = "Sérologie <script>alert(1)</script> très confidentielle"


def _extract(engine: Engine, tmp_path: Path) -> tuple[dict[str, str], ExtractBuilder]:
    person, identity_wrong = a_person(), a_person()
    load_people(engine, tmp_path, [person, identity_wrong], dt.date(2022, 1, 20))
    builder = ExtractBuilder(tmp_path / "dmp")
    dmp_id = builder.add_dmp(person)
    for _ in range(4):
        builder.add_document(dmp_id, title=TITLE)
    builder.add_document(dmp_id, confidentiality="R|MASQUE_PS", type_code="18748-4", class_code="31")
    builder.add_document(dmp_id, type_code="XX-DOC", title=TITLE)
    other = builder.add_dmp(identity_wrong, sexe="M")
    builder.add_document(other, title=TITLE)
    load_dmp_extract(engine, builder.write())
    insert_space(engine, person["nir"], dt.date(2022, 3, 1))
    insert_space(engine, identity_wrong["nir"], dt.date(2022, 3, 1))
    return identity_wrong, builder


@pytest.mark.slow
def test_the_report_counts_links_and_hides_what_it_must(engine: Engine, settings_env: Path, tmp_path: Path) -> None:
    identity_wrong, builder = _extract(engine, tmp_path)
    settings = load_settings()
    summary = run.migrate(engine, settings, open_store(settings), RUN, holdback_threshold=0.5)
    folder = Path(summary["report"]).parent
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["documents"] == {"source": 7, "migrated": 5, "held_back": 2, "skipped": 0, "committed": 7}
    assert report["reasons"]["held_back"] == {"IDENTITY_MISMATCH": 1, "UNKNOWN_TYPE_CODE": 1}
    by_type = {row["type_code"]: row for row in report["by_type"]}
    assert by_type["18748-4"]["migrated"] == 1 and by_type["XX-DOC"]["held_back"] == 1
    assert {row["confidentiality"]: row["migrated"] for row in report["by_confidentiality"]} == {"N": 4, "R|MASQUE_PS": 1}
    assert [dmp["nir"] for dmp in report["held_back_dmps"]] == sorted([mask(identity_wrong["nir"]), mask(builder.dmps[0]["nir"])])
    assert (folder / report["data_docs"]).is_file()
    assert (folder / "data_docs" / "committed" / "validations" / "dmp_reconciliation").is_dir()
    for name in ("report.json", "report.html"):
        written = (folder / name).read_text(encoding="utf-8")
        for row in builder.dmps:
            assert row["nir"] not in written
        assert "Sérologie" not in written and "<script>" not in written
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert 'href="data_docs/committed/index.html"' in html
    # Data Docs see ids and codes, never a NIR, a title or content.
    for page in (folder / "data_docs").rglob("*.html"):
        text_ = page.read_text(encoding="utf-8")
        assert not any(row["nir"] in text_ for row in builder.dmps) and "Sérologie" not in text_


@pytest.mark.slow
def test_a_lost_decision_fails_the_reconciliation(engine: Engine, settings_env: Path, tmp_path: Path) -> None:
    _extract(engine, tmp_path)
    settings = load_settings()
    store = open_store(settings)
    planned = run.start(engine, settings, RUN, holdback_threshold=0.5)
    run.classify(engine, settings, store, planned["run_id"])
    with engine.begin() as connection:
        lost = connection.execute(text("SELECT entry_uuid FROM migration_decisions LIMIT 1")).scalar_one()
        connection.execute(text("DELETE FROM migration_decisions WHERE entry_uuid = :e"), {"e": lost})
    with pytest.raises(ValidationFailed, match="do not reconcile"):
        run.validate_decisions(engine, settings, planned["run_id"])
    with pytest.raises(run.MigrationRunFailed, match="failed"):
        run.report(engine, settings, planned["run_id"])
    with engine.connect() as connection:
        state, validation = connection.execute(text("SELECT state, validation FROM migration_runs")).one()
    validation = json.loads(validation) if isinstance(validation, str) else validation
    assert state == "failed"
    failed = {suite["suite"]: suite["failed_critical"] for suite in validation["decisions"]["suites"]}
    assert failed["dmp_reconciliation"] == ["expect_column_pair_values_to_be_equal(source)"]


@pytest.mark.slow
def test_a_changed_confidentiality_or_lost_content_fails_the_migrated_suite(
    engine: Engine, settings_env: Path, tmp_path: Path
) -> None:
    _extract(engine, tmp_path)
    settings = load_settings()
    store = open_store(settings)
    planned = run.start(engine, settings, RUN, holdback_threshold=0.5)
    run_id = planned["run_id"]
    run.classify(engine, settings, store, run_id)
    run.gate(engine, run_id)
    run.commit(engine, settings, store, run_id)
    with engine.begin() as connection:
        connection.execute(text("UPDATE migrated_documents SET confidentiality = 'N' WHERE confidentiality = 'R|MASQUE_PS'"))
        key = connection.execute(text("SELECT store_key FROM migrated_documents WHERE confidentiality = 'N' LIMIT 1")).scalar_one()
    store.path_of(key).unlink()  # type: ignore[attr-defined]
    with pytest.raises(ValidationFailed) as failed:
        run.validate_committed(engine, settings, store, run_id)
    assert "expect_column_pair_values_to_be_equal(confidentiality)" in str(failed.value)
    assert "expect_column_pair_values_to_be_equal(stored_size)" in str(failed.value)


# One hostile value per free-text field of the extract that the Data Docs could show.
HOSTILE = {
    "type_code": "<img src=x onerror=alert(1)>",
    "class_code": "<script>alert(2)</script>",
    "confidentiality": "N|<img src=x onerror=alert(3)>",
    "author_role": "<script>alert(4)</script>",
    "hash": "<img src=x onerror=alert(5)>",
    "mime_type": "<script>alert(6)</script>",
    "title": "<script>alert(7)</script>",
    "unique_id": "<img src=x onerror=alert(8)>",
    "replaces": "<img src=x onerror=alert(9)>",
    "content_path": "content/<script>alert(10)</script>.pdf",
    "status": "<script>alert(11)</script>",  # quarantined at intake: never staged
}
HOSTILE_DMP_ID = "<img src=x onerror=alert(12)>"
SHOWN_BY_GX = ("type_code", "class_code", "confidentiality", "author_role", "hash")  # failing expectations


@pytest.mark.slow
def test_hostile_values_are_escaped_in_the_data_docs(engine: Engine, settings_env: Path, tmp_path: Path) -> None:
    person, other = a_person(), a_person()
    load_people(engine, tmp_path, [person, other], dt.date(2022, 1, 20))
    builder = ExtractBuilder(tmp_path / "dmp")
    dmp_id = builder.add_dmp(person)
    for _ in range(3):
        builder.add_document(dmp_id)
    for field, value in HOSTILE.items():
        overrides: dict[str, Any] = {field: value}
        builder.add_document(dmp_id, **overrides)
    hostile_dmp = builder.add_dmp(other, dmp_id=HOSTILE_DMP_ID, sexe="<script>alert(13)</script>")
    builder.add_document(hostile_dmp)
    load_dmp_extract(engine, builder.write())
    for someone in (person, other):
        insert_space(engine, someone["nir"], dt.date(2022, 3, 1))
    settings = load_settings()
    store = open_store(settings)
    planned = run.start(engine, settings, RUN, holdback_threshold=0.0)  # every warning fails: values shown
    run.classify(engine, settings, store, planned["run_id"])
    summary = run.validate_decisions(engine, settings, planned["run_id"])
    with engine.connect() as connection:
        published = connection.execute(text("SELECT validation FROM migration_runs")).scalar_one()
    published = json.loads(published) if isinstance(published, str) else published
    summary["data_docs"] = str(folder_of_run(engine, settings, planned["run_id"]) / published["decisions"]["data_docs"])
    docs = Path(summary["data_docs"]).parent
    pages = {page: page.read_text(encoding="utf-8") for page in docs.rglob("*.html")}
    assert summary["passed"] and len(pages) >= 3
    everything = "\n".join(pages.values())
    for value in [*HOSTILE.values(), HOSTILE_DMP_ID]:
        assert value not in everything, value
    assert "<img src=x" not in everything and "<script>alert" not in everything
    for field in SHOWN_BY_GX:  # shown, escaped
        escaped = html.escape(HOSTILE[field].split("|")[-1])
        assert escaped in everything, field


REMOTE = ("http://", "https://", "//")


class _Fetches(HTMLParser):
    """Every URL a page makes the browser fetch by itself: scripts, stylesheets, images, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "img": "src", "source": "src", "iframe": "src", "embed": "src", "link": "href"}
        for name, value in attrs:
            if name == wanted.get(tag) and value:
                self.urls.append(value)


@pytest.mark.slow
def test_the_data_docs_are_offline_pages_named_after_the_run(engine: Engine, settings_env: Path, tmp_path: Path) -> None:
    _extract(engine, tmp_path)
    settings = load_settings()
    summary = run.migrate(engine, settings, open_store(settings), RUN, holdback_threshold=0.5)
    run_id = summary["run_id"]
    folder = folder_of_run(engine, settings, run_id)
    site = folder / "data_docs" / "committed"
    assert folder.name == run_id == "dmp-20220302-001" and (site / "index.html").is_file()
    pages = sorted(site.rglob("*.html"))
    validation_pages = sorted(site.glob("validations/*/*/*/*.html"))
    # GX's run name is the migration run, not __none__.
    assert validation_pages and {page.relative_to(site).parts[2] for page in validation_pages} == {run_id}
    for page in pages:
        content = page.read_text(encoding="utf-8")
        fetches = _Fetches()
        fetches.feed(content)
        assert [url for url in fetches.urls if url.startswith(REMOTE)] == [], page
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", content), page
        assert "__none__" not in content and "dataContextId" not in content
    for stylesheet in site.rglob("*.css"):
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", stylesheet.read_text(encoding="utf-8")), stylesheet
    # The index is a plain table of the results (GX's own is filled by a script from a CDN).
    index = (site / "index.html").read_text(encoding="utf-8")
    assert '<table id="validation-results">' in index and "<script" not in index
    links = re.findall(r'href="(validations/[^"]+)"', index)
    assert len(links) == len(validation_pages) and all((site / link).is_file() for link in links)
    assert "<td>dmp_reconciliation</td><td>dmp-20220302-001</td>" in index and "réussie" in index
    reconciliation = next(page for page in validation_pages if "dmp_reconciliation_totals" in str(page))
    assert "<table" in reconciliation.read_text(encoding="utf-8")  # GX's results table, rendered server side
