"""A member killed mid-training rejoins its group: two ``manta-miner run`` processes on anvil
claim a 2-slot task and train together; the member's whole process group (daemon and
training runner) is SIGKILLed, the leader drops it after a round timeout and trains on
alone; the member's daemon is started again on the same data folder, its runner resumes
from its last checkpoint (behind the leader), asks to rejoin, gets the group's state from
the leader and trains the rest in lockstep with it. The task then settles once, with one
claim each, one submission and exact balances, and both members end with the same weights.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from miner.automl.checkpoint import CheckpointStore, load_checkpoint
from miner.automl.runs import read_run_config
from miner.daemon.result import equal_shares
from node.chain.market import TaskMarket
from node.chain.models import ZERO_ADDRESS, TaskParams, TaskState
from node.devnet import Devnet
from node.documents.spec import (
    Constraint,
    DatasetRef,
    DistributedSpec,
    PhaseBudget,
    SearchSpaceSpec,
    TaskSpec,
    TrainingBudget,
)
from node.ports import free_port
from tests.integration.daemon.support import ARBITER, gas_spent_wei

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(240), pytest.mark.usefixtures("watchdog"),
              pytest.mark.asyncio(loop_scope="module")]
REWARD, BOND = 10**17 + 1, 10**15
ROUND_TIMEOUT_S = 4.0  # the leader drops a silent member after one such round
EPOCHS = 20  # ~7 steps an epoch: the leader must still be training when the member is back
KILL_AT_STEP = 7  # past the first checkpoint (every 5 steps): the restart resumes behind
WAIT_S = 120.0


def spec() -> TaskSpec:
    return TaskSpec(
        kind="classification", dataset=DatasetRef(name="synthetic"), seed=5,
        search_space=SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(3.0, 4.0),
                                     depths=(1, 2), resolutions=(20, 24)),
        training=TrainingBudget(batch_size=64, phases=(
            PhaseBudget(name="full", epochs=EPOCHS, lr=0.05),)),
        distributed=DistributedSpec(round_timeout_s=ROUND_TIMEOUT_S),
        constraint=Constraint(max_flops=5_000_000))


def spawn(miner: Any) -> subprocess.Popen[bytes]:
    """``manta-miner run`` in a session of its own, so that one ``killpg`` takes the daemon
    and its training runner together (a machine that loses power). Otherwise as
    ``MinerProcess.spawn``, whose command and password variable it reuses."""
    helpers = sys.modules[type(miner).__module__]
    env = {**os.environ, helpers.PASSWORD_ENV: miner.password, "MANTA_TORCH_THREADS": "1"}
    with miner.log_file.open("ab") as log:
        return subprocess.Popen([sys.executable, "-c", helpers.RUN, "--config",
                                 str(miner.config), "run"], cwd=helpers.ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process's whole group and reap the daemon (no-op when it is gone)."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@contextmanager
def running(processes: list[subprocess.Popen[bytes]], procs: SimpleNamespace) -> Iterator[None]:
    """On the way out: stop every daemon still running, then kill what its group left."""
    try:
        yield
    finally:
        for process in processes:
            procs.stop(process)
            kill_group(process)


def progress(miner: Any, task_id: int) -> list[dict[str, Any]]:
    path = miner.task_dir(task_id) / "progress.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def trained(miner: Any, task_id: int) -> list[dict[str, Any]]:
    return [x for x in progress(miner, task_id) if "total_steps" in x]


def role_of(miner: Any, task_id: int) -> str | None:
    rows = miner.query("SELECT role FROM tasks WHERE task_id = ?", (task_id,))
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def trained_parameters(job_dir: Path) -> dict[str, torch.Tensor]:
    """The learnable weights of a job's newest checkpoint (BN statistics are per shard)."""
    run = job_dir / "run"
    config = read_run_config(run / "train_config.json")
    latest = CheckpointStore(run / "checkpoints").latest()
    assert latest is not None
    model = load_checkpoint(latest, config.config_hash())["model"]
    return {k: v for k, v in model.items() if "running_" not in k and "num_batches" not in k}


