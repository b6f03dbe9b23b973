"""A disputed result, end to end: two real ``manta-miner run`` daemons train, search and
submit; the client disputes with ``manta task dispute``; the daemons log it and keep
serving the result while the arbiter decides. Then either the arbiter rules for the
client, who gets its reward back while both signers' bonds are burned (neither the client
nor the arbiter gains from them), or the arbiter stays silent past its deadline and a daemon
finalizes, which pays both members their shares and bonds. Every wallet is checked to the
wei: what the contract moved, less the gas each account paid."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from miner.daemon.result import equal_shares
from node.chain.models import TaskState
from node.demo.processes import MinerProcess
from tests.e2e.support import (
    ARBITER,
    CLIENT,
    MINERS,
    Market,
    log_of,
    open_market,
    phase_name,
    phase_of,
    tiny_spec,
    txs_of,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anvil, pytest.mark.timeout(240)]
REWARD, BOND = 3 * 10**17 + 1, 2 * 10**15
ARBITRATION_WINDOW_S = 3600


async def _served(url: str, sha256: str) -> bool:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
            http.get(f"{url}/artifacts/{sha256}") as reply:
        served = reply.headers.get("X-Content-SHA256", "").lower().removeprefix("0x")
        return reply.status == 200 and served == sha256.lower().removeprefix("0x")


async def _disputed_task(env: Market, folder: Path) -> tuple[list[MinerProcess], int, str]:
    """Daemons up, a task trained and submitted, the client's dispute seen by both daemons,
    which keep serving the result. Returns the daemons, the task and the weights' sha256."""
    miners = await env.start_miners()
    (folder / "spec.json").write_bytes(tiny_spec().canonical())
    posted = await env.client.run(
        ["task", "submit", str(folder / "spec.json"), "--reward", f"{REWARD}wei",
         "--bond", f"{BOND}wei", "--slots", "2", "--arbiter", env.address(ARBITER),
         "--review-window", "1h", "--arbitration-window", f"{ARBITRATION_WINDOW_S}s"])
    task_id = int(posted["task_id"])
    await env.until(lambda: all(phase_name(m, task_id) == "submitted" for m in miners),
                    150, "the submitted result")
    assert await env.market.state_of(task_id) is TaskState.SUBMITTED
    fetched = await env.client.run(["task", "fetch", str(task_id),
                                    "--out", str(folder / "result")])
    weights = str(fetched["files"]["model.safetensors"])

    disputed = await env.client.run(["task", "dispute", str(task_id), "--reason",
                                     "the weights do not reach the claimed accuracy"])
    assert disputed["state"] == "DISPUTED"
    await env.until(lambda: all(f"result disputed task={task_id}" in log_of(m)
                                for m in miners), 30, "the daemons' dispute logs")
    # while the arbiter decides, both members still serve the result and wait
    for miner in miners:
        assert phase_of(miner, task_id) == ("submitted", "")
        assert await _served(miner.url, weights)
    return miners, task_id, weights


async def test_dispute_won_by_the_client_refunds_and_burns_the_bonds(tmp_path: Path) -> None:
    async with open_market(tmp_path) as env:
        before = {i: await env.balance(i) for i in (CLIENT, *MINERS)}
        before_arbiter = await env.balance(ARBITER)
        miners, task_id, weights = await _disputed_task(env, tmp_path)

        arbiter = env.market.with_sender(await env.devnet.sender(ARBITER))
        await arbiter.resolve(task_id, False)
        await env.until(lambda: all(phase_of(m, task_id) == ("failed", "lost") for m in miners),
                        30, "the daemons to see the ruling")

        assert await env.market.state_of(task_id) is TaskState.SETTLED
        for miner in miners:
            assert f"task phase task={task_id} phase=failed reason=lost" in log_of(miner)
            reputation = await env.market.reputation_of(miner.address)
            assert (reputation.completed, reputation.disputes_lost) == (0, 1)
            assert await env.market.credit_of(miner.address) == 0
            purposes = [p for p, _ in txs_of(miner, task_id)]
            assert "withdraw" not in purposes and "finalize" not in purposes
            assert await _served(miner.url, weights)  # still there for anyone who asks
        assert await env.market.credit_of(env.address(CLIENT)) == 0
        assert await env.market.burned_of() == 2 * BOND

        # wallets to the wei: the client escrowed the reward and got just that back; each
        # miner lost its bond to the burn, not to the client; everyone paid its own gas
        after = {i: await env.balance(i) for i in (CLIENT, *MINERS)}
        assert after[CLIENT] == before[CLIENT] - await env.gas_paid_wei(CLIENT)
        assert await env.balance(ARBITER) == before_arbiter - await env.gas_paid_wei(ARBITER)
        for index in MINERS:
            assert after[index] == before[index] - BOND - await env.gas_paid_wei(index)


async def test_silent_arbiter_lets_the_daemons_finalize_and_be_paid(tmp_path: Path) -> None:
    async with open_market(tmp_path) as env:
        before = {i: await env.balance(i) for i in (CLIENT, *MINERS)}
        miners, task_id, _ = await _disputed_task(env, tmp_path)

        await env.warp(ARBITRATION_WINDOW_S + 60)  # the arbiter never rules
        await env.until(lambda: all(phase_name(m, task_id) == "withdrawn" for m in miners),
                        60, "the daemons to finalize (which pays them)")

        assert await env.market.state_of(task_id) is TaskState.SETTLED
        finalized = [m for m in miners if ("finalize", "mined") in txs_of(m, task_id)]
        assert len(finalized) == 1  # the first one settles it; the other one needs not
        group = await env.market.members_of(task_id)
        shares = dict(zip(group, equal_shares(REWARD, len(group)), strict=True))
        for miner in miners:
            assert await env.market.credit_of(miner.address) == 0  # pushed, not credited
            assert "withdraw" not in [p for p, _ in txs_of(miner, task_id)]
            reputation = await env.market.reputation_of(miner.address)
            assert (reputation.completed, reputation.disputes_lost) == (1, 0)
        assert await env.market.credit_of(env.address(CLIENT)) == 0

        after = {i: await env.balance(i) for i in (CLIENT, *MINERS)}
        assert after[CLIENT] == before[CLIENT] - REWARD - await env.gas_paid_wei(CLIENT)
        for index in MINERS:
            share = shares[env.address(index)]
            assert after[index] == before[index] + share - await env.gas_paid_wei(index)
