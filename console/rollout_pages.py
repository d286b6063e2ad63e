"""The Rollout and Wave pages (Airflow UI plugin, `mes-rollout report`), built from the summary tables.

Every figure comes from the rollout_summary_* tables the daily DAGs refresh
(mes_rollout/rollout_summary.py), the calendar from enrolment/data/rollout_plan.csv, the
migration runs from migration_runs (one row per run) and their reports from MES_REPORTS_DIR.
Pages are French, escaped by Jinja2's autoescape, and carry counts only: no NIR, name, address or
email, except the synthetic recipient of the sample email and letter. Links are relative, so the
same pages work served by the plugin (under /mes-rollout/) and written as files by `report --out`:
index.html, waves/<wave>.html, letters/<wave>.pdf, reports/<path>, plotly.min.js, rollout.js.
"""

from __future__ import annotations

import datetime as dt
import email
import json
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email import policy
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from sqlalchemy import Connection, text

from enrolment.plan import DEFAULT_PLAN, PlannedWave, read_plan
from enrolment.references import draw
from mes_rollout.config import OptOutWindow, Settings
from mes_rollout.constants import UnreachableReason, WaveExclusion, WaveState
from mes_rollout.db import as_date, as_datetime
from mes_rollout.rollout_summary import KIND_EXCLUSION, KIND_UNREACHABLE, NO_REASON
from notifications.french_dates import date_in_words
from notifications.letter_pdf import Letter, PrintFile
from notifications.render import Member, build_email, letter_paragraphs, message_content

PARIS = ZoneInfo("Europe/Paris")
# GOV.UK Notify warns a service whose failures pass 3 %: the same line for bounces and returns.
FAILURE_WARNING_RATE = 0.03
WAVE_DAG_ID = "enrolment_wave"
INDEX = "index.html"
CHARTS_SCRIPT = "rollout.js"
PLOTLY_SCRIPT = "plotly.min.js"

WAVE_STATES = {
    WaveState.PLANNING: "en préparation",
    WaveState.AWAITING_APPROVAL: "en attente d'approbation",
    WaveState.DRY_RUN: "essai à blanc (rien n'a été écrit pour les personnes)",
    WaveState.APPROVED: "approuvée",
    WaveState.REJECTED: "rejetée",
}
REASONS = {
    WaveExclusion.REPRESENTATIVE_MISSING: "mineur sans représentant légal au registre",
    WaveExclusion.REPRESENTATIVE_UNKNOWN: "le représentant légal n'est pas au registre",
    WaveExclusion.REPRESENTATIVE_DECEASED: "le représentant légal est décédé",
    WaveExclusion.OVER_CAP: "plafond de destinataires de la vague atteint : laissé pour une vague suivante",
    WaveExclusion.NO_CONTACT: "ni courriel utilisable ni adresse imprimable",
    UnreachableReason.EMAIL_FAILED_NO_ADDRESS: "le courriel a échoué et aucune adresse n'est imprimable",
    UnreachableReason.ADDRESS_NOT_PRINTABLE: "un courrier était dû mais l'adresse ne peut pas être imprimée",
    UnreachableReason.LETTER_RETURNED: "courrier revenu : n'habite pas à l'adresse indiquée (NPAI)",
    "unreachable": "injoignable à la sélection : ni courriel utilisable ni adresse imprimable",
    NO_REASON: "raison non enregistrée",
}
REASON_KINDS = {KIND_EXCLUSION: "non informées à la sélection", KIND_UNREACHABLE: "injoignables après un échec"}

# The synthetic recipient of the samples: not a person of the register. The key is not a wave's
# key, so the code shown is nobody's code.
SAMPLE_MEMBER = Member(nir="299999999999999", prenom="Camille", nom="Exemple", sexe="F")
SAMPLE_ADDRESS = ("Camille EXEMPLE", "12 RUE DE L'EXEMPLE", "75001 PARIS")
SAMPLE_EMAIL_ADDRESS = "camille.exemple@exemple.invalid"
SAMPLE_KEY = b"mes-rollout: exemple, pas une clef de vague"
SAMPLE_NOTIFICATION_ID = "00000000-0000-4000-8000-00000000e0e0"


# --- reading the summary ------------------------------------------------------------------------


