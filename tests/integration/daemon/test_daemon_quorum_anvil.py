"""v2's strict-majority results, daemon side, on anvil (``open_miner`` wiring, the training
replaced by a published manifest), every wallet checked to the wei:

- **a member that never signs** cannot hold its group hostage: in a group of three, the
  third daemon has no result flow (it claims, then never signs nor checks in); the leader
  waits ``quorum_wait_s`` for it and submits with 2 of 3 signatures. The client stays
  silent; after the review window the honest daemons finalize, which pays each of them its
  share and bond, pays the saboteur's share back to the client and burns its bond (it
  neither signed nor checked in by the settle deadline).
- **an honest member left out of a result**: two test-driven accounts (slots 0 and 1) submit
  with their own two signatures, without the daemon's (slot 2). If the daemon signed the same
  root, it endorses it (here after the client already accepted) and is paid its share and
  bond; if it never saw that root, it checks in before the settle deadline, gets its bond
  back, and its share goes back to the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from miner.daemon.daemon import run_until_stopped
from miner.daemon.result import equal_shares
from miner.daemon.runtime import MinerServices, open_miner
from miner.daemon.server import ServerDeps, create_app
from miner.daemon.settings import load_miner_settings
from miner.daemon.store import StateStore, TaskPhase, TxStatus
from node.chain.market import TaskMarket
from node.chain.models import ResultEndorsed, TaskParams, TaskState, TaskView
from node.devnet import Devnet
from node.documents.manifest import Metrics, ResultManifest
from node.documents.spec import Constraint, DatasetRef, SearchSpaceSpec, TaskSpec
from node.ports import free_port
from tests.daemon_support import phase, server_deps, until
from tests.integration.daemon.support import ARBITER, Wallets, trusted_policy, warp

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(120), pytest.mark.usefixtures("watchdog"),
              pytest.mark.asyncio(loop_scope="module")]
CLIENT = 0
REWARD, BOND = 10**17 + 1, 10**15  # over three slots: slot 0 takes the 2 wei left over
REVIEW_S = 600
QUORUM_WAIT_S = 1.0
SPEC = TaskSpec(kind="classification", dataset=DatasetRef(name="digits"),
                search_space=SearchSpaceSpec(resolutions=(32,)),
                constraint=Constraint(max_flops=10**7))
WEIGHTS, ARCH = b"\x00weights" * 1000, json.dumps({"ks": [3, 5]}).encode()


def sha(data: bytes) -> str:
    return "0x" + hashlib.sha256(data).hexdigest()


def manifest_for(task_id: int, group: list[str], accuracy: float = 0.5) -> ResultManifest:
    return ResultManifest(
        task_id=task_id, spec_hash=SPEC.spec_hash(), arch={"ks": [3, 5]},
        weights_sha256=sha(WEIGHTS), arch_json_sha256=sha(ARCH),
        metrics=Metrics(accuracy=accuracy, flops=1000, params=100), pareto_front=(),
        training_log_sha256=sha(b"log"), group=tuple(group),
        shares_wei=equal_shares(REWARD, len(group)))


async def market_of(devnet: Devnet, index: int) -> TaskMarket:
    return await TaskMarket.create(devnet.rpc, devnet.deployment.task_market,
                                   await devnet.sender(index))


async def post(devnet: Devnet, client: TaskMarket, folder: Path) -> tuple[int, int]:
    """A 3-slot task; (its id, the block of its post)."""
    (folder / "spec.json").write_bytes(SPEC.canonical())
    posted = await client.post_task(TaskParams(
        reward_wei=REWARD, bond_wei=BOND, slots=3, claim_window_s=600, work_window_s=7200,
        review_window_s=REVIEW_S, arbitration_window_s=600,
        arbiter=devnet.accounts[ARBITER].address, spec_hash=SPEC.spec_hash(),
        validation_hash="0x" + "47" * 32), (folder / "spec.json").as_uri())
    return posted.task_id, posted.receipt.block_number


async def until_chain(what: Callable[[TaskView], bool], market: TaskMarket, task_id: int,
                      timeout_s: float = 30.0) -> None:
    """Poll the task's chain view until ``what`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not what(await market.get_task(task_id)):
        assert loop.time() < deadline, f"task {task_id}: condition not reached on chain"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def daemon(devnet: Devnet, folder: Path, index: int, start_block: int,
                 signs: bool = True, **policy: Any) -> AsyncIterator[MinerServices]:
    """``open_miner`` for devnet account ``index`` (trusting the tasks' arbiter), its loop
    running until the context ends; it reads the chain from ``start_block`` on (the tasks of
    the module's other tests are none of its business).

    ``signs=False`` builds the daemon without its result flow, as ``DaemonDeps(result=None)``
    does: it claims and forms its groups, then never signs (it serves no signature), never
    checks in and never finalizes."""
    deployment = folder / "deployment.json"
    devnet.deployment.model_copy(update={"start_block": start_block}).save(deployment)
    settings = load_miner_settings(
        data_dir=str(folder / "data"), chain={"deployment_file": str(deployment)},
        http={"port": free_port()}, indexer={"poll_interval_s": 0.05},
        tx={"poll_interval_s": 0.05}, policy=trusted_policy(devnet, **policy))
    stop = asyncio.Event()
    async with open_miner(settings, devnet.accounts[index]) as services:
        if not signs:
            services.daemon.flow = None
        loop = asyncio.create_task(run_until_stopped(services.daemon, stop, 0.1))
        try:
            yield services
        finally:
            stop.set()
            await loop


