"""The plugin's pages through Airflow's API server: answered for compliance, refused without a login,
figures that are the summary's (and so `mes-rollout status`'s), reports served from the reports
folder only."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ui.conftest import ApiServer, Rollout
from tests.ui.populate import DRY_RUN_WAVE_ID, WAVE_ID

pytestmark = pytest.mark.slow


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def get(server: ApiServer, path: str, token: str | None = None, *, cookie: bool = False) -> Answer:
    headers = {}
    if token and cookie:
        headers["Cookie"] = f"_token={token}"
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(server.base_url + path, headers=headers)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=60) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers), error.read())


def value_of(page: str, attribute: str, key: str) -> int:
    match = re.search(rf'{attribute}="{re.escape(key)}" data-value="(\d+)"', page)
    assert match, f"{attribute}={key} not on the page"
    return int(match.group(1))


@pytest.mark.parametrize(
    "path",
    ["/mes-rollout/index.html", f"/mes-rollout/waves/{WAVE_ID}.html", f"/mes-rollout/letters/{WAVE_ID}.pdf",
     "/mes-rollout/plotly.min.js", "/mes-rollout/run?dag_id=enrolment_wave&run_id=x"],
)  # fmt: skip
def test_pages_refuse_a_request_without_login(api_server: ApiServer, path: str) -> None:
    answer = get(api_server, path)
    assert answer.status in (401, 403), answer.status
    assert b"Mon espace sant" not in answer.body and b"Plotly" not in answer.body
    forged = get(api_server, path, "not-a-token")
    assert forged.status in (401, 403)


def test_plugin_is_listed_with_its_views(api_server: ApiServer) -> None:
    answer = get(api_server, "/api/v2/plugins", api_server.token("compliance"))
    assert answer.status == 200
    plugin = next(p for p in json.loads(answer.body)["plugins"] if p["name"] == "mes_rollout_ui")
    destinations = {view["destination"]: view["href"] for view in plugin["external_views"]}
    assert destinations["nav"] == "/mes-rollout/index.html"
    assert destinations["dag_run"] == "/mes-rollout/run?dag_id={DAG_ID}&run_id={RUN_ID}"


def test_rollout_page_shows_the_summary_for_compliance(api_server: ApiServer, rollout: Rollout) -> None:
    token = api_server.token("compliance")
    for use_cookie in (False, True):  # the UI's iframe sends the _token cookie; scripts send a bearer
        answer = get(api_server, "/mes-rollout/index.html", token, cookie=use_cookie)
        assert answer.status == 200, answer.text[:300]
    page = answer.text
    status = rollout.status
    assert value_of(page, "data-total", "persons/total") == status["persons"]["total"]
    for state, count in status["enrolments"].items():
        assert value_of(page, "data-total", f"enrolments/{state}") == count
    for channel, statuses in status["notifications"].items():
        for state, count in statuses.items():
            assert value_of(page, "data-total", f"notifications.{channel}/{state}") == count
    assert value_of(page, "data-funnel", "dmp_migrated") == status["dmp_documents"]["migrated"]
    emails = status["notifications"]["email"]
    left = emails.get("sent", 0) + emails.get("delivered", 0)
    assert left <= value_of(page, "data-funnel", "emails_sent") <= left + emails.get("permanent_failure", 0)
    created = status["enrolments"].get("created", 0)
    assert value_of(page, "data-funnel", "activated") + value_of(page, "data-funnel", "automatic") == created
    assert f'href="waves/{WAVE_ID}.html"' in page and f'href="waves/{DRY_RUN_WAVE_ID}.html"' in page
    # The operator's comment is data: escaped, never markup.
    assert "<b>approuvée</b>" not in page
    # Counts only: no NIR (15 digits) on the page.
    assert not re.search(r"\b[12]\d{14}\b", page)
    assert 'src="plotly.min.js"' in page and "cdn" not in page.lower()


def test_operator_may_read_too(api_server: ApiServer) -> None:
    assert get(api_server, "/mes-rollout/index.html", api_server.token("operator")).status == 200


def test_wave_view_of_a_run(api_server: ApiServer, rollout: Rollout) -> None:
    token = api_server.token("compliance")
    import sqlite3

    with sqlite3.connect(rollout.var_dir / "mes-rollout.db") as database:
        run_id, told_email, told_letter = database.execute(
            "SELECT run_id, SUM(channel = 'email'), SUM(channel = 'letter') FROM waves"
            " JOIN wave_cohort USING (wave_id) WHERE wave_id = ? AND outcome = 'notify'", (WAVE_ID,)
        ).fetchone()
    query = urllib.parse.urlencode({"dag_id": "enrolment_wave", "run_id": run_id})
    redirect = get(api_server, f"/mes-rollout/run?{query}", token)
    assert redirect.status == 303 and redirect.headers["location"].endswith(f"/mes-rollout/waves/{WAVE_ID}.html")
    other_dag = get(api_server, f"/mes-rollout/run?dag_id=space_creation&run_id={urllib.parse.quote(run_id)}", token)
    assert other_dag.status == 200 and "enrolment_wave" in other_dag.text
    answer = get(api_server, f"/mes-rollout/waves/{WAVE_ID}.html", token)
    assert answer.status == 200
    page = answer.text
    assert re.search(r'data-channel="email"><td>courriel</td><td class="n" data-value="(\d+)"', page).group(1) == str(told_email)  # type: ignore[union-attr]
    assert re.search(r'data-channel="letter"><td>courrier</td><td class="n" data-value="(\d+)"', page).group(1) == str(told_letter)  # type: ignore[union-attr]
    assert "approuvée par" in page and "&lt;b&gt;approuvée&lt;/b&gt;" in page  # who approved; comment escaped
    assert "dag_test" in page  # who triggered: Airflow's run (dag.test() in the populating script)
    assert "Camille EXEMPLE" in page and "camille.exemple@exemple.invalid" in page  # the synthetic sample
    assert not re.search(r"\b[12]\d{14}\b", page)
    letter = get(api_server, f"/mes-rollout/letters/{WAVE_ID}.pdf", token)
    assert letter.status == 200 and letter.body.startswith(b"%PDF") and letter.headers["content-type"] == "application/pdf"
    dry = get(api_server, f"/mes-rollout/waves/{DRY_RUN_WAVE_ID}.html", token).text
    assert 'id="dry-run"' in dry and "rien écrit pour les personnes" in dry
    assert get(api_server, "/mes-rollout/waves/NO-SUCH-WAVE.html", token).status == 404


def test_reports_are_served_from_the_reports_folder_only(api_server: ApiServer, rollout: Rollout) -> None:
    token = api_server.token("compliance")
    page = get(api_server, "/mes-rollout/index.html", token).text
    links = re.findall(r'<a href="(reports/[^"]+)" data-report>', page)
    assert any(link.endswith("/report.html") for link in links)
    assert any("/data_docs/" in link for link in links)
    for link in links:
        answer = get(api_server, f"/mes-rollout/{link}", token)
        assert answer.status == 200, link
        assert answer.headers.get("content-security-policy") == "sandbox"
    # Outside the folder: '..' (encoded, so that no client normalises it away), absolute, a link out.
    secret = rollout.var_dir / "mes-rollout.db"
    reports = rollout.var_dir / "reports"
    (reports / "escape").unlink(missing_ok=True)
    (reports / "escape").symlink_to(secret)
    for attempt in ("..%2Fmes-rollout.db", "%2E%2E/%2E%2E/etc/passwd", "%2Fetc%2Fpasswd", "escape", "",
                    "rollout-x/../../mes-rollout.db"):  # fmt: skip
        answer = get(api_server, f"/mes-rollout/reports/{attempt}", token)
        assert answer.status == 404, (attempt, answer.status)
        assert b"SQLite format" not in answer.body and b"root:" not in answer.body


def test_report_command_writes_the_same_pages(rollout: Rollout, tmp_path: Path) -> None:
    out = tmp_path / "archive"
    script = (
        "import json, sys\n"
        "from console import cli_report\n"
        "print(json.dumps(cli_report.write(sys.argv[1])))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(out)], env=rollout.environment, capture_output=True, timeout=120, check=True
    )
    summary = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert summary["waves"] == 2
    index = (out / "index.html").read_text(encoding="utf-8")
    assert value_of(index, "data-total", "persons/total") == rollout.status["persons"]["total"]
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    assert (out / "waves" / f"{WAVE_ID}.html").is_file() and (out / "letters" / f"{WAVE_ID}.pdf").read_bytes().startswith(b"%PDF")
    for link in re.findall(r'<a href="(reports/[^"]+)" data-report>', index):
        assert (out / link).is_file(), link
    assert not (out / "reports" / "escape").exists()
