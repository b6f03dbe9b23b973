"""Two daemons (``open_miner`` wiring, real HTTP servers) take a task from TaskPosted to
money in their wallets on anvil, with the training replaced by a published manifest: claim,
group, manifest served by the leader, checked, downloaded and signed by the member,
submitted, finalized after a silent review window (the payouts pushed inside ``finalize``),
settled, ``withdrawn`` (the daemon's last phase; no withdraw transaction is needed) — each
transaction once."""

from __future__ import annotations

import asyncio
import hashlib
import json
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from miner.daemon.daemon import run_until_stopped
from miner.daemon.result import equal_shares
from miner.daemon.runtime import MinerServices, open_miner
from miner.daemon.settings import load_miner_settings
from miner.daemon.store import TaskPhase, TxStatus
from node.chain.market import TaskMarket
from node.chain.models import TaskParams, TaskState
from node.devnet import Devnet
from node.documents.manifest import Metrics, ResultManifest
from node.documents.spec import Constraint, DatasetRef, SearchSpaceSpec, TaskSpec
from node.ports import free_port
from tests.daemon_support import phase, until
from tests.integration.daemon.support import ARBITER, Wallets, trusted_policy, warp

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(120), pytest.mark.usefixtures("watchdog"),
              pytest.mark.asyncio(loop_scope="module")]
ROOT = Path(__file__).resolve().parents[3]
REWARD, BOND = 10**17 + 1, 2 * 10**15  # an odd reward: the leader gets the extra wei


def sha(data: bytes) -> str:
    return "0x" + hashlib.sha256(data).hexdigest()


