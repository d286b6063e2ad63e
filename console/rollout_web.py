"""The FastAPI app the Airflow plugin mounts at /mes-rollout: the Rollout and Wave pages behind
Airflow's login and roles (plugin endpoints are not protected by Airflow: every route here is).

Who may read: a user the auth manager lets read the runs of every rollout DAG (for the simple auth
manager: the viewer role and above). A request without a valid JWT (the UI's `_token` cookie or an
`Authorization: Bearer` header) gets 401, an unauthorised user 403. The pages are built by
console.rollout_pages; this module only answers requests.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from console import rollout_pages as pages

ROLLOUT_DAGS = ("enrolment_wave", "notification_sending", "space_creation", "dmp_migration")
URL_PREFIX = "/mes-rollout"
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def require_rollout_reader(user: Any) -> Any:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    manager = get_auth_manager()
    for dag_id in ROLLOUT_DAGS:
        if not manager.is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
        ):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden: reading the rollout DAGs' runs is not allowed")
    return user


def _settings() -> Any:
    from mes_rollout.config import load_settings

    return load_settings()


def _connection() -> Any:
    from mes_rollout.db import get_engine

    return get_engine().connect()


def _html(page: str, code: int = 200) -> HTMLResponse:
    return HTMLResponse(page, status_code=code, headers=_NO_STORE)


def _run_info(run_id: str | None) -> pages.RunInfo | None:
    """Who triggered the enrolment_wave run, as Airflow's metadata database says."""
    if not run_id:
        return None
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == pages.WAVE_DAG_ID, DagRun.run_id == run_id))
        if run is None:
            return pages.RunInfo(run_id=run_id)
        triggered_by = getattr(run, "triggered_by", None)
        return pages.RunInfo(
            run_id=run_id,
            triggered_by=str(getattr(triggered_by, "value", triggered_by)) if triggered_by else None,
            triggering_user=getattr(run, "triggering_user_name", None),
            run_type=str(getattr(run.run_type, "value", run.run_type)) if run.run_type else None,
            started_at=run.start_date,
            state=str(run.state) if run.state else None,
        )


def create_app() -> FastAPI:
    from airflow.api_fastapi.core_api.security import get_user

    # A default, not Annotated: this module's annotations are strings, and get_user is local.
    def reader(user: Any = Depends(get_user)) -> Any:  # noqa: B008 - FastAPI's dependency idiom
        return require_rollout_reader(user)

    app = FastAPI(
        title="mes-rollout: déploiement", dependencies=[Depends(reader)], docs_url=None, redoc_url=None,
        openapi_url=None,
    )  # fmt: skip

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{URL_PREFIX}/{pages.INDEX}", status_code=status.HTTP_303_SEE_OTHER)

    @app.get(f"/{pages.INDEX}", response_class=HTMLResponse)
    def rollout() -> HTMLResponse:
        with _connection() as connection:
            return _html(pages.rollout_page(connection, _settings()))

    @app.get("/run", response_class=HTMLResponse)
    def wave_of_run(dag_id: str, run_id: str) -> Response:
        """The Wave view of an enrolment_wave run (the UI's dag_run tab passes its ids)."""
        if dag_id != pages.WAVE_DAG_ID:
            return _html(pages.message_page(
                "Vue Vague", f"La vue Vague ne concerne que les runs du DAG {pages.WAVE_DAG_ID}."
            ))  # fmt: skip
        with _connection() as connection:
            wave_id = pages.wave_of_run(connection, run_id)
        if wave_id is None:
            return _html(pages.message_page(
                "Vue Vague", "Ce run n'a pas (encore) de vague dans les chiffres du déploiement : "
                "ils sont rafraîchis à la fin du résumé de la vague."
            ), code=404)  # fmt: skip
        return RedirectResponse(f"{URL_PREFIX}/waves/{wave_id}.html", status_code=status.HTTP_303_SEE_OTHER)

    @app.get("/waves/{name}", response_class=HTMLResponse)
    def wave(name: str) -> HTMLResponse:
        wave_id = name.removesuffix(".html")
        with _connection() as connection:
            row = pages.load_wave_row(connection, wave_id) if name.endswith(".html") else None
            page = (
                pages.wave_page(connection, _settings(), wave_id, run=_run_info(row["run_id"]))
                if row is not None else None
            )  # fmt: skip
        if page is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such wave")
        return _html(page)

    @app.get("/letters/{name}")
    def letter(name: str) -> Response:
        wave_id = name.removesuffix(".pdf")
        with _connection() as connection:
            row = pages.load_wave_row(connection, wave_id) if name.endswith(".pdf") else None
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such wave")
        pdf = pages.sample_letter_pdf(row["send_date"], _settings())
        return Response(pdf, media_type="application/pdf", headers=_NO_STORE)

    @app.get(f"/{pages.PLOTLY_SCRIPT}")
    def plotly_script() -> FileResponse:
        return FileResponse(pages.plotly_script(), media_type="text/javascript")

    @app.get(f"/{pages.CHARTS_SCRIPT}")
    def charts_script() -> FileResponse:
        return FileResponse(pages.charts_script(), media_type="text/javascript")

    @app.get("/reports/{relative:path}")
    def report(relative: str) -> FileResponse:
        """A file of MES_REPORTS_DIR, read-only; its HTML sandboxed (no script runs in Airflow's origin)."""
        path = pages.report_file(_settings().reports_dir, relative)
        if path is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such report file")
        return FileResponse(path, headers={**_NO_STORE, "Content-Security-Policy": "sandbox"})

    return app
