"""``manta-node demo --quick`` as a real process: anvil, two miner daemons (with their
training subprocesses) and the ``manta`` client CLI run a task to SETTLED; the miners train
on a part of the set served by URL and the client verifies on the disjoint rest; the last
line is the summary JSON; nothing it started is left running, also after a Ctrl-C
mid-training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.anvil, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
MANTA_NODE = Path(sys.executable).parent / "manta-node"


def _needs_tools() -> None:
    if not (ROOT / "node_modules" / ".bin" / "anvil").exists():
        pytest.skip("anvil not installed (npm ci)")
    if not MANTA_NODE.exists():
        pytest.skip("console scripts not installed (pip install -e .)")


def _live_with(marker: str) -> list[str]:
    """Command lines of live (not zombie) processes that mention ``marker``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if state not in {"Z", "X"} and marker in cmdline and int(proc.name) != os.getpid():
            found.append(cmdline)
    return found


def _none_left(marker: str, timeout_s: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := _live_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _demo(folder: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(MANTA_NODE), "demo", "--quick", "--json", "--folder",
                             str(folder), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _summary_of_demo(folder: Path, *extra: str) -> dict[str, Any]:
    """Run the quick demo to the end; its last line, the summary JSON."""
    _needs_tools()
    process = _demo(folder, *extra)
    try:
        stdout, stderr = process.communicate(timeout=200)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return summary


def test_quick_demo_settles_and_leaves_nothing_running(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    summary = _summary_of_demo(folder)
    assert summary["state"] == "SETTLED"
    assert isinstance(summary["accuracy"], float) and 0.0 <= summary["accuracy"] <= 1.0
    assert 0 < summary["flops"] <= summary["max_flops"]
    assert summary["total_gas"] > 0 and summary["seconds"] > 0
    assert summary["verified"] is True and summary["front_size"] >= 1
    calls = summary["gas_by_call"]
    assert [len(calls[c]) for c in ("register", "postTask", "claim", "submitResult",
                                    "accept")] == [2, 1, 2, 1, 1]
    assert "withdraw" not in calls  # accept pushed the payouts
    # each miner got half the reward plus its bond back; the client paid the reward
    assert set(summary["paid_wei"].values()) == {15 * 10**16 + 2 * 10**16}
    before, after = summary["balances_before_wei"], summary["balances_after_wei"]
    assert before["client"] - after["client"] >= 3 * 10**17
    assert all(after[m] > before[m] for m in ("miner0", "miner1"))
    assert set(summary["miner_urls"]) >= {summary["leader"]}
    # the chosen network against the largest one, and where to watch the task
    assert summary["flops"] < summary["largest_flops"]
    assert 0.0 <= summary["largest_accuracy"] <= 1.0
    assert summary["monitor_url"] == (f"{summary['miner_urls'][summary['leader']]}"
                                      f"/?task={summary['task_id']}")
    # the miners trained on the URL part only; the client verified on the held-out rest
    # (disjoint by construction: the held-out fold i % 5 == 4 and all the other images)
    assert (summary["train_images"], summary["eval_images"]) == (1438, 359)
    assert summary["eval_set"] == "i % 5 == 4" and summary["metric"] == "accuracy"
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["dataset"]["url"] == summary["dataset_url"]
    assert spec["dataset"]["url"].startswith("http://127.0.0.1:") and "name" not in spec["dataset"]
    miner_copies = list(folder.glob("miner*/data/datasets/*"))
    assert len(miner_copies) == 2
    assert {p.name for p in miner_copies} == {spec["dataset"]["sha256"].removeprefix("0x")}
    assert _none_left(str(folder)) == []


def test_stereo_quick_demo_settles_with_epe_checked_on_the_clients_own_pairs(
        tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    summary = _summary_of_demo(folder, "--stereo")
    assert summary["state"] == "SETTLED" and summary["verified"] is True
    assert summary["metric"] == "epe" and summary["accuracy"] is None
    # EPE measured by the client on 64 pairs the miners never rendered (another seed), within
    # the verifier's tolerance of the miners' claim
    assert summary["eval_set"] == "procedural seed 1007" and summary["eval_images"] == 64
    assert 0.0 < summary["epe"] <= 1.25 * summary["claimed_epe"]
    assert summary["largest_epe"] > 0 and summary["front_size"] >= 1
    assert 0 < summary["flops"] <= summary["max_flops"] < summary["largest_flops"]
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["kind"] == "stereo" and spec["dataset"] == {"name": "procedural-stereo"}
    calls = summary["gas_by_call"]
    assert [len(calls[c]) for c in ("claim", "submitResult", "accept")] == [2, 1, 1]
    assert set(summary["paid_wei"].values()) == {15 * 10**16 + 2 * 10**16}
    assert _none_left(str(folder)) == []


def test_sigint_mid_training_stops_every_process(tmp_path: Path) -> None:
    _needs_tools()
    folder = tmp_path / "demo"
    process = _demo(folder)
    try:
        deadline = time.monotonic() + 90
        while not any(p.stat().st_size for p in folder.glob("**/tasks/*/progress.jsonl")):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        assert any("anvil" in c for c in _live_with(str(folder)))
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert _none_left(str(folder)) == []


@pytest.mark.parametrize("quick", [True, False])
def test_demo_spec_is_a_valid_scheme_1_task(quick: bool) -> None:
    from node.demo import demo_spec
    from node.documents.spec import parse_spec

    assert parse_spec(demo_spec(quick, 1)).dataset.name == ("digits" if quick else "animal-mnist")
    url = {"url": "http://127.0.0.1:1/train.npz", "sha256": "0x" + "ab" * 32}
    spec = parse_spec(demo_spec(quick, 4_000_000, url))
    assert spec.dataset.url == url["url"] and spec.dataset.name is None
    assert spec.distributed.scheme == "data_parallel" and spec.distributed.subnets_per_step == 4
    assert spec.constraint.max_flops == 4_000_000
    assert all(p.subnets_per_step == 4 for p in spec.training.phases if p.name != "full")


@pytest.mark.parametrize("quick", [True, False])
def test_stereo_demo_spec_is_valid_and_its_flops_limit_binds(quick: bool) -> None:
    from miner.automl.efficiency import flops_table
    from miner.automl.registry import supernet_config
    from miner.daemon import jobspec
    from node.demo.data import STEREO_MAX_FLOPS, stereo_demo_spec
    from node.documents.spec import parse_spec

    spec = parse_spec(stereo_demo_spec(quick, STEREO_MAX_FLOPS[quick]))
    jobspec.check_trainable(spec)
    assert spec.distributed.scheme == "data_parallel" and spec.distributed.subnets_per_step == 4
    config = supernet_config(spec.training.supernet, **jobspec.supernet_overrides(spec))
    table = flops_table(config)
    cheapest, largest = table.of(config.space.min_arch()), table.of(config.space.max_arch())
    assert cheapest < STEREO_MAX_FLOPS[quick] < largest