async def test_two_daemons_from_post_to_withdrawn(devnet: Devnet, tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.json"
    devnet.deployment.save(deployment)
    stop = asyncio.Event()
    market = devnet.deployment.task_market
    client = await TaskMarket.create(devnet.rpc, market, await devnet.sender(0))
    wallets = await Wallets.snapshot(devnet.rpc, client.sender.address, market,
                                     *(devnet.accounts[i].address for i in (5, 6)))
    async with AsyncExitStack() as stack:
        miners: list[MinerServices] = []
        for index in (5, 6):
            settings = load_miner_settings(
                data_dir=str(tmp_path / f"m{index}"), chain={"deployment_file": str(deployment)},
                http={"port": free_port()}, indexer={"poll_interval_s": 0.05},
                tx={"poll_interval_s": 0.05}, capacity={"max_concurrent_tasks": 4},
                policy=trusted_policy(devnet))
            miners.append(await stack.enter_async_context(
                open_miner(settings, devnet.accounts[index])))
        loops = [asyncio.create_task(run_until_stopped(m.daemon, stop, 0.1)) for m in miners]
        try:
            spec = TaskSpec(kind="classification", dataset=DatasetRef(name="digits"),
                            search_space=SearchSpaceSpec(resolutions=(32,)),
                            constraint=Constraint(max_flops=10**7))
            (tmp_path / "spec.json").write_bytes(spec.canonical())
            posted = await client.post_task(TaskParams(
                reward_wei=REWARD, bond_wei=BOND, slots=2, claim_window_s=600,
                work_window_s=7200, review_window_s=60, arbitration_window_s=60,
                arbiter=devnet.accounts[ARBITER].address, spec_hash=spec.spec_hash(),
                validation_hash="0x" + "44" * 32), (tmp_path / "spec.json").as_uri())
            task_id = posted.task_id
            await until(lambda: all(phase(m.store, task_id) is TaskPhase.FORMED for m in miners))
            roles = {m.store.task(task_id).role: m for m in miners}  # type: ignore[union-attr]
            leader, member = roles["leader"], roles["member"]
            group = await client.members_of(task_id)
            assert group == [leader.conn.address, member.conn.address]

            weights, arch = b"\x00weights" * 1000, json.dumps({"ks": [3, 5]}).encode()
            leader.artifacts.put_bytes(weights, sha(weights), task_id)
            leader.artifacts.put_bytes(arch, sha(arch), task_id)
            manifest = ResultManifest(
                task_id=task_id, spec_hash=spec.spec_hash(), arch={"ks": [3, 5]},
                weights_sha256=sha(weights), arch_json_sha256=sha(arch),
                metrics=Metrics(accuracy=0.5, flops=1000, params=100), pareto_front=(),
                training_log_sha256=sha(b"log"), group=tuple(group),
                shares_wei=equal_shares(REWARD, 2))
            root = await leader.daemon.publish_result(task_id, manifest)
            await until(lambda: all(phase(m.store, task_id) is TaskPhase.SUBMITTED for m in miners))
            view = await client.get_task(task_id)
            assert "0x" + view.result_root.hex() == root
            assert member.artifacts.path_of(sha(weights)) is not None  # the member serves it too

            await warp(devnet.rpc, 61)  # the client stays silent past the review window
            await until(lambda: all(phase(m.store, task_id) is TaskPhase.WITHDRAWN for m in miners))
        finally:
            stop.set()
            await asyncio.gather(*loops)
        # every member signed: each was paid its share and its bond inside finalize
        view = await client.get_task(task_id)
        assert view.state is TaskState.SETTLED and view.miners_paid and view.closed
        assert view.signed_slots == 0b11
        shares = equal_shares(REWARD, 2)
        assert shares[0] == shares[1] + 1  # the odd wei goes to slot 0, the leader
        for miner, share in zip((leader, member), shares, strict=True):
            gained, _ = await wallets.change(miner.conn.address)
            assert gained == share  # bond out at claim and back at finalize, share in
            assert await client.credit_of(miner.conn.address) == 0
            assert "withdraw" not in [t.purpose for t in miner.store.txs(task_id)]
            # one finalize got in; the other daemon's (if any) found the task settled
            assert [t.status for t in miner.store.txs(task_id, "finalize")] in (
                [], [TxStatus.MINED], [TxStatus.FAILED])
        finalizes = [t.status for m in miners for t in m.store.txs(task_id, "finalize")]
        assert finalizes.count(TxStatus.MINED) == 1
        assert (await wallets.change(client.sender.address))[0] == -REWARD
        assert (await wallets.change(market))[0] == 0  # nothing left in escrow
        submits = [(t.purpose, t.status) for t in leader.store.txs(task_id)]
        assert submits.count(("submit", TxStatus.MINED)) == 1
        assert [t.purpose for t in member.store.txs(task_id, "submit")] == []
        rep = await client.reputation_of(member.conn.address)
        assert (rep.completed, rep.earned_wei, rep.distinct_clients) == (1, shares[1], 1)


async def test_submit_recovery_never_submits_twice(devnet: Devnet, tmp_path: Path) -> None:
    """A leader alone (one slot): (a) killed between intent and send — the submit is sent
    on the next poll; (b) killed after its submit was mined — nothing is sent again."""
    deployment = tmp_path / "deployment.json"
    devnet.deployment.save(deployment)
    client = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market,
                                     await devnet.sender(0))
    spec = TaskSpec(kind="classification", dataset=DatasetRef(name="digits"),
                    search_space=SearchSpaceSpec(resolutions=(32,)),
                    constraint=Constraint(max_flops=10**7))
    (tmp_path / "spec.json").write_bytes(spec.canonical())
    settings = load_miner_settings(
        data_dir=str(tmp_path / "m"), chain={"deployment_file": str(deployment)},
        http={"port": free_port()}, indexer={"poll_interval_s": 0.05},
        tx={"poll_interval_s": 0.05}, capacity={"max_concurrent_tasks": 4},
        policy=trusted_policy(devnet))
    account = devnet.accounts[7]
    async with open_miner(settings, account) as miner:
        await miner.daemon.start()
        try:
            tasks = []
            for _ in range(2):
                posted = await client.post_task(TaskParams(
                    reward_wei=REWARD, bond_wei=BOND, slots=1, claim_window_s=600,
                    work_window_s=7200, review_window_s=60, arbitration_window_s=60,
                    arbiter=devnet.accounts[ARBITER].address, spec_hash=spec.spec_hash(),
                    validation_hash="0x" + "45" * 32), (tmp_path / "spec.json").as_uri())
                tasks.append(posted.task_id)
            await until(lambda: all(phase(miner.store, t) is TaskPhase.FORMED for t in tasks))
            blob = b"w" * 100
            miner.artifacts.put_bytes(blob, sha(blob))
            roots = []
            for task_id in tasks:
                roots.append(await miner.daemon.publish_result(task_id, ResultManifest(
                    task_id=task_id, spec_hash=spec.spec_hash(), arch={}, weights_sha256=sha(blob),
                    arch_json_sha256=sha(blob), metrics=Metrics(accuracy=0.1, flops=1, params=1),
                    pareto_front=(), training_log_sha256=sha(b""), group=(account.address,),
                    shares_wei=(REWARD,))))
            a, b = tasks
            # (a) the intent was written, then the daemon died before sending
            miner.store.set_phase(a, TaskPhase.SUBMITTING)
            miner.store.begin_tx("submit", a)
            # (b) the submit was mined, then the daemon died before recording it
            miner.store.set_phase(b, TaskPhase.SUBMITTING)
            miner.store.begin_tx("submit", b)
            # alone in its group, the sender's own signature is implied: none to pass
            await miner.conn.market.submit_result(b, roots[1], "uri", {})
            nonce = await devnet.rpc.get_nonce(account.address, "latest")
            await miner.daemon.poll()
            await miner.daemon.poll()
            assert await devnet.rpc.get_nonce(account.address, "latest") == nonce + 1  # only (a)
            for task_id, root in zip(tasks, roots, strict=True):
                assert phase(miner.store, task_id) is TaskPhase.SUBMITTED
                assert "0x" + (await client.get_task(task_id)).result_root.hex() == root
            statuses = {t: [r.status for r in miner.store.txs(t, "submit")] for t in tasks}
            assert statuses == {a: [TxStatus.ABANDONED, TxStatus.MINED], b: [TxStatus.MINED]}
        finally:
            await miner.daemon.shutdown()
