"""Driving the monitor page in a real browser: Debian's chromium through Playwright.

Playwright's own browser downloads are never used (``playwright install`` is not run): the
tests launch the system chromium (``make test`` installs it when missing). Where chromium or
Playwright is absent the browser tests skip, unless ``MANTA_REQUIRE_BROWSER=1`` (CI), where
they fail instead.

The page's Content-Security-Policy forbids evaluating strings, so conditions are polled
with ``page.evaluate`` (a function, which CSP allows) instead of ``wait_for_function``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("MANTA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def require_browser() -> None:
    """Skip (or fail, with ``MANTA_REQUIRE_BROWSER=1``) without chromium and Playwright."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium, or make browser)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (pip install -e '.[dev]')")
    if not missing:
        return
    reason = "browser test needs " + " and ".join(missing)
    if os.environ.get("MANTA_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (MANTA_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def artifact_dir(tmp_path: Path) -> Path:
    """Where screenshots go: ``$MANTA_TEST_ARTIFACTS`` if set, else the test's tmp_path."""
    folder = Path(os.environ.get("MANTA_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@asynccontextmanager
async def browser_page(width: int = 1400, height: int = 1300) -> AsyncIterator[Any]:
    """A page of a fresh headless chromium; page errors are collected in ``page.errors``."""
    require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text)
                    if msg.type == "error" and "Failed to load resource" not in msg.text
                    else None)
            page.errors = errors
            yield page
        finally:
            await browser.close()


async def monitor_state(page: Any) -> dict[str, Any]:
    """The page's ``window.__monitor`` (points, stage, pareto, connection…)."""
    state: dict[str, Any] = await page.evaluate("() => ({...(window.__monitor ?? {})})")
    return state


async def wait_page(page: Any, check: Any, timeout_s: float, label: str,
                    alive: Any = None) -> dict[str, Any]:
    """Poll ``window.__monitor`` until ``check(state)``; ``alive()`` may raise to fail fast."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = await monitor_state(page)
        if check(state):
            return state
        if alive is not None:
            alive()
        assert time.monotonic() < deadline, f"page never showed {label}; last state {state}"
        await asyncio.sleep(0.2)
