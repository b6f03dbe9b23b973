"""A saboteur in the group, end to end, with three real ``manta-miner run`` daemons.

First a task whose arbiter the miners never chose: no daemon claims it, and each logs
``arbiter_not_trusted`` (the client's own arbiter could rule every bond away).

Then a 3-slot task. Two honest daemons claim slots 0 and 1; a third daemon claims slot 2,
trains along, and is killed the moment it would have served its signature (a crash point),
so it never signs and never checks in. The leader waits ``quorum_wait_s`` for it, then
submits with 2 of 3 signatures (a strict majority): one member cannot hold the group
hostage. The client accepts at once. The two honest members are paid their share and bond
inside ``accept``. The saboteur's share is not redistributed to anyone: it waits for the
review deadline (the saboteur could still endorse until then), and ``sweep`` then pays it back
to the client and burns the saboteur's bond (credited to nobody). Every wallet is checked to
the wei."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.chain.errors import ContractRevert
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

pytestmark = [pytest.mark.e2e, pytest.mark.anvil, pytest.mark.timeout(420)]
SABOTEUR = 5
REWARD, BOND = 3 * 10**17, 2 * 10**15
REVIEW_WINDOW_S = 3600
HONEST_POLICY = {"quorum_wait_s": 5.0}


async def _refused_untrusted_arbiter(env: Market, folder: Path) -> None:
    (folder / "untrusted.json").write_bytes(tiny_spec().canonical())
    posted = await env.client.run(
        ["task", "submit", str(folder / "untrusted.json"), "--reward", f"{REWARD}wei",
         "--bond", f"{BOND}wei", "--slots", "2", "--arbiter", env.address(CLIENT + 5)])
    task_id = int(posted["task_id"])
    await env.until(lambda: all(phase_name(m, task_id) == "refused" for m in env.miners), 60,
                    "the refusals of a task with an untrusted arbiter")
    for miner in env.miners:
        assert (phase_of(miner, task_id) or ("", ""))[1].startswith("arbiter_not_trusted")
        assert f"claim decision task={task_id} claim=False reason=arbiter_not_trusted" \
            in log_of(miner)
        assert txs_of(miner, task_id) == []
    await env.client.run(["task", "cancel", str(task_id)])


async def test_a_member_that_never_signs_loses_its_bond_and_cannot_block_the_group(
        tmp_path: Path) -> None:
    async with open_market(tmp_path) as env:
        everyone = (CLIENT, *MINERS, SABOTEUR, ARBITER)
        before = {i: await env.balance(i) for i in everyone}
        honest = await env.start_miners(MINERS, policy=HONEST_POLICY)
        await _refused_untrusted_arbiter(env, tmp_path)

        (tmp_path / "spec.json").write_bytes(tiny_spec().canonical())
        posted = await env.client.run(
            ["task", "submit", str(tmp_path / "spec.json"), "--reward", f"{REWARD}wei",
             "--bond", f"{BOND}wei", "--slots", "3", "--arbiter", env.address(ARBITER),
             "--review-window", f"{REVIEW_WINDOW_S}s"])
        task_id = int(posted["task_id"])

        async def honest_claimed() -> bool:
            view = await env.market.get_task(task_id)
            return view.claimed == 2
        await env.until(honest_claimed, 90, "the honest claims", alive=honest)
        # the saboteur joins last (slot 2) and dies instead of serving its signature
        [saboteur] = await env.start_miners(
            [SABOTEUR], env={"MANTA_CRASH_AT": "result.signed"})
        group = await _group_of_three(env, task_id, honest)
        assert group[2] == saboteur.address

        await env.until(lambda: all(phase_name(m, task_id) == "submitted" for m in honest), 240,
                        "a result submitted by a quorum", alive=honest)
        assert saboteur.process.wait(30) is not None  # it died at its crash point
        view = await env.market.get_task(task_id)
        assert view.state is TaskState.SUBMITTED
        assert view.signed_slots == 0b011 and not view.present(2)
        leader_log = log_of(honest[0]) + log_of(honest[1])
        assert f"submitting with a quorum task={task_id} signed=2 members=3" in leader_log

        accepted = await env.client.run(["task", "accept", str(task_id)])
        assert accepted["state"] == "SETTLED"
        await env.until(lambda: all(phase_name(m, task_id) == "withdrawn" for m in honest), 60,
                        "the honest daemons to see their pay", alive=honest)
        # the saboteur's share and bond wait for the review deadline: it may still endorse
        with pytest.raises(ContractRevert, match="TaskMarketDeadlineNotReached"):
            await env.market.with_sender(await env.devnet.sender(ARBITER)).sweep(task_id)
        await env.warp(REVIEW_WINDOW_S + 1)
        stranger = env.market.with_sender(await env.devnet.sender(ARBITER))
        await stranger.sweep(task_id)  # anyone may close it; the arbiter is just "anyone"
        assert await env.market.burned_of() == BOND

        # to the wei: each honest member got its third and its bond back; the client paid two
        # thirds (the saboteur's third came back to it); the saboteur lost its bond to the burn
        share = REWARD // 3
        after = {i: await env.balance(i) for i in everyone}
        assert after[CLIENT] == before[CLIENT] - 2 * share - await env.gas_paid_wei(CLIENT)
        for index in MINERS:
            assert after[index] == before[index] + share - await env.gas_paid_wei(index)
        assert after[SABOTEUR] == before[SABOTEUR] - BOND - await env.gas_paid_wei(SABOTEUR)
        assert after[ARBITER] == before[ARBITER] - await env.gas_paid_wei(ARBITER)
        for miner in honest:
            assert await env.market.credit_of(miner.address) == 0
            assert "withdraw" not in [p for p, _ in txs_of(miner, task_id)]


async def _group_of_three(env: Market, task_id: int, alive: list[MinerProcess]) -> list[str]:
    async def running() -> bool:
        return await env.market.state_of(task_id) is TaskState.RUNNING
    await env.until(running, 90, "the group of three", alive=alive)
    return await env.market.members_of(task_id)
