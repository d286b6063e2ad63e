"""Airflow plugin of mes-rollout: the Rollout page in the navigation and the Wave view on each run.

Wiring only: the app (its routes, their authentication and roles) is console.rollout_web, the
pages console.rollout_pages. Airflow finds this file through [core] plugins_folder.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from console.rollout_web import URL_PREFIX, create_app


class MesRolloutPlugin(AirflowPlugin):
    name = "mes_rollout_ui"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Déploiement Mon espace santé"}]
    external_views = [
        {
            "name": "Déploiement",
            "href": f"{URL_PREFIX}/index.html",
            "destination": "nav",
            "url_route": "deploiement",
        },
        {
            "name": "Vague",
            "href": f"{URL_PREFIX}/run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "vague",
        },
    ]