@dataclass
class Summary:
    """What the summary tables hold, read once per page."""

    waves: list[dict[str, Any]]
    departements: list[dict[str, Any]]
    days: list[dict[str, Any]]
    reasons: list[dict[str, Any]]
    totals: dict[str, dict[str, int]]
    refreshed: dict[str, Any] | None
    migration_runs: list[dict[str, Any]] = field(default_factory=list)


def _rows(connection: Connection, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in connection.execute(text(sql), dict(params or {}))]


def read_summary(connection: Connection) -> Summary:
    totals: dict[str, dict[str, int]] = defaultdict(dict)
    for row in _rows(connection, "SELECT section, label, value FROM rollout_summary_totals ORDER BY section, label"):
        totals[row["section"]][row["label"]] = int(row["value"])
    refreshed = _rows(connection, "SELECT refreshed_at, run_id, source FROM rollout_summary_refresh")
    waves = _rows(connection, "SELECT * FROM rollout_summary_waves ORDER BY send_date, wave_id")
    for wave in waves:
        _wave_values(wave)
    return Summary(
        waves=waves,
        departements=_rows(
            connection, "SELECT * FROM rollout_summary_departements ORDER BY departement, wave_id"
        ),
        days=_rows(connection, "SELECT day, wave_id, channel, messages FROM rollout_summary_days ORDER BY day"),
        reasons=_rows(
            connection, "SELECT wave_id, kind, reason, people FROM rollout_summary_reasons ORDER BY kind, reason"
        ),
        totals=dict(totals),
        refreshed=refreshed[0] if refreshed else None,
        migration_runs=_rows(
            connection,
            "SELECT run_id, logical_date, state, dmps, documents, migrated, held_back, skipped, holdback_rate,"
            " holdback_threshold, stop_reason, report_path FROM migration_runs ORDER BY logical_date, run_id",
        ),
    )


def _wave_values(wave: dict[str, Any]) -> None:
    """Typed values and the rates of one wave row."""
    wave["send_date"] = as_date(wave["send_date"])
    wave["decided_at"] = as_datetime(wave["decided_at"])
    wave["dry_run"] = bool(wave["dry_run"])
    counts = wave.get("counts")
    wave["counts"] = json.loads(counts) if isinstance(counts, str) else dict(counts or {})
    wave["told"] = wave["routed_email"] + wave["routed_letter"]
    wave["opposed_all"] = wave["people_opposed"] + wave["people_late_opposed"]
    attempted_emails = wave["emails"] - wave["emails_waiting"] - wave["emails_cancelled"]
    wave["email_failure_rate"] = _rate(wave["emails_bounced"], attempted_emails)
    wave["letter_return_rate"] = _rate(wave["letters_returned"], wave["letters_posted"])
    wave["opposition_rate"] = _rate(wave["opposed_all"], wave["told"])


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def wave_of_run(connection: Connection, run_id: str) -> str | None:
    """The wave an enrolment_wave run planned (its Airflow run id is kept in the summary)."""
    return connection.execute(
        text("SELECT wave_id FROM rollout_summary_waves WHERE run_id = :run_id"), {"run_id": run_id}
    ).scalar_one_or_none()


# --- formatting ---------------------------------------------------------------------------------


def number(value: Any) -> str:
    """12 345 (narrow no-break space between thousands, as French typography writes it)."""
    return f"{int(value or 0):,}".replace(",", "\u202f")


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}\u202f%".replace(".", ",")


def moment(value: Any) -> str:
    stamp = as_datetime(value)
    return "—" if stamp is None else stamp.astimezone(PARIS).strftime("%d/%m/%Y à %H:%M")


def day_words(value: Any) -> str:
    day = as_date(value)
    return "—" if day is None else date_in_words(day)


def state_words(state: str) -> str:
    try:
        return WAVE_STATES[WaveState(state)]
    except ValueError:
        return state


def reason_words(reason: str) -> str:
    return REASONS.get(reason, reason)


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("console", "rollout_templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(number=number, percent=percent, moment=moment, day_words=day_words,
                       state_words=state_words, reason_words=reason_words)  # fmt: skip
    env.globals.update(warning_rate=FAILURE_WARNING_RATE)
    return env


def chart(figure: Mapping[str, Any]) -> Markup:
    """A plotly figure as JSON safe inside <script type="application/json"> (rollout.js draws it)."""
    layout = {"separators": ", ", "margin": {"t": 40, "r": 20, "b": 60, "l": 60}, "height": 340,
              "font": {"family": "sans-serif", "size": 12}, **figure.get("layout", {})}  # fmt: skip
    payload = json.dumps({"data": figure["data"], "layout": layout}, ensure_ascii=False)
    return Markup(payload.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))  # noqa: S704


