"""Great Expectations for one run's report folder: a file context, its suites, its Data Docs.

Called directly from the DAG's tasks (the GX Airflow provider does not support Airflow 3). Each run
folder holds its own GX project (`gx/`: suites, validation definitions, results) and its Data Docs
(`data_docs/index.html`), so a compliance reviewer gets one self-contained folder per run.
Frames given to GX carry ids, codes and counts only: never a NIR, a title or content. Those ids
and codes come from the extract as written, and GX puts the values an expectation did not expect
into the Data Docs HTML without escaping them: every text value with markup characters is
HTML-escaped before GX sees it (`neutralise_markup`), so a hostile extract cannot script the
pages a compliance reviewer opens.
"""

from __future__ import annotations

import gc
import html
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ExpectationSuite

log = logging.getLogger(__name__)

DATA_DOCS_FOLDER = "data_docs"
SITE_NAME = "run_report"
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

    def __init__(self, run_folder: Path) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        # GX narrates every datasource save at INFO: keep the task logs readable.
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        started = time.perf_counter()
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.run_folder = Path(run_folder)
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
                        "base_directory": str(self.run_folder / DATA_DOCS_FOLDER),
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
        result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
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
        started = time.perf_counter()
        self.context.build_data_docs(site_names=[SITE_NAME])
        self.seconds += time.perf_counter() - started
        return self.run_folder / DATA_DOCS_FOLDER / "index.html"
