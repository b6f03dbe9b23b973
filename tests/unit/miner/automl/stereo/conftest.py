"""One torch thread for the stereo tests: the suite runs beside other work on few cores,
and these small networks are dominated by per-op overhead that extra threads only slow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