# --- the Rollout page ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportLink:
    label: str
    href: str


def report_links(reports_dir: Path, run_id: str) -> list[ReportLink]:
    """The report files and Data Docs sites of one migration run, as links under reports/."""
    root = reports_dir.resolve()
    links: list[ReportLink] = []
    if not root.is_dir():
        return links
    for folder in sorted(root.glob(f"*/migration/{run_id}")):
        for name, label in (("report.html", "rapport de conformité"), ("report.json", "rapport (JSON)")):
            if (folder / name).is_file():
                links.append(ReportLink(label, _report_href(root, folder / name)))
        for docs in sorted(folder.glob("data_docs/*/index.html")):
            links.append(ReportLink(f"Data Docs : {docs.parent.name}", _report_href(root, docs)))
    return links


def _report_href(root: Path, path: Path) -> str:
    return "reports/" + path.resolve().relative_to(root).as_posix()


def _funnel(waves: list[dict[str, Any]], totals: dict[str, dict[str, int]]) -> list[tuple[str, str, int]]:
    """(key, label, value) of the funnel, over every wave that was not a dry run."""
    real = [wave for wave in waves if not wave["dry_run"]]

    def total(key: str) -> int:
        return sum(int(wave[key]) for wave in real)

    documents = totals.get("dmp_documents", {})
    return [
        ("selected", "personnes sélectionnées (éligibles)", total("selected")),
        ("routed_email", "personnes à informer par courriel", total("routed_email")),
        ("routed_letter", "personnes à informer par courrier", total("routed_letter")),
        ("emails_sent", "courriels envoyés", total("emails_sent")),
        ("emails_delivered", "courriels délivrés", total("emails_delivered")),
        ("emails_bounced", "courriels en échec", total("emails_bounced")),
        ("letters_posted", "courriers postés", total("letters_posted")),
        ("letters_returned", "courriers revenus (NPAI)", total("letters_returned")),
        ("letters_fallback", "courriers de repli après un courriel en échec", total("letters_fallback")),
        ("opposed", "personnes opposées", total("opposed_all")),
        ("activated", "espaces activés par la personne", total("spaces_activated")),
        ("automatic", "espaces créés automatiquement", total("spaces_automatic")),
        ("dmp_migrated", "documents DMP migrés", int(documents.get("migrated", 0))),
        ("dmp_held_back", "documents DMP retenus", int(documents.get("held_back", 0))),
    ]


def _by_departement(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, int]] = {}
    keys = ("selected", "routed_email", "routed_letter", "unreachable_at_selection", "excluded", "opposed",
            "spaces_activated", "spaces_automatic")  # fmt: skip
    for row in rows:
        target = merged.setdefault(row["departement"], dict.fromkeys(keys, 0))
        for key in keys:
            target[key] += int(row[key])
    return [{"departement": code, **values} for code, values in merged.items()]


def _calendar(plan: list[PlannedWave], summary: Summary) -> list[dict[str, Any]]:
    """One row per day of the calendar or of a message sent: what was planned, what went out."""
    waves_by_id = {wave["wave_id"]: wave for wave in summary.waves}
    sent: dict[dt.date, dict[str, int]] = defaultdict(lambda: {"email": 0, "letter": 0})
    for row in summary.days:
        day = as_date(row["day"])
        assert day is not None
        sent[day][row["channel"]] = sent[day].get(row["channel"], 0) + int(row["messages"])
    planned = {wave.day: wave for wave in plan}
    rows = []
    for day in sorted(set(planned) | set(sent)):
        wave = planned.get(day)
        recorded = waves_by_id.get(wave.wave_id) if wave else None
        rows.append({
            "day": day,
            "planned_wave": wave.wave_id if wave else None,
            "planned_departements": ", ".join(wave.departements) if wave else "",
            "recorded_state": recorded["state"] if recorded else None,
            "emails": sent[day]["email"] if day in sent else 0,
            "letters": sent[day]["letter"] if day in sent else 0,
        })  # fmt: skip
    return rows


