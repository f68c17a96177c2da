"""The dashboard: one HTML page, a small script and a style sheet, and plotly.js served from the
plotly package, so it works with no network beyond this API."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from fabcity.core.errors import NotFound

router = APIRouter(include_in_schema=False)

HERE = Path(__file__).with_name("static")
ASSETS = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "lab.js": "text/javascript",
    "lab.css": "text/css",
    "explain.js": "text/javascript",
}
# The page and its script change with a release, plotly.js only with the plotly package.
FRESH = {"Cache-Control": "no-cache"}
LASTING = {"Cache-Control": "public, max-age=86400"}


def plotly_js() -> Path:
    """plotly.min.js inside the installed plotly wheel, found without importing plotly."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("plotly is not installed; `pip install plotly` serves the charts")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


@router.get("/")
def index() -> FileResponse:
    return FileResponse(HERE / "index.html", media_type="text/html", headers=FRESH)


@router.get("/lab")
def lab() -> FileResponse:
    """A lab's page: log a job, a repair, waste or a delivery, or upload a spreadsheet."""
    return FileResponse(HERE / "lab.html", media_type="text/html", headers=FRESH)


@router.get("/explain")
def explain() -> FileResponse:
    """What each metric means: one page, an anchor per metric (`/explain#fci`)."""
    return FileResponse(HERE / "explain.html", media_type="text/html", headers=FRESH)


@router.get("/dashboard/{name}")
def asset(name: str) -> FileResponse:
    if name == "plotly.min.js":
        path = plotly_js()
        if not path.is_file():
            raise NotFound(f"{path} is missing; reinstall plotly")
        return FileResponse(path, media_type="text/javascript", headers=LASTING)
    if name not in ASSETS:
        raise NotFound(f"no dashboard file {name!r}")
    return FileResponse(HERE / name, media_type=ASSETS[name], headers=FRESH)
