"""Benchmark: the miner daemon's cost on top of the work itself.

Two figures for one small classification task (tiny supernet, synthetic data, one slot):

- ``claim_latency_blocks``: blocks between the block holding ``TaskPosted`` and the block
  holding the daemon's ``TaskClaimed``, on anvil mining a block every second (target <= 1);
- ``overhead_ratio``: the marketplace run — post, claim, group formed, the training
  subprocess, search and export, manifest, signature, ``submitResult`` mined — divided by
  the bare run of the same spec: the same job runner (``python -m miner.daemon.jobrunner``,
  one interpreter start included in both) on a job folder, no chain, no daemon
  (target <= 1.05). Also reported: the settle time after the client's ``accept``.

Usage: python bench/daemon.py [--epochs 2] [--repeats 1]
Last line of output: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eth_account import Account  # noqa: E402

from miner.daemon.daemon import run_until_stopped  # noqa: E402
from miner.daemon.job import JobSupervisor  # noqa: E402
from miner.daemon.jobspec import JobFile  # noqa: E402
from miner.daemon.runtime import open_miner  # noqa: E402
from miner.daemon.settings import load_miner_settings  # noqa: E402
from miner.daemon.store import TaskPhase  # noqa: E402
from node.chain.market import TaskMarket  # noqa: E402
from node.chain.models import TaskParams  # noqa: E402
from node.devnet import Devnet, DevnetConfig  # noqa: E402
from node.documents.spec import (  # noqa: E402
    Constraint,
    DatasetRef,
    PhaseBudget,
    SearchSpaceSpec,
    TaskSpec,
    TrainingBudget,
)
from node.ports import free_port  # noqa: E402

# New blocks and receipts are looked for every 0.1 s (a tenth of a block); the periodic
# reconciliation runs at the daemon's own default (events and wake-ups drive the rest). Faster
# polling only burns a core the training subprocess shares.
POLL_S = 0.1
PERIODIC_S = 5.0
ARBITER = 9  # the devnet account named as the task's arbiter, the one the daemon trusts


def make_spec(epochs: int, seed: int) -> TaskSpec:
    return TaskSpec(
        kind="classification", dataset=DatasetRef(name="synthetic"), seed=seed,
        search_space=SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(3.0, 4.0),
                                     depths=(1, 2), resolutions=(20, 24, 28)),
        training=TrainingBudget(batch_size=64, phases=(
            PhaseBudget(name="full", epochs=epochs, lr=0.05),
            PhaseBudget(name="kernel", epochs=epochs, lr=0.02, subnets_per_step=2))),
        constraint=Constraint(max_flops=5_000_000))


def bare_run(spec: TaskSpec, folder: Path) -> float:
    """Seconds for the job runner alone on a one-member job of ``spec``."""
    account = Account.create()
    job_dir = folder / "bare"
    job_dir.mkdir(parents=True)
    job = JobFile(task_id=1, spec=spec, group=(account.address,), slot=0)
    (job_dir / "job.json").write_text(job.model_dump_json(), encoding="utf-8")
    started = time.perf_counter()
    with (job_dir / "training.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "miner.daemon.jobrunner", str(job_dir)],
                                stdin=subprocess.PIPE, stdout=log, stderr=log, cwd=ROOT)
        assert proc.stdin is not None
        proc.stdin.write(account.key.hex().encode() + b"\n")
        proc.stdin.flush()
        rc = proc.wait()
        proc.stdin.close()
    if rc != 0:
        raise SystemExit(f"bare run failed rc={rc}; see {job_dir / 'training.log'}")
    return time.perf_counter() - started


async def market_run(spec: TaskSpec, folder: Path) -> dict[str, float]:
    config = DevnetConfig(anvil_path=ROOT / "node_modules" / ".bin" / "anvil", block_time_s=1)
    devnet = await Devnet.start(config)
    try:
        deployment = folder / "deployment.json"
        devnet.deployment.save(deployment)
        settings = load_miner_settings(
            data_dir=str(folder / "miner"), chain={"deployment_file": str(deployment)},
            http={"port": free_port()}, indexer={"poll_interval_s": POLL_S},
            tx={"poll_interval_s": POLL_S},
            policy={"arbiters": [devnet.accounts[ARBITER].address]})
        account = devnet.accounts[1]
        client = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market,
                                         await devnet.sender(0))
        supervisor = JobSupervisor(settings.paths(), account)
        stop = asyncio.Event()
        async with open_miner(settings, account, supervisor.on_group_formed,
                              routes=supervisor.routes()) as services:
            await supervisor.start_standby()  # as `manta-miner run` does
            loop_task = asyncio.create_task(run_until_stopped(services.daemon, stop, PERIODIC_S))
            try:
                await asyncio.sleep(2.0)  # the daemon is up and following the chain
                (folder / "spec.json").write_bytes(spec.canonical())
                started = time.perf_counter()
                posted = await client.post_task(TaskParams(
                    reward_wei=10**17, bond_wei=10**15, slots=1, claim_window_s=600,
                    work_window_s=7200, review_window_s=600, arbitration_window_s=60,
                    arbiter=devnet.accounts[ARBITER].address, spec_hash=spec.spec_hash(),
                    validation_hash="0x" + "48" * 32), (folder / "spec.json").as_uri())
                task_id = posted.task_id
                formed_s = None
                result_file = settings.paths().task_dir(task_id) / "result.json"
                while True:
                    record = services.store.task(task_id)
                    if formed_s is None and record is not None and record.group:
                        formed_s = time.perf_counter() - started
                    if record is not None and record.phase in (TaskPhase.SUBMITTED,
                                                               TaskPhase.FAILED):
                        break
                    await asyncio.sleep(0.05)
                submitted_s = time.perf_counter() - started
                runner_done_s = result_file.stat().st_mtime - (time.time() - submitted_s)
                if record.phase is TaskPhase.FAILED:
                    raise SystemExit(f"task failed: {record.reason}")
                claimed = await client.get_task_claimed(task_id=task_id)
                latency = claimed[0].block_number - posted.receipt.block_number
                accept_at = time.perf_counter()
                await client.accept(task_id)
                while services.store.task(task_id).phase is not TaskPhase.WITHDRAWN:  # type: ignore[union-attr]
                    await asyncio.sleep(0.05)
                settle_s = time.perf_counter() - accept_at
            finally:
                stop.set()
                await loop_task
                await supervisor.close()
        return {"claim_latency_blocks": latency, "market_s": submitted_s,
                "post_to_formed_s": formed_s or 0.0,
                "runner_s": runner_done_s - (formed_s or 0.0),
                "runner_done_to_submitted_s": submitted_s - runner_done_s,
                "accept_to_withdrawn_s": settle_s}
    finally:
        await devnet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per phase (2 phases)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("MANTA_TORCH_THREADS", "1")
    bare, market = [], []
    latency = None
    for i in range(args.repeats):
        spec = make_spec(args.epochs, seed=i)
        with tempfile.TemporaryDirectory(prefix="manta-bench-daemon-") as tmp:
            bare.append(bare_run(spec, Path(tmp)))
            print(f"bare run {i}: {bare[-1]:.2f} s", flush=True)
            result = asyncio.run(market_run(spec, Path(tmp)))
            market.append(result["market_s"])
            latency = result["claim_latency_blocks"] if latency is None else max(
                latency, result["claim_latency_blocks"])
            print(f"market run {i}: {result}", flush=True)
    best_bare, best_market = min(bare), min(market)
    print(json.dumps({
        "claim_latency_blocks": latency, "overhead_ratio": round(best_market / best_bare, 4),
        "bare_s": round(best_bare, 3), "market_s": round(best_market, 3),
        "last_market_breakdown_s": {k: round(v, 3) for k, v in result.items()
                                    if k.endswith("_s")},
        "block_time_s": 1, "epochs_per_phase": args.epochs, "repeats": args.repeats,
    }))


if __name__ == "__main__":
    main()