async def test_a_member_that_never_signs_cannot_block_the_group(
        devnet: Devnet, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    honest_ids, saboteur_id = (5, 6), 7
    client = await market_of(devnet, CLIENT)
    market = client.address
    addresses = {i: devnet.accounts[i].address for i in (*honest_ids, saboteur_id)}
    wallets = await Wallets.snapshot(devnet.rpc, client.sender.address, market,
                                     *addresses.values())
    burned_before = await client.burned_of()
    task_id, block = await post(devnet, client, tmp_path)
    async with AsyncExitStack() as stack:
        honest = [await stack.enter_async_context(daemon(
            devnet, tmp_path / f"m{i}", i, block, quorum_wait_s=QUORUM_WAIT_S))
            for i in honest_ids]

        await until_chain(lambda v: v.claimed == 2, client, task_id)
        # the saboteur joins last (slot 2), and never signs nor checks in
        saboteur = await stack.enter_async_context(daemon(
            devnet, tmp_path / f"m{saboteur_id}", saboteur_id, block, signs=False))
        await until(lambda: all(phase(m.store, task_id) is TaskPhase.FORMED
                                for m in (*honest, saboteur)))
        group = await client.members_of(task_id)
        assert group[2] == addresses[saboteur_id]
        roles = {m.store.task(task_id).role: m for m in honest}  # type: ignore[union-attr]
        leader, member = roles["leader"], roles["member"]
        assert group[:2] == [leader.conn.address, member.conn.address]

        leader.artifacts.put_bytes(WEIGHTS, sha(WEIGHTS), task_id)
        leader.artifacts.put_bytes(ARCH, sha(ARCH), task_id)
        root = await leader.daemon.publish_result(task_id, manifest_for(task_id, group))
        published = asyncio.get_running_loop().time()
        await until(lambda: all(phase(m.store, task_id) is TaskPhase.SUBMITTED for m in honest),
                    store=leader.store)
        # the leader waited for the third signature, then went on with a strict majority
        assert asyncio.get_running_loop().time() - published >= QUORUM_WAIT_S
        assert f"submitting with a quorum task={task_id} signed=2 members=3" in caplog.text
        view = await client.get_task(task_id)
        assert view.state is TaskState.SUBMITTED and "0x" + view.result_root.hex() == root
        assert view.signed_slots == 0b011 and view.present_slots == 0
        assert saboteur.store.signatures(task_id, root) == {}

        # the client stays silent: past the review window the honest daemons finalize. Until
        # then the saboteur could still check in (or endorse): nothing of it is burned yet
        assert await client.burned_of() == burned_before
        await warp(devnet.rpc, REVIEW_S + 1)
        await until(lambda: all(phase(m.store, task_id) is TaskPhase.WITHDRAWN for m in honest),
                    store=leader.store)
        for miner in (leader, member):  # paid inside finalize: no withdraw transaction
            assert "withdraw" not in [t.purpose for t in miner.store.txs(task_id)]
        finalizes = [t.status for m in (leader, member) for t in m.store.txs(task_id, "finalize")]
        assert finalizes.count(TxStatus.MINED) == 1
        signers = [leader.conn.address, member.conn.address]

    view = await client.get_task(task_id)
    assert view.state is TaskState.SETTLED and view.miners_paid and view.closed
    assert view.signed_slots == 0b011 and view.present_slots == 0
    shares = equal_shares(REWARD, 3)
    assert shares == (shares[1] + 2, shares[1], shares[1])
    # the signers: their share (the bond went out at the claim and came back at finalize)
    for address, share in zip(signers, shares[:2], strict=True):
        assert (await wallets.change(address))[0] == share
        assert await client.credit_of(address) == 0
    # the saboteur: its bond is gone (burned, paid to nobody), and it was paid nothing
    gained, sent = await wallets.change(addresses[saboteur_id])
    assert (gained, sent) == (-BOND, 2)  # its endpoint and its claim, nothing else
    assert await client.credit_of(addresses[saboteur_id]) == 0
    assert await client.burned_of() - burned_before == BOND
    # the client paid the two signed shares only; the burned bond stays in the contract
    assert (await wallets.change(client.sender.address))[0] == -(shares[0] + shares[1])
    assert (await wallets.change(market))[0] == BOND


@asynccontextmanager
async def leader_server(folder: Path, address: str) -> AsyncIterator[tuple[str, ServerDeps]]:
    """A miner HTTP server for a test-driven leader (no daemon behind it), serving what the
    test puts in its store and artifacts. Yields (endpoint, its dependencies)."""
    store = StateStore.open(folder / "state.sqlite")
    deps = server_deps(folder, store, address)
    runner = web.AppRunner(create_app(deps))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", deps
    finally:
        await runner.cleanup()
        store.close()


@dataclass
class LeftOut:
    """What :func:`left_out` ends with."""

    market: TaskMarket  # the client's
    task_id: int
    me: str  # the daemon's account (slot 2)
    raw: list[str]  # the two test-driven members (slots 0 and 1)
    root: str  # the root submitted
    signed_root: str | None  # the root the daemon signed
    txs: list[tuple[str, TxStatus]]  # the daemon's transaction records of the task
    view: TaskView
    gains: dict[str, int]  # wei gained apart from gas, per account


async def left_out(devnet: Devnet, folder: Path, *, signs: bool) -> LeftOut:
    """Test-driven accounts 1 and 2 claim slots 0 and 1 of a task, then the daemon of
    account 3 claims slot 2. Then the two accounts submit with their own two signatures only.

    With ``signs``, the leader's endpoint serves the manifest and the daemon signs it; then
    the daemon is stopped, the result submitted and accepted at once, and the daemon started
    again on its data folder: it can only answer after the accept. Without, the endpoint
    serves nothing (the daemon never sees the root), and the client stays silent past the
    review window. Runs until the daemon's task is ``withdrawn``."""
    client = await market_of(devnet, CLIENT)
    raw = [await market_of(devnet, i) for i in (1, 2)]
    me = devnet.accounts[3].address
    wallets = await Wallets.snapshot(devnet.rpc, client.sender.address, client.address, me,
                                     *(m.sender.address for m in raw))
    task_id, block = await post(devnet, client, folder)
    for market in raw:
        await market.claim(task_id)

    async def submit(root: str) -> None:
        signature = raw[1].sign_result(devnet.accounts[2], task_id, root)
        await raw[0].submit_result(task_id, root, f"{endpoint}/tasks/{task_id}/manifest",
                                   {raw[1].sender.address: signature})
        assert (await client.get_task(task_id)).signed_slots == 0b011

    async with leader_server(folder / "leader", raw[0].sender.address) as (endpoint, served):
        await raw[0].register(endpoint)
        async with daemon(devnet, folder / "m3", 3, block) as miner:
            await until(lambda: phase(miner.store, task_id) is TaskPhase.FORMED,
                        store=miner.store)
            group = await client.members_of(task_id)
            assert group == [raw[0].sender.address, raw[1].sender.address, me]
            manifest = manifest_for(task_id, group)
            if signs:
                root = manifest.result_root()
                served.store.record_task(task_id, SPEC.spec_hash())
                served.store.set_manifest(task_id, manifest.canonical(), root)
                for blob in (WEIGHTS, ARCH):
                    served.artifacts.put_bytes(blob, sha(blob), task_id)
                await until(lambda: phase(miner.store, task_id) is TaskPhase.SIGNING,
                            store=miner.store)
            else:  # a root the daemon never saw: the leader's endpoint serves nothing
                root = manifest_for(task_id, group, accuracy=0.25).result_root()
                await submit(root)
                await until_chain(lambda v: v.present(2), client, task_id)
                await warp(devnet.rpc, REVIEW_S + 1)  # the client stays silent
                await until(lambda: phase(miner.store, task_id) is TaskPhase.WITHDRAWN,
                            store=miner.store)
        if signs:  # while the daemon is down: submitted without it, accepted at once
            await submit(root)
            await client.accept(task_id)
            async with daemon(devnet, folder / "m3", 3, block) as miner:
                await until(lambda: phase(miner.store, task_id) is TaskPhase.WITHDRAWN,
                            store=miner.store)
    with StateStore.open(folder / "m3" / "data" / "state.sqlite") as store:  # it stopped
        record = store.task(task_id)
        assert record is not None
        txs = [(t.purpose, t.status) for t in store.txs(task_id)]
    accounts = (client.sender.address, client.address, me, *(m.sender.address for m in raw))
    return LeftOut(client, task_id, me, [m.sender.address for m in raw], root,
                   record.result_root, txs, await client.get_task(task_id),
                   {a: (await wallets.change(a))[0] for a in accounts})


async def test_a_left_out_member_that_signed_endorses_even_after_an_early_accept(
        devnet: Devnet, tmp_path: Path) -> None:
    out = await left_out(devnet, tmp_path, signs=True)
    assert out.signed_root == out.root
    assert out.view.state is TaskState.SETTLED and out.view.miners_paid
    assert out.view.signed_slots == 0b111 and out.view.present_slots == 0  # signed late
    assert out.txs == [("claim", TxStatus.MINED), ("endorse", TxStatus.MINED)]
    endorsed = await out.market.get_events(ResultEndorsed, out.market.start_block, "latest",
                                           out.task_id)
    assert [(e.miner, e.slot) for e in endorsed] == [(out.me, 2)]
    # everyone signed in the end: each member its share, the client paid the whole reward
    assert [out.gains[a] for a in (*out.raw, out.me)] == list(equal_shares(REWARD, 3))
    assert out.gains[out.market.sender.address] == -REWARD
    assert out.gains[out.market.address] == 0
    assert await out.market.credit_of(out.me) == 0


async def test_a_left_out_member_without_the_root_checks_in_and_keeps_its_bond(
        devnet: Devnet, tmp_path: Path) -> None:
    burned_before = await (await market_of(devnet, CLIENT)).burned_of()
    out = await left_out(devnet, tmp_path, signs=False)
    market = out.market
    assert out.signed_root is None
    assert out.view.state is TaskState.SETTLED and out.view.miners_paid and out.view.closed
    assert out.view.signed_slots == 0b011 and out.view.present_slots == 0b100
    assert ("check_in", TxStatus.MINED) in out.txs and "endorse" not in dict(out.txs)
    (checked,) = await market.get_member_checked_in(task_id=out.task_id)
    assert (checked.miner, checked.slot) == (out.me, 2) and checked.evidence != bytes(32)
    # the signers their shares; the daemon its bond back (no gain, no loss); its share back
    # to the client; nothing burned
    shares = equal_shares(REWARD, 3)
    assert [out.gains[a] for a in out.raw] == list(shares[:2])
    assert out.gains[out.me] == 0
    assert out.gains[market.sender.address] == -(shares[0] + shares[1])
    assert out.gains[market.address] == 0
    assert await market.burned_of() == burned_before
    assert await market.credit_of(out.me) == 0
