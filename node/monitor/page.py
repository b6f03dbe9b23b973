"""The monitor page and its assets, served from the package folder ``static/``.

The page is plain HTML, CSS and ES modules, with no build step. Its one library, uPlot, is an
npm package: ``make setup`` copies its distribution files into ``static/vendor/`` (git-ignored),
so nothing is fetched from a CDN or at run time. Where they are missing (a checkout that
skipped the setup), the page answers ``503`` saying how to fix it, instead of a page with
broken charts. A Content-Security-Policy of ``'self'`` makes the browser itself refuse
anything from elsewhere.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

from aiohttp import web

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: What ``make setup`` copies from ``node_modules/uplot/dist`` into ``static/vendor``.
VENDOR_FILES = ("uPlot.esm.js", "uPlot.min.css")
FIX = "run `make setup` (it copies uPlot from node_modules into {folder})"

_ASSET = re.compile(r"(?:vendor/)?[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html",
          ".svg": "image/svg+xml", ".txt": "text/plain"}
_CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def missing_assets(static_dir: Path) -> list[str]:
    """The vendored files that are not there (empty when the page can be served)."""
    return [name for name in VENDOR_FILES if not (static_dir / "vendor" / name).is_file()]


def _missing_page(missing: list[str], folder: Path) -> str:
    fix = html.escape(FIX.format(folder=folder / "vendor"))
    names = ", ".join(html.escape(name) for name in missing)
    return (
        "<!doctype html><meta charset=utf-8><title>MANTA monitor: setup needed</title>"
        "<body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
        "<h1>The monitor page is not set up</h1>"
        f"<p>Its chart library is missing ({names}).</p><p>To fix it, {fix}.</p></body>")


class MonitorPage:
    """``GET /`` and ``GET /static/{path}`` for a server that answers the monitor API."""

    def __init__(self, static_dir: Path = STATIC_DIR) -> None:
        self.static_dir = static_dir

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/", self.index), web.get("/static/{path:.+}", self.asset)]

    def _refuse_if_unset(self, as_html: bool) -> None:
        missing = missing_assets(self.static_dir)
        if not missing:
            return
        logger.warning("monitor assets missing files=%s", ",".join(missing))
        if as_html:
            raise web.HTTPServiceUnavailable(text=_missing_page(missing, self.static_dir),
                                             content_type="text/html")
        raise web.HTTPServiceUnavailable(
            text=f"monitor assets missing ({', '.join(missing)}): "
                 f"{FIX.format(folder=self.static_dir / 'vendor')}")

    async def index(self, request: web.Request) -> web.StreamResponse:
        self._refuse_if_unset(as_html=True)
        return self._file(self.static_dir / "index.html")

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["path"]
        if not _ASSET.fullmatch(name):
            raise web.HTTPNotFound(text=f"no asset {name!r}")
        path = self.static_dir / name
        if not path.is_file():
            if name.removeprefix("vendor/") in VENDOR_FILES:
                self._refuse_if_unset(as_html=False)
            raise web.HTTPNotFound(text=f"no asset {name!r}")
        return self._file(path)

    @staticmethod
    def _file(path: Path) -> web.FileResponse:
        content_type = _TYPES.get(path.suffix, "application/octet-stream")
        return web.FileResponse(path, headers={
            "Content-Type": f"{content_type}; charset=utf-8" if content_type.startswith("text")
            else content_type,
            "Cache-Control": "no-cache", "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff"})