def rollout_page(connection: Connection, settings: Settings, *, plan_path: Path = DEFAULT_PLAN) -> str:
    summary = read_summary(connection)
    plan = read_plan(plan_path)
    real = [wave for wave in summary.waves if not wave["dry_run"]]
    funnel = _funnel(summary.waves, summary.totals)
    departements = _by_departement(summary.departements)
    calendar = _calendar(plan, summary)
    warnings = []
    for wave in real:
        for rate_key, what in (("email_failure_rate", "des courriels ont échoué"),
                               ("letter_return_rate", "des courriers sont revenus")):  # fmt: skip
            rate = wave[rate_key]
            if rate is not None and rate > FAILURE_WARNING_RATE:
                warnings.append(f"Vague {wave['wave_id']} : {percent(rate)} {what} (seuil d'alerte {percent(FAILURE_WARNING_RATE)}).")
    reasons: dict[tuple[str, str], int] = defaultdict(int)
    for row in summary.reasons:
        reasons[(row["kind"], row["reason"])] += int(row["people"])
    runs = [{**run, "links": report_links(settings.reports_dir, run["run_id"])} for run in summary.migration_runs]
    charts = {
        "funnel": chart({
            "data": [{"type": "funnel", "y": [label for _, label, _ in funnel[:12]],
                      "x": [value for _, _, value in funnel[:12]], "textinfo": "value"}],
            "layout": {"title": {"text": "Entonnoir du déploiement"}, "height": 480, "margin": {"l": 320}},
        }),
        "waves": chart({
            "data": [
                {"type": "bar", "name": "courriels envoyés", "x": [w["wave_id"] for w in real], "y": [w["emails_sent"] for w in real]},
                {"type": "bar", "name": "courriers postés", "x": [w["wave_id"] for w in real], "y": [w["letters_posted"] for w in real]},
                {"type": "bar", "name": "opposées", "x": [w["wave_id"] for w in real], "y": [w["opposed_all"] for w in real]},
                {"type": "bar", "name": "espaces créés", "x": [w["wave_id"] for w in real],
                 "y": [w["spaces_activated"] + w["spaces_automatic"] for w in real]},
            ],
            "layout": {"title": {"text": "Par vague"}, "barmode": "group"},
        }),
        "departements": chart({
            "data": [
                {"type": "bar", "name": "par courriel", "x": [d["departement"] for d in departements], "y": [d["routed_email"] for d in departements]},
                {"type": "bar", "name": "par courrier", "x": [d["departement"] for d in departements], "y": [d["routed_letter"] for d in departements]},
                {"type": "bar", "name": "non informées", "x": [d["departement"] for d in departements],
                 "y": [d["unreachable_at_selection"] + d["excluded"] for d in departements]},
            ],
            "layout": {"title": {"text": "Personnes par département"}, "barmode": "stack", "xaxis": {"type": "category"}},
        }),
        "days": chart({
            "data": [
                {"type": "bar", "name": "courriels envoyés", "x": [r["day"].isoformat() for r in calendar], "y": [r["emails"] for r in calendar]},
                {"type": "bar", "name": "courriers postés", "x": [r["day"].isoformat() for r in calendar], "y": [r["letters"] for r in calendar]},
                {"type": "scatter", "mode": "markers", "name": "vague au calendrier",
                 "x": [r["day"].isoformat() for r in calendar if r["planned_wave"]],
                 "y": [0 for r in calendar if r["planned_wave"]],
                 "text": [r["planned_wave"] for r in calendar if r["planned_wave"]], "marker": {"symbol": "triangle-up", "size": 9}},
            ],
            "layout": {"title": {"text": "Messages par jour, au regard du calendrier"}, "barmode": "stack"},
        }),
    }  # fmt: skip
    return _environment().get_template("rollout.html.j2").render(
        root="",
        summary=summary,
        waves=summary.waves,
        funnel=funnel,
        departements=departements,
        calendar=calendar,
        warnings=warnings,
        reasons=sorted(reasons.items()),
        reason_kinds=REASON_KINDS,
        runs=runs,
        charts=charts,
        totals=summary.totals,
    )


# --- the Wave view ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """What Airflow knows of the enrolment_wave run (the plugin reads it; `report` has no Airflow)."""

    run_id: str
    triggered_by: str | None = None
    triggering_user: str | None = None
    run_type: str | None = None
    started_at: dt.datetime | None = None
    state: str | None = None


@dataclass(frozen=True)
class SampleEmail:
    headers: list[tuple[str, str]]
    html: str
    text: str


def _sample_content(send_date: dt.date, window: OptOutWindow) -> Any:
    return message_content(
        SAMPLE_NOTIFICATION_ID, SAMPLE_MEMBER.nir, SAMPLE_MEMBER, [SAMPLE_MEMBER], SAMPLE_KEY, send_date, window,
        reference=draw(SAMPLE_NOTIFICATION_ID),
    )


