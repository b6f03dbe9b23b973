"""A group that loses a member for good: two real ``manta-miner run`` daemons claim a 2-slot
task and train together; the member's daemon and its runner are SIGKILLed mid-training and
never come back. No result can be signed. In the last tenth of the work window the
surviving daemon checks in on chain (``checkIn``); the dead one cannot. After the work
deadline the client expires the task (``manta task expire``): the contract pays the client
its reward back, pays the survivor its bond back, and burns the dead member's bond (the
client gains nothing from the member's loss); the surviving daemon stops its runner and
marks the task failed. Both members count the failure. Every wallet is checked to the wei."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.chain.models import TaskState
from node.demo.processes import DemoError
from tests.e2e.support import (
    ARBITER,
    CLIENT,
    MINERS,
    Market,
    kill_for_good,
    live_runners,
    log_of,
    open_market,
    phase_of,
    progress_steps,
    tiny_spec,
    total_steps,
    txs_of,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anvil, pytest.mark.timeout(240)]
REWARD, BOND = 10**17, 3 * 10**15
WORK_WINDOW_S = 3600


async def test_dead_member_task_expires_its_bond_burns_the_survivor_keeps_its_own(
        tmp_path: Path) -> None:
    async with open_market(tmp_path) as env:
        before = {i: await env.balance(i) for i in (CLIENT, *MINERS)}
        miners = await env.start_miners()
        # long enough that the kill lands mid-training
        (tmp_path / "spec.json").write_bytes(tiny_spec(full_epochs=6).canonical())
        posted = await env.client.run(
            ["task", "submit", str(tmp_path / "spec.json"), "--reward", f"{REWARD}wei",
             "--bond", f"{BOND}wei", "--slots", "2", "--arbiter", env.address(ARBITER),
             "--work-window", f"{WORK_WINDOW_S}s"])
        task_id = int(posted["task_id"])
        group = await _group_when_training(env, task_id)
        leader, member = (next(m for m in miners if m.address == a) for a in group)

        kill_for_good(member)
        assert live_runners(member) == []
        with pytest.raises(DemoError, match="TaskMarketDeadlineNotReached"):
            await env.client.run(["task", "expire", str(task_id)])
        assert await env.market.state_of(task_id) is TaskState.RUNNING

        # into the last tenth of the work window: the survivor checks in, the dead one can't
        view = await env.market.get_task(task_id)
        now = int((await env.devnet.rpc.get_block("latest"))["timestamp"])
        await env.warp(view.work_deadline - now - WORK_WINDOW_S // 20)
        await env.until(lambda: env.market.is_checked_in(task_id, leader.address), 30,
                        "the survivor to check in", alive=[leader])
        assert not await env.market.is_checked_in(task_id, member.address)
        assert [p for p, _ in txs_of(leader, task_id)] == ["claim", "check_in"]

        await env.warp(WORK_WINDOW_S // 10)
        expired = await env.client.run(["task", "expire", str(task_id)])
        assert expired["state"] == "EXPIRED"
        await env.until(lambda: phase_of(leader, task_id) == ("failed", "TaskExpired")
                        and not live_runners(leader), 60, "the survivor to stop training",
                        alive=[leader])
        log = log_of(leader)
        assert f"training stopped task={task_id} reason=TaskExpired" in log
        assert "training failed; restarting" not in log  # stopped, not retried
        total = total_steps(leader, task_id)
        assert total is not None and progress_steps(leader, task_id)[-1] < total

        assert await env.market.state_of(task_id) is TaskState.EXPIRED
        # expire pushed the survivor's bond back: nothing is left to withdraw or reclaim
        assert [p for p, _ in txs_of(leader, task_id)] == ["claim", "check_in"]
        for miner in miners:  # the record blames the member that vanished, not the survivor
            reputation = await env.market.reputation_of(miner.address)
            assert (reputation.completed, reputation.failed) == (0, miner is member)
            assert await env.market.credit_of(miner.address) == 0
        assert await env.market.credit_of(env.address(CLIENT)) == 0
        assert await env.market.burned_of() == BOND  # the dead member's, credited to nobody

        after = {i: await env.balance(i) for i in (CLIENT, *MINERS)}
        assert after[CLIENT] == before[CLIENT] - await env.gas_paid_wei(CLIENT)
        dead = next(i for i in MINERS if env.address(i) == member.address)
        survivor = next(i for i in MINERS if env.address(i) == leader.address)
        assert after[dead] == before[dead] - BOND - await env.gas_paid_wei(dead)
        assert after[survivor] == before[survivor] - await env.gas_paid_wei(survivor)
        assert leader.process.poll() is None  # the survivor daemon goes on serving


async def _group_when_training(env: Market, task_id: int) -> list[str]:
    """The group, once both members' runners have exchanged a few gradient rounds."""
    await env.until(lambda: all(len(progress_steps(m, task_id)) >= 3 for m in env.miners),
                    120, "training on both miners")
    return await env.market.members_of(task_id)
