"""Great Expectations for one run's report folder: a file context, its suites, its Data Docs.

Called directly from the DAG's tasks (the GX Airflow provider does not support Airflow 3). Each run
folder (named after the run, under its rollout's folder) holds its own GX project (`gx/`: suites,
validation definitions, results: GX's working state, rewritten as it goes) and, written once, the
Data Docs each validation stage published (`data_docs/<stage>/index.html`), so a compliance
reviewer gets one self-contained folder per run. GX names its results after the migration run
(run name = run id). The published pages are viewable offline: GX's own styles and images are
shipped with the site; the CDN scripts and stylesheets, and GX's logo (a tracking URL), are taken
out (`offline_page`), and the index, which GX fills with a script, is a plain page of ours.
Frames given to GX carry ids, codes and counts only: never a NIR, a title or content. Those ids
and codes come from the extract as written, and GX puts the values an expectation did not expect
into the Data Docs HTML without escaping them: every text value with markup characters is
HTML-escaped before GX sees it (`neutralise_markup`), so a hostile extract cannot script the
pages a compliance reviewer opens.
"""

from __future__ import annotations

import gc
import html
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ExpectationSuite

log = logging.getLogger(__name__)

DATA_DOCS_FOLDER = "data_docs"  # the published sites, one folder per validation stage
SITE_BUILD_FOLDER = Path("gx") / "uncommitted" / "site_build"  # where GX builds (and rebuilds) its site
RESULTS_FOLDER = Path("gx") / "uncommitted" / "validations"  # GX's validation results store
SITE_NAME = "run_report"
STAGE_LABELS = {"decisions": "après les décisions", "committed": "après l'application"}
CRITICAL = "critical"


_MARKUP = ("<", ">", "&", '"', "'")


def neutralise_markup(frame: pd.DataFrame) -> pd.DataFrame:
    """HTML-escape, in place, the text values of the frame that hold markup characters.

    Codes and ids a check accepts never hold any, so no verdict changes: a value that was
    unexpected stays unexpected (and the two sides of a pair check are escaped alike). A column
    is escaped only where its joined text has one of the characters: one pass in C per column.
    """
    from pandas.api.types import is_object_dtype, is_string_dtype

    for column in frame.columns:
        dtype = frame[column].dtype
        if not (is_object_dtype(dtype) or is_string_dtype(dtype)):  # pandas 3 reads text as `str`
            continue
        values = frame[column].tolist()
        try:
            joined = "".join(filter(None, values))
        except TypeError:  # not only text (a NaN, a number)
            joined = "".join(value for value in values if isinstance(value, str))
        if any(character in joined for character in _MARKUP):
            frame[column] = [html.escape(value) if isinstance(value, str) else value for value in values]
    return frame


@dataclass
class SuiteOutcome:
    """What one suite found over every chunk it validated."""

    suite: str
    chunks: int = 0
    rows: int = 0
    evaluated: int = 0
    failed_critical: list[str] = field(default_factory=list)
    failed_warning: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failed_critical

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "passed": self.passed,
            "chunks": self.chunks,
            "rows": self.rows,
            "evaluated_expectations": self.evaluated,
            "failed_critical": sorted(set(self.failed_critical)),
            "failed_warning": sorted(set(self.failed_warning)),
            "seconds": round(self.seconds, 3),
        }


