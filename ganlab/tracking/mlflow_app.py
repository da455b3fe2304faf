"""The MLflow server app ganlab runs (``mlflow server --app-name ganlab``): MLflow's own, plus one page.

MLflow 3.17's UI chooses between its GenAI views and its model-training views from a browser-wide setting
(localStorage ``mlflow.workflowType_v1``, default GenAI: traces and token usage, empty for ganlab); a
``?workflowType=machine_learning`` link shows the runs, but the next click inside the UI falls back to that
setting. ``/ganlab/open`` sets it to model training on this server's origin, then opens the experiment (or
run) it is given, so every later click stays on runs; an experiment opens in ganlab's shared view (the
comparison's columns and charts, ganlab/tracking/schema.py ``comparison_view``). ganlab prints links to it.
"""

from __future__ import annotations

import json
import re

from fastapi.responses import HTMLResponse
from mlflow.server.fastapi_app import app
from starlette.routing import Route

from ganlab.tracking.schema import SHARED_VIEW_KEY, SHARED_VIEW_TAG

WORKFLOW_KEY = "mlflow.workflowType_v1"  # MLflow 3.17's useLocalStorage({key: "mlflow.workflowType", version: 1})

_PAGE = """<!doctype html><meta charset="utf-8"><title>ganlab: opening MLflow</title>
<p>Opening the MLflow UI on the runs&hellip; <a href="{target}">continue</a></p>
<script>
try {{ localStorage.setItem({key}, {value}); }} catch (e) {{}}
location.replace({target_js});
</script>"""


def _has_view(experiment_id: str) -> bool:
    """Whether the experiment carries ganlab's shared view (made by ganlab, not by hand or a plain MLflow)."""
    from mlflow.server.handlers import _get_tracking_store

    try:
        return SHARED_VIEW_TAG in _get_tracking_store().get_experiment(experiment_id).tags
    except Exception:  # no such experiment (the UI says so itself) or a store hiccup: the plain runs page
        return False


def _open(request) -> HTMLResponse:
    experiment = request.query_params.get("experiment", "")
    run = request.query_params.get("run", "")
    if not re.fullmatch(r"[0-9A-Za-z]*", experiment + run):  # ids only: nothing else reaches the page
        return HTMLResponse("bad experiment or run id", status_code=400)
    path = "#/experiments" + (f"/{experiment}" if experiment else "") + (f"/runs/{run}" if run and experiment else "")
    query = "workflowType=machine_learning"
    if experiment and not run and _has_view(experiment):  # the runs page in ganlab's shared view
        path, query = f"{path}/runs", f"viewStateShareKey={SHARED_VIEW_KEY}&{query}"
    target = f"../{path}?{query}"  # from /ganlab/open to the UI at /
    return HTMLResponse(_PAGE.format(target=target, key=json.dumps(WORKFLOW_KEY),
                                     value=json.dumps(json.dumps("machine_learning")), target_js=json.dumps(target)))


# before MLflow's catch-all mount of its Flask app at "/", or that would answer first
app.router.routes.insert(0, Route("/ganlab/open", _open))
