"""What the monitor reads (pure): /proc and nvidia-smi parsing, CPU utilisation between two
samples, progress files with broken and partial lines, and thinning a long history."""

from __future__ import annotations

import json

from miner.daemon.monitor import parse_progress, thin_updates
from miner.daemon.rig import CpuTimes, cpu_percent, parse_meminfo, parse_nvidia_smi, parse_proc_stat

STAT = """cpu  100 5 50 800 20 0 5 0 0 0
cpu0 50 2 25 400 10 0 3 0 0 0
intr 12345
"""


def test_proc_stat_and_cpu_percent() -> None:
    before = parse_proc_stat(STAT)
    assert before == CpuTimes(idle=820, total=980)
    after = CpuTimes(idle=820 + 30, total=980 + 120)
    assert cpu_percent(before, after) == 75.0
    assert cpu_percent(after, after) is None  # no time passed
    assert cpu_percent(after, CpuTimes(idle=after.idle + 50, total=after.total + 10)) == 0.0
    assert parse_proc_stat("intr 1\n") is None


def test_meminfo_in_bytes() -> None:
    text = "MemTotal:       24576000 kB\nMemFree:  1000 kB\nMemAvailable:   12288000 kB\n"
    assert parse_meminfo(text) == {"MemTotal": 24576000 * 1024, "MemAvailable": 12288000 * 1024}
    assert parse_meminfo("") == {}


def test_nvidia_smi_rows() -> None:
    text = ("0, NVIDIA H100 80GB HBM3, 87, 40000, 81559\n"
            "1, NVIDIA H100 80GB HBM3, [N/A], [N/A], 81559\n"
            "garbage line\n")
    gpus = parse_nvidia_smi(text)
    assert len(gpus) == 2
    assert gpus[0] == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "utilization_percent": 87.0,
                       "memory_used_bytes": 40000 * 2**20, "memory_total_bytes": 81559 * 2**20}
    assert gpus[1]["utilization_percent"] is None and gpus[1]["memory_used_bytes"] is None


def line(update: dict[str, object]) -> bytes:
    return json.dumps(update).encode() + b"\n"


def test_progress_file_skips_broken_lines_and_the_partial_last_one() -> None:
    raw = (line({"phase": "training", "step": 1, "subnets": []}) + b"{not json\n"
           + line([1, 2]) + b"\n" + line({"phase": "searching"}) + b'{"phase": "do')
    assert parse_progress(raw) == [{"phase": "training", "step": 1, "subnets": []},
                                   {"phase": "searching"}]
    assert parse_progress(b"") == []


def test_thinning_keeps_phase_changes_and_the_last_step() -> None:
    updates: list[dict[str, object]] = [{"phase": "fetching"}]
    updates += [{"step": s, "subnets": [], "train_phase": "full"} for s in range(1, 101)]
    updates += [{"phase": "training", "step": 100, "val_accuracy": 0.5}, {"phase": "done"}]
    assert thin_updates(updates, 1000) == updates
    thin = thin_updates(updates, 10)
    steps = [u["step"] for u in thin if "subnets" in u]
    assert len(steps) <= 11 and steps[0] == 1 and steps[-1] == 100
    assert steps == sorted(steps)
    assert thin[0] == {"phase": "fetching"} and thin[-2:] == updates[-2:]