async def wait_for(what: Callable[[], bool], daemons: list[tuple[Any, Any]], label: str,
                   timeout_s: float = WAIT_S) -> None:
    """Poll ``what``; fail with the daemons' and runners' logs when it takes too long or a
    daemon exits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not what():
        for miner, process in daemons:
            if process.poll() is not None:
                raise AssertionError(f"daemon exited rc={process.returncode} before {label}\n"
                                     + miner.log())
        if loop.time() > deadline:
            logs = "\n".join(miner.log() for miner, _ in daemons)
            raise AssertionError(f"{label} not reached in {timeout_s} s\n{logs}")
        await asyncio.sleep(0.1)


async def test_killed_member_rejoins_and_the_task_settles(
        devnet: Devnet, miner_process: Any, processes: SimpleNamespace, tmp_path: Path) -> None:
    market_address = devnet.deployment.task_market
    client = await TaskMarket.create(devnet.rpc, market_address, await devnet.sender(0))
    miners, addresses = [], []
    for i in (1, 2):
        port = free_port()
        miners.append(miner_process.create(tmp_path / f"m{i}", devnet.deployment,
                                           bytes(devnet.accounts[i].key), port,
                                           arbiters=[devnet.accounts[ARBITER].address]))
        addresses.append(devnet.accounts[i].address)
        as_miner = await TaskMarket.create(devnet.rpc, market_address, await devnet.sender(i))
        await as_miner.register(f"http://127.0.0.1:{port}")  # what `run` would register
    wallets = [await devnet.rpc.get_balance(a) for a in addresses]
    escrow_before = await devnet.rpc.get_balance(market_address)
    first_block = await devnet.rpc.block_number() + 1
    task_spec = spec()
    (tmp_path / "spec.json").write_bytes(task_spec.canonical())
    posted = await client.post_task(TaskParams(
        reward_wei=REWARD, bond_wei=BOND, slots=2, claim_window_s=600, work_window_s=7200,
        review_window_s=600, arbitration_window_s=60, arbiter=devnet.accounts[ARBITER].address,
        spec_hash=task_spec.spec_hash(), validation_hash="0x" + "5e" * 32),
        (tmp_path / "spec.json").as_uri())
    task_id = posted.task_id

    # the member is the one whose address sorts first: once taken back it is the first of
    # the live set, the coordinator of the next rounds, while round r's coordinator (the
    # leader) sends it the state. Its daemon starts once the leader's claim is mined.
    member, leader = sorted(miners, key=lambda m: addresses[miners.index(m)])
    member_address, leader_address = (addresses[miners.index(m)] for m in (member, leader))
    leader_proc = spawn(leader)
    started = [leader_proc]
    with running(started, processes):
        await wait_for(lambda: ("claim", "mined") in leader.txs(task_id),
                       [(leader, leader_proc)], "leader claimed")
        member_proc = spawn(member)
        started.append(member_proc)
        pairs = [(leader, leader_proc), (member, member_proc)]
        await wait_for(lambda: all(role_of(m, task_id) for m in miners), pairs, "group formed")
        assert (role_of(leader, task_id), role_of(member, task_id)) == ("leader", "member")

        # train together, then kill the member (daemon and runner) past its first checkpoint
        await wait_for(lambda: any(x["step"] >= KILL_AT_STEP for x in trained(member, task_id)),
                       pairs, f"member at step {KILL_AT_STEP}")
        kill_group(member_proc)
        killed_at = max(x["step"] for x in trained(member, task_id))
        together = trained(leader, task_id)
        assert together and sorted(together[-1]["peers"]) == sorted(addresses)
        saved = CheckpointStore(member.task_dir(task_id) / "run" / "checkpoints").steps()
        assert saved
        checkpoint_step = saved[-1]

        # the leader misses the member's parts for a round, drops it and trains alone
        def dropped() -> bool:
            lines = trained(leader, task_id)
            return bool(lines) and lines[-1]["peers"] == [leader_address] \
                and lines[-1]["dropped_rounds"].get(member_address, 0) >= 1

        await wait_for(dropped, [(leader, leader_proc)], "member dropped")
        dropped_at = trained(leader, task_id)[-1]["step"]
        assert not (leader.task_dir(task_id) / "export").exists(), "the leader finished alone"

        # the member's daemon comes back on the same data folder; its runner rejoins
        member_log_size = len(member.log(10**7))
        member_proc = spawn(member)
        started.append(member_proc)
        pairs = [(leader, leader_proc), (member, member_proc)]
        await wait_for(lambda: leader.phase(task_id) == "submitted", pairs, "submitted")
        assert await client.state_of(task_id) is TaskState.SUBMITTED
        await client.accept(task_id)
        await wait_for(lambda: all(m.phase(task_id) == "withdrawn" for m in miners), pairs,
                       "withdrawn", 60)
        for process in (leader_proc, member_proc):
            assert processes.stop(process) == 0
    assert "training started task=" in member.log(10**7)[member_log_size:]

    # the member's runner resumed from its checkpoint, behind, and was taken back into the
    # exchange at the leader's step: its progress jumps over the steps the leader took alone
    runner_log = (member.task_dir(task_id) / "training.log").read_text(errors="replace")
    joined = re.findall(r"rejoined the group step=(\d+) from_step=(\d+)", runner_log)
    assert len(joined) == 1, runner_log[-3000:]
    group_step, from_step = (int(x) for x in joined[0])
    assert from_step == checkpoint_step < killed_at
    mine = trained(member, task_id)
    steps = [x["step"] for x in mine]
    assert steps[:killed_at] == list(range(1, killed_at + 1))
    after = steps[killed_at:]
    assert after == list(range(group_step + 1, mine[0]["total_steps"] + 1))
    assert group_step >= dropped_at  # it skipped the steps the leader trained alone
    assert all(sorted(x["peers"]) == sorted(addresses) for x in mine)
    # the leader: together, alone for a while, then together again to the end
    lines = trained(leader, task_id)
    assert [x["step"] for x in lines] == list(range(1, lines[0]["total_steps"] + 1))
    alone = [x["step"] for x in lines if x["peers"] == [leader_address]]
    assert alone and alone[0] <= killed_at + 2
    assert alone == list(range(alone[0], group_step + 1))
    assert all(sorted(x["peers"]) == sorted(addresses) for x in lines if x["step"] not in alone)
    # the rejoined member loaded the group's weights: both end with the same parameters
    ours = trained_parameters(leader.task_dir(task_id))
    theirs = trained_parameters(member.task_dir(task_id))
    assert ours.keys() == theirs.keys() and ours
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

    # on chain and in the stores: one claim each, one submission, settled, paid once (inside
    # the accept: no withdraw transaction)
    view = await client.get_task(task_id)
    assert view.state is TaskState.SETTLED and view.miners_paid and view.closed
    assert view.signed_slots == 0b11  # the rejoined member signed too
    assert len(await client.get_task_claimed(task_id=task_id)) == 2
    assert len(await client.get_result_submitted(task_id=task_id)) == 1
    assert [(p, s) for p, s in leader.txs(task_id)] == [("claim", "mined"), ("submit", "mined")]
    assert [(p, s) for p, s in member.txs(task_id)] == [("claim", "mined")]
    last_block = await devnet.rpc.block_number()
    group = await client.members_of(task_id)
    shares = dict(zip(group, equal_shares(REWARD, len(group)), strict=True))
    for address, before in zip(addresses, wallets, strict=True):
        sent, gas_wei = await gas_spent_wei(devnet.rpc, address, first_block, last_block)
        assert sent == (2 if address == leader_address else 1)  # claim, (submit)
        # share + bond back - bond - gas
        assert await devnet.rpc.get_balance(address) - before == shares[address] - gas_wei
        assert await client.credit_of(address, ZERO_ADDRESS) == 0
    assert await devnet.rpc.get_balance(market_address) == escrow_before
