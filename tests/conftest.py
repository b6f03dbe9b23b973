"""Test-session rules shared by every level: the ``gpu`` marker skips where CUDA is absent,
and ``devnet`` gives a module a real anvil with the contracts deployed."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from node.devnet import Devnet, DevnetConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def devnet() -> AsyncIterator[Devnet]:
    """anvil + TaskMarket + test token for the whole module; skipped without ``npm ci``."""
    config = DevnetConfig(anvil_path=ROOT / "node_modules" / ".bin" / "anvil")
    if not config.anvil_path.exists():
        pytest.skip("anvil not installed (npm ci)")
    net = await Devnet.start(config)
    try:
        yield net
    finally:
        await net.stop()


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("gpu" in item.keywords for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