def sample_email(send_date: dt.date, window: OptOutWindow) -> SampleEmail:
    """The wave's email as a recipient gets it (rendered by notifications.render, then read back
    as a mail client would), for the synthetic recipient."""
    sent_at = dt.datetime.combine(send_date, dt.time(9, 0), PARIS)
    raw = build_email(_sample_content(send_date, window), SAMPLE_EMAIL_ADDRESS, now=sent_at)
    message = email.message_from_bytes(raw, policy=policy.default)
    headers = [(name, str(message[name])) for name in ("From", "To", "Subject", "Date")]
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    return SampleEmail(
        headers=headers,
        html=html_part.get_content() if html_part is not None else "",  # type: ignore[attr-defined]
        text=text_part.get_content() if text_part is not None else "",  # type: ignore[attr-defined]
    )


def sample_letter_pdf(send_date: dt.date, settings: Settings) -> bytes:
    """The wave's letter (notifications.letter_pdf) for the synthetic recipient, as PDF bytes."""
    content = _sample_content(send_date, settings.opt_out_window)
    letter = Letter(content.reference, SAMPLE_ADDRESS, f"Le {date_in_words(send_date)}", tuple(letter_paragraphs(content)))
    with tempfile.TemporaryDirectory(prefix="mes-sample-letter-") as folder:
        path = Path(folder) / "exemple.pdf"
        print_file = PrintFile(path, "Mon espace santé - exemple de courrier", settings.return_address)
        print_file.add(letter)
        print_file.close()
        return path.read_bytes()


def load_wave_row(connection: Connection, wave_id: str) -> dict[str, Any] | None:
    rows = _rows(connection, "SELECT * FROM rollout_summary_waves WHERE wave_id = :wave_id", {"wave_id": wave_id})
    if not rows:
        return None
    _wave_values(rows[0])
    return rows[0]


def dry_run_words(counts: Mapping[str, Any]) -> str:
    """A dry run's counts as a sentence."""
    people = counts.get("people", {})
    recipients = counts.get("recipients", {})
    not_eligible = counts.get("not_eligible", {})
    excluded = counts.get("excluded", {})
    sentence = (
        f"Cet essai à blanc n'a rien écrit pour les personnes. Planifiée pour de bon, la vague informerait "
        f"{number(people.get('to_notify', 0))} personne(s), par {number(recipients.get('email', 0))} courriel(s) et "
        f"{number(recipients.get('letter', 0))} courrier(s), dont {number(people.get('told_through_representative', 0))} "
        f"par leur représentant légal ; {number(people.get('unreachable', 0))} seraient injoignables et "
        f"{number(people.get('excluded', 0))} exclues"
    )
    if excluded:
        sentence += " (" + " ; ".join(f"{reason_words(reason)} : {number(count)}" for reason, count in sorted(excluded.items())) + ")"
    sentence += (
        f". Hors vague : {number(not_eligible.get('already_enrolled', 0))} déjà dans une vague, "
        f"{number(not_eligible.get('deceased', 0))} décédées avant l'envoi."
    )
    return sentence