class RunValidator:
    """A GX file context rooted in a run's report folder."""

    def __init__(self, run_folder: Path, run_name: str) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        # GX narrates every datasource save at INFO: keep the task logs readable.
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        started = time.perf_counter()
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.run_folder = Path(run_folder)
        self.run_name = run_name
        self.run_folder.mkdir(parents=True, exist_ok=True)
        self._gx = gx
        self.context = gx.get_context(mode="file", project_root_dir=str(self.run_folder))
        variables = self.context.variables
        bars = variables.progress_bars
        globally = bars.get("globally") if isinstance(bars, dict) else getattr(bars, "globally", None)
        if globally is not False:
            variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            variables.analytics_enabled = False
            variables.save()
        sites = self.context.list_data_docs_sites()
        if SITE_NAME not in sites:
            self.context.add_data_docs_site(
                site_name=SITE_NAME,
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(self.run_folder / SITE_BUILD_FOLDER),
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        for other in [name for name in sites if name != SITE_NAME]:
            self.context.delete_data_docs_site(other)
        self._source = self.context.data_sources.add_or_update_pandas("mes_rollout")
        self.seconds = time.perf_counter() - started

    def validate(self, suite: ExpectationSuite, frames: Any, outcome: SuiteOutcome | None = None) -> SuiteOutcome:
        """Validate every frame (chunk) of an iterable against the suite; frames are built lazily."""
        outcome = outcome or SuiteOutcome(suite.name)
        started = time.perf_counter()
        saved = self.context.suites.add_or_update(suite)
        asset_name = f"{suite.name}_frame"
        try:
            asset = self._source.get_asset(asset_name)
        except LookupError:
            asset = self._source.add_dataframe_asset(asset_name)
        try:
            batch = asset.get_batch_definition("whole_frame")
        except KeyError:
            batch = asset.add_batch_definition_whole_dataframe("whole_frame")
        definition = self.context.validation_definitions.add_or_update(
            self._gx.ValidationDefinition(name=suite.name, data=batch, suite=saved)
        )
        self.seconds += time.perf_counter() - started
        # The collection after each chunk keeps the peak flat; the objects alive before the first
        # chunk (GX's modules and context: millions of them) are left out of it, or each collection
        # walks them all again (0.15 s a chunk, measured). They are handed back to the collector after.
        gc.freeze()
        try:
            for frame in frames:
                outcome.seconds += self._validate_chunk(definition, neutralise_markup(frame), outcome)
                del frame
                gc.collect()  # a chunk's frame and GX's metrics are garbage now
        finally:
            gc.unfreeze()
        return outcome

    def _validate_chunk(self, definition: Any, frame: pd.DataFrame, outcome: SuiteOutcome) -> float:
        started = time.perf_counter()
        from great_expectations.core.run_identifier import RunIdentifier

        result = definition.run(
            batch_parameters={"dataframe": frame}, result_format="SUMMARY", run_id=RunIdentifier(run_name=self.run_name)
        )
        outcome.chunks += 1
        outcome.rows += len(frame)
        outcome.evaluated += len(result.results)
        for item in result.results:
            if item.success:
                continue
            config = item.expectation_config
            name = f"{config.type}({config.kwargs.get('column') or config.kwargs.get('column_A') or ''})"
            severity = getattr(config, "severity", None) or CRITICAL
            severity = str(getattr(severity, "value", severity)).lower()
            (outcome.failed_critical if severity == CRITICAL else outcome.failed_warning).append(name)
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        return elapsed

    def build_data_docs(self) -> Path:
        """GX's site, built (again) in the project's working folder; `publish_site` makes it evidence."""
        started = time.perf_counter()
        self.context.build_data_docs(site_names=[SITE_NAME])
        self.seconds += time.perf_counter() - started
        return self.run_folder / SITE_BUILD_FOLDER


# --- offline pages ------------------------------------------------------------------------------

_ANYWHERE = r"(?:https?:)?//"  # http://, https:// and protocol-relative //host
_REMOTE_SCRIPT = re.compile(rf"""<script\b[^>]*\bsrc\s*=\s*["']?{_ANYWHERE}[^>]*>\s*</script\s*>""", re.I)
_REMOTE_TAG = re.compile(
    rf"""<(?:link|img|source|iframe|embed)\b[^>]*\b(?:href|src|srcset)\s*=\s*["']?{_ANYWHERE}[^>]*>""", re.I
)
_REMOTE_CSS_URL = re.compile(rf"""url\(\s*["']?{_ANYWHERE}[^)]*\)""", re.I)
_REMOTE_IMPORT = re.compile(rf"""@import\s+(?:url\()?\s*["']?{_ANYWHERE}[^;]*;""", re.I)
_INLINE_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.I | re.S)
# Without bootstrap the pages are bare HTML: enough style to read GX's server-rendered tables.
OFFLINE_STYLE = (
    "<style>body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
    "th,td{border:1px solid #bbb;padding:.25em .6em;vertical-align:top}.collapse:not(.show){display:block}"
    "nav img,.navbar-brand img{display:none}</style>"
)


def offline_page(page: str) -> str:
    """A Data Docs page with nothing fetched from the network: no CDN script or stylesheet, no
    remote image (GX's logo carries a tracking id), no inline script (it drives the CDN's jQuery
    and bootstrap, absent offline); GX's own inline styles stay, with a plain table style added."""
    page = _REMOTE_SCRIPT.sub("", page)
    page = _INLINE_SCRIPT.sub("", page)
    page = _REMOTE_TAG.sub("", page)
    page = _REMOTE_IMPORT.sub("", page)
    page = _REMOTE_CSS_URL.sub("none", page)
    return page.replace("</head>", f"{OFFLINE_STYLE}</head>", 1)


def offline_stylesheet(css: str) -> str:
    return _REMOTE_CSS_URL.sub("none", _REMOTE_IMPORT.sub("", css))


