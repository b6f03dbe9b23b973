"""The rig's load for the monitor page: CPU utilisation, memory, load average, GPUs.

Linux only, read without torch: CPU time from ``/proc/stat`` (utilisation is the share of
non-idle time between two samples), memory from ``/proc/meminfo``, the load average from
``/proc/loadavg``, GPUs from ``nvidia-smi --query-gpu`` when it is installed (with a timeout;
nothing is reported when it is absent or fails). The parsers are pure; :class:`RigSampler`
keeps the previous CPU sample and caches a reading for ``min_interval_s``, so any number of
pages polling it cost one read per interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

NVIDIA_SMI_TIMEOUT_S = 3.0
GPU_FIELDS = ("index", "name", "utilization.gpu", "memory.used", "memory.total")


@dataclass(frozen=True)
class CpuTimes:
    idle: int
    total: int


def parse_proc_stat(text: str) -> CpuTimes | None:
    """Aggregate CPU times (jiffies) from ``/proc/stat``; idle includes iowait (pure)."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            return CpuTimes(idle=idle, total=sum(values[:8]))
    return None


def cpu_percent(before: CpuTimes, after: CpuTimes) -> float | None:
    """Busy share of the time between two samples, in percent (pure)."""
    total = after.total - before.total
    if total <= 0:
        return None
    busy = total - (after.idle - before.idle)
    return round(100.0 * min(max(busy / total, 0.0), 1.0), 1)


def parse_meminfo(text: str) -> dict[str, int]:
    """``MemTotal`` and ``MemAvailable`` in bytes from ``/proc/meminfo`` (pure)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            number, *unit = rest.split()
            out[key] = int(number) * (1024 if unit and unit[0] == "kB" else 1)
    return out


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """GPUs from ``nvidia-smi --query-gpu=<GPU_FIELDS> --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(GPU_FIELDS):
            continue

        def number(cell: str) -> float | None:
            try:
                return float(cell)
            except ValueError:  # "[N/A]" on some boards
                return None

        used, total = number(cells[3]), number(cells[4])
        gpus.append({
            "index": int(cells[0]) if cells[0].isdigit() else len(gpus), "name": cells[1],
            "utilization_percent": number(cells[2]),
            "memory_used_bytes": int(used * 2**20) if used is not None else None,
            "memory_total_bytes": int(total * 2**20) if total is not None else None})
    return gpus


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""


class RigSampler:
    """One reading of the rig at a time (see the module docstring)."""

    def __init__(self, proc: Path = Path("/proc"), nvidia_smi: str | None = None,
                 min_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._proc = proc
        self._nvidia_smi = nvidia_smi if nvidia_smi is not None else shutil.which("nvidia-smi")
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._cpu: CpuTimes | None = None
        self._last: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def sample(self) -> dict[str, Any]:
        """The rig now (or the reading of less than ``min_interval_s`` ago)."""
        async with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < self._min_interval_s:
                return self._last[1]
            reading = await asyncio.to_thread(self._read_proc)
            reading["gpus"] = await self._gpus()
            self._last = (now, reading)
            return reading

    def _read_proc(self) -> dict[str, Any]:
        cpu = parse_proc_stat(_read(self._proc / "stat"))
        if self._cpu is None and cpu is not None:  # the first reading needs a baseline
            time.sleep(0.1)
            self._cpu, cpu = cpu, parse_proc_stat(_read(self._proc / "stat"))
        percent = cpu_percent(self._cpu, cpu) if self._cpu and cpu else None
        self._cpu = cpu or self._cpu
        memory = parse_meminfo(_read(self._proc / "meminfo"))
        load = _read(self._proc / "loadavg").split()[:3]
        return {"cpu_percent": percent, "cpus": os.cpu_count(),
                "load_avg": [float(x) for x in load] if len(load) == 3 else None,
                "memory_total_bytes": memory.get("MemTotal"),
                "memory_available_bytes": memory.get("MemAvailable")}

    async def _gpus(self) -> list[dict[str, Any]]:
        if not self._nvidia_smi:
            return []
        try:
            proc = await asyncio.create_subprocess_exec(
                self._nvidia_smi, f"--query-gpu={','.join(GPU_FIELDS)}",
                "--format=csv,noheader,nounits", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL)
        except OSError as exc:
            logger.info("nvidia-smi not usable error=%s", exc)
            self._nvidia_smi = None
            return []
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), NVIDIA_SMI_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            logger.warning("nvidia-smi timed out after %.0f s", NVIDIA_SMI_TIMEOUT_S)
            return []
        return parse_nvidia_smi(out.decode(errors="replace")) if proc.returncode == 0 else []