def wave_page(
    connection: Connection, settings: Settings, wave_id: str, *, run: RunInfo | None = None,
    plan_path: Path = DEFAULT_PLAN,
) -> str | None:  # fmt: skip
    """The Wave view, or None when the summary has no such wave."""
    wave = load_wave_row(connection, wave_id)
    if wave is None:
        return None
    departements = _rows(
        connection, "SELECT * FROM rollout_summary_departements WHERE wave_id = :wave_id ORDER BY departement",
        {"wave_id": wave_id},
    )  # fmt: skip
    reasons = _rows(
        connection, "SELECT kind, reason, people FROM rollout_summary_reasons WHERE wave_id = :wave_id ORDER BY kind, reason",
        {"wave_id": wave_id},
    )  # fmt: skip
    plan = read_plan(plan_path)
    planned = next((entry for entry in plan if entry.wave_id == wave_id), None)
    of_the_day = next((entry for entry in plan if entry.day == wave["send_date"]), None)
    in_wave = [code for code in str(wave["departements"]).split(",") if code]
    by_code = {row["departement"]: row for row in departements}
    planned_codes = list(planned.departements) if planned else []
    rows: list[dict[str, Any]] = []
    for code in sorted(set(in_wave) | set(planned_codes) | set(by_code)):
        row = by_code.get(code, {})
        rows.append({"departement": code, "planned": code in planned_codes, "in_wave": code in in_wave,
                     **{key: int(row.get(key, 0)) for key in ("selected", "routed_email", "routed_letter",
                        "unreachable_at_selection", "excluded", "opposed", "spaces_activated", "spaces_automatic")}})  # fmt: skip
    sample = sample_email(wave["send_date"], settings.opt_out_window)
    figure = chart({
        "data": [
            {"type": "bar", "name": "par courriel", "x": [r["departement"] for r in rows], "y": [r["routed_email"] for r in rows]},
            {"type": "bar", "name": "par courrier", "x": [r["departement"] for r in rows], "y": [r["routed_letter"] for r in rows]},
            {"type": "bar", "name": "non informées", "x": [r["departement"] for r in rows],
             "y": [r["unreachable_at_selection"] + r["excluded"] for r in rows]},
        ],
        "layout": {"title": {"text": f"Vague {wave_id} : personnes par département"}, "barmode": "stack",
                   "xaxis": {"type": "category"}},
    })  # fmt: skip
    return _environment().get_template("wave.html.j2").render(
        root="../",
        wave=wave,
        rows=rows,
        planned=planned,
        of_the_day=of_the_day,
        reasons=reasons,
        reason_kinds=REASON_KINDS,
        run=run,
        dry_run_text=dry_run_words(wave["counts"]) if wave["dry_run"] else None,
        sample=sample,
        letter_href=f"../letters/{wave_id}.pdf",
        chart_departements=figure,
    )


def message_page(title: str, message: str) -> str:
    """A short page saying why there is nothing to show (e.g. a run of another DAG)."""
    return _environment().get_template("message.html.j2").render(root="", title=title, message=message)


# --- files the pages use ------------------------------------------------------------------------


def plotly_script() -> Path:
    """plotly.js as bundled with the plotly package: nothing is fetched from the network."""
    return Path(str(resources.files("plotly") / "package_data" / PLOTLY_SCRIPT))


def charts_script() -> Path:
    return Path(str(resources.files("console") / "rollout_templates" / CHARTS_SCRIPT))


def report_file(reports_dir: Path, relative: str) -> Path | None:
    """The file under the reports folder that `relative` names, or None: nothing outside that
    folder (no absolute path, no '..', no symbolic link leading out), nothing but regular files."""
    if not relative or "\x00" in relative or "\\" in relative:
        return None
    root = reports_dir.resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or candidate == root or not candidate.is_file():
        return None
    return candidate


def _report_files(reports_dir: Path) -> Iterable[tuple[Path, str]]:
    root = reports_dir.resolve()
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if report_file(root, relative) is not None:
            yield path, relative


def write_report(connection: Connection, settings: Settings, out: Path, *, plan_path: Path = DEFAULT_PLAN) -> dict[str, Any]:
    """The same pages as static files for the compliance archive (`mes-rollout report --out DIR`)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "waves").mkdir(exist_ok=True)
    (out / "letters").mkdir(exist_ok=True)
    (out / INDEX).write_text(rollout_page(connection, settings, plan_path=plan_path), encoding="utf-8")
    shutil.copyfile(plotly_script(), out / PLOTLY_SCRIPT)
    shutil.copyfile(charts_script(), out / CHARTS_SCRIPT)
    wave_ids = [row[0] for row in connection.execute(text("SELECT wave_id FROM rollout_summary_waves ORDER BY wave_id"))]
    for wave_id in wave_ids:
        page = wave_page(connection, settings, wave_id, plan_path=plan_path)
        assert page is not None
        (out / "waves" / f"{wave_id}.html").write_text(page, encoding="utf-8")
        wave = load_wave_row(connection, wave_id)
        assert wave is not None
        (out / "letters" / f"{wave_id}.pdf").write_bytes(sample_letter_pdf(wave["send_date"], settings))
    copied = 0
    for path, relative in _report_files(settings.reports_dir):
        target = out / "reports" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied += 1
    # Owner-only like every file the pipeline keeps (MES_FILE_MODE): the archive copies the reports.
    for path in (out, *out.rglob("*")):
        path.chmod(settings.dir_mode if path.is_dir() else settings.file_mode)
    return {"out": str(out), "index": str(out / INDEX), "waves": len(wave_ids), "report_files": copied}