def _verdict(results_store: Path, page: Path) -> str:
    """"réussie" / "échouée" from GX's stored result behind a validation page, "" if not found."""
    stored = results_store / page.with_suffix(".json")
    try:
        success = json.loads(stored.read_text(encoding="utf-8")).get("success")
    except (OSError, ValueError):
        return ""
    return "réussie" if success else "échouée"


def site_index(built: Path, results_store: Path, *, run_id: str, stage: str, provenance: dict[str, Any]) -> str:
    """The site's index as plain HTML: GX's own is a table filled by a script from a CDN."""
    esc = html.escape
    rows = []
    for page in sorted(built.glob("validations/**/*.html")):
        relative = page.relative_to(built)
        parts = relative.parts  # validations/<suite>/<run name>/<run time>/<batch>.html
        suite = parts[1] if len(parts) > 1 else ""
        run_name = parts[2] if len(parts) > 2 else ""
        run_time = parts[3] if len(parts) > 3 else ""
        verdict = _verdict(results_store, relative.relative_to("validations"))
        rows.append(
            f"<tr><td>{esc(suite)}</td><td>{esc(run_name)}</td><td>{esc(run_time)}</td><td>{esc(verdict)}</td>"
            f'<td><a href="{esc(relative.as_posix())}">résultats</a></td></tr>'
        )
    suites = [
        f'<li><a href="{esc(page.relative_to(built).as_posix())}">{esc(page.stem)}</a></li>'
        for page in sorted(built.glob("expectations/**/*.html"))
    ]
    inputs = "".join(
        f"<li>{esc(str(item.get('kind')))} {esc(str(item.get('file')))} : SHA-256 {esc(str(item.get('sha256')))}</li>"
        for item in provenance.get("inputs", [])
    )
    return (
        '<!DOCTYPE html>\n<html lang="fr">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Data Docs {esc(run_id)} ({esc(stage)})</title>\n{OFFLINE_STYLE}\n</head>\n<body>\n"
        f"<h1>Validations Great Expectations de l'exécution {esc(run_id)}</h1>\n"
        f"<p>Étape : {esc(STAGE_LABELS.get(stage, stage))}. Chaque ligne renvoie au détail des attentes évaluées.</p>\n"
        "<h2>Résultats de validation</h2>\n"
        '<table id="validation-results">\n'
        "<tr><th>suite</th><th>exécution</th><th>horodatage (UTC)</th><th>verdict</th><th>détail</th></tr>\n"
        + "\n".join(rows)
        + "\n</table>\n<h2>Suites d'attentes</h2>\n<ul>"
        + "".join(suites)
        + "</ul>\n<h2>Provenance</h2>\n<ul>"
        f"<li>déploiement (rollout) : {esc(str(provenance.get('rollout_id')))}</li>"
        f"<li>base de données : {esc(str(provenance.get('database')))}</li>"
        f"<li>version du code : {esc(str(provenance.get('code_version')))}</li>"
        f"<li>fichiers d'entrée :<ul>{inputs or '<li>aucun</li>'}</ul></li>"
        "</ul>\n</body>\n</html>\n"
    )


PublishFile = Callable[[Path, bytes], None]


def publish_site(
    built: Path,
    results_store: Path,
    destination: Path,
    *,
    run_id: str,
    stage: str,
    provenance: dict[str, Any],
    write: PublishFile,
    existing: Callable[[Path], str | None],
) -> Path:
    """Copy GX's built site, made offline, to `destination/<stage>` through `write` (write once);
    returns the index's path. A folder already published with other content (the stage validated
    again) is kept: the new site goes to `<stage>-2`, `<stage>-3`..."""
    import hashlib

    files: dict[Path, bytes] = {}
    for source in sorted(path for path in built.rglob("*") if path.is_file()):
        relative = source.relative_to(built)
        if relative == Path("index.html"):
            continue
        if source.suffix == ".html":
            files[relative] = offline_page(source.read_text(encoding="utf-8")).encode("utf-8")
        elif source.suffix == ".css":
            files[relative] = offline_stylesheet(source.read_text(encoding="utf-8")).encode("utf-8")
        else:
            files[relative] = source.read_bytes()
    files[Path("index.html")] = site_index(
        built, results_store, run_id=run_id, stage=stage, provenance=provenance
    ).encode("utf-8")
    attempt = 1
    while True:
        folder = destination / (stage if attempt == 1 else f"{stage}-{attempt}")
        clashes = [
            relative for relative, content in files.items()
            if (found := existing(folder / relative)) is not None and found != hashlib.sha256(content).hexdigest()
        ]  # fmt: skip
        if not clashes:
            break
        attempt += 1
    for relative, content in files.items():
        write(folder / relative, content)
    return folder / "index.html"
