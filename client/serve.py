"""``manta data serve``: a read-only HTTP server for a folder of specs and packed datasets.

Only plain files directly inside the folder are served (no sub-folders, no dot files, no
path tricks), streamed with range support by aiohttp's ``FileResponse``. Miners check every
byte against the hash the spec or the chain gives them, so the server itself needs no auth.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

logger = logging.getLogger(__name__)

ROOT_KEY = web.AppKey("root", Path)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}")


async def _serve_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    root = request.app[ROOT_KEY]
    path = root / name
    if not _NAME.fullmatch(name) or not path.is_file():
        raise web.HTTPNotFound(text=f"no file {name!r}")
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


async def _index(request: web.Request) -> web.Response:
    root = request.app[ROOT_KEY]
    names = sorted(p.name for p in root.iterdir() if p.is_file() and _NAME.fullmatch(p.name))
    return web.json_response({"files": names})


def create_app(root: Path) -> web.Application:
    """The application serving ``root`` (``GET /`` lists the files as JSON)."""
    app = web.Application()
    app[ROOT_KEY] = root.resolve()
    app.router.add_get("/", _index)
    app.router.add_get("/{name}", _serve_file)
    return app


async def serve_folder(root: Path, host: str, port: int, stop: asyncio.Event,
                       on_ready: Callable[[str], None]) -> None:
    """Serve ``root`` on ``host:port`` (0 = a free port) until ``stop`` is set."""
    if not root.is_dir():
        from client.errors import ClientError

        raise ClientError(f"{root} is not a folder")

    def ready(bound: int) -> None:
        url = f"http://{host}:{bound}"
        logger.info("serving folder=%s url=%s", root, url)
        on_ready(url)

    await serve_app(create_app(root), host, port, stop, ready)


async def serve_app(app: web.Application, host: str, port: int, stop: asyncio.Event,
                    on_ready: Callable[[int], None]) -> None:
    """Run ``app`` on ``host:port`` until ``stop`` is set; ``on_ready`` gets the port bound
    (the one the OS picked when ``port`` is 0)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        on_ready(int(sockets[0].getsockname()[1]) if sockets else port)
        await stop.wait()
    finally:
        await runner.cleanup()
