"""The web page: static HTML + vanilla JS, served by the same app.

``/`` is the runs table (columns to pick, sorting, selection to compare),
``/runs/{id}`` a run (provenance summary, charts, checkpoints, structured
manifest, lineage graph with data sources, verification badge), ``/compare``
overlaid curves and a config/data/code diff of runs, ``/verify`` a file upload
checked against the chain, ``/datasets`` and ``/datasets/{cid}`` the datasets
runs trained on (where the index has them: the runs and models that used one,
its revocation). The pages read the JSON API from the browser, so
they show exactly what the API answers.

The one built asset is the chart library: ``make web-assets`` (run by ``make
setup``) copies chart.js from npm into ``web/vendor/``, which the wheel ships.
Without it the pages still work and show the numbers as tables. ``/docs`` is
Swagger UI from the ``swagger-ui-bundle`` package, served by this app too: no
page loads anything from another site, and no page runs inline script (the
Content-Security-Policy forbids both).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parent.parent / "web"
router = APIRouter(include_in_schema=False)


@router.get("/")
def index_page() -> FileResponse:
    return FileResponse(WEB / "index.html", media_type="text/html")


@router.get("/runs/{run_id}")
def run_page(run_id: str) -> FileResponse:
    return FileResponse(WEB / "run.html", media_type="text/html")


@router.get("/compare")
def compare_page() -> FileResponse:
    return FileResponse(WEB / "compare.html", media_type="text/html")


@router.get("/verify")
def verify_page() -> FileResponse:
    return FileResponse(WEB / "verify.html", media_type="text/html")


@router.get("/datasets")
def datasets_page() -> FileResponse:
    return FileResponse(WEB / "datasets.html", media_type="text/html")


@router.get("/datasets/{cid}")
def dataset_page(cid: str) -> FileResponse:
    return FileResponse(WEB / "dataset.html", media_type="text/html")


@router.get("/docs")
def docs_page() -> FileResponse:
    return FileResponse(WEB / "docs.html", media_type="text/html")


def mount_static(app: FastAPI) -> None:
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    app.mount("/static/swagger-ui", StaticFiles(directory=str(swagger_ui_path)), name="swagger")
    app.mount("/static", StaticFiles(directory=WEB), name="static")
