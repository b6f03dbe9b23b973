"""The timeline reader on anvil: a posted task, then claimed (one slot: it starts) and
checked in (with its evidence), read from the chain's logs in small block ranges, with block
times; an unknown task is the contract's named error; a repeated read within the interval is
answered again, and reads asked together share one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from node.chain.errors import ContractRevert
from node.chain.market import TaskMarket
from node.chain.models import TaskParams
from node.devnet import Devnet
from node.monitor.timeline import TimelineReader

pytestmark = [pytest.mark.anvil, pytest.mark.timeout(60),
              pytest.mark.asyncio(loop_scope="module")]


async def test_timeline_from_the_chain(devnet: Devnet) -> None:
    client = await TaskMarket.create(devnet.rpc, devnet.deployment.task_market,
                                     await devnet.sender(0))
    miner = client.with_sender(await devnet.sender(1))
    start = int(await devnet.rpc.request("eth_blockNumber"), 16)
    posted = await client.post_task(TaskParams(
        reward_wei=10**16, bond_wei=10**14, slots=1, claim_window_s=600, work_window_s=3600,
        review_window_s=600, arbitration_window_s=60, arbiter=devnet.accounts[9].address,
        spec_hash="0x" + "51" * 32, validation_hash="0x" + "52" * 32), "file:///spec.json")
    task_id = posted.task_id
    reader = TimelineReader(client, devnet.rpc, start, max_range_blocks=2, min_interval_s=0.0)
    opened = await reader.read(task_id)
    block = await devnet.rpc.get_block(posted.receipt.block_number)
    assert opened.state == "OPEN" and opened.current == "posted"
    assert [e.name for e in opened.events] == ["posted"]
    assert opened.events[0].time_s == int(block["timestamp"])
    assert opened.stages[1].deadline_s == (await client.get_task(task_id)).claim_deadline

    await miner.claim(task_id)  # v2: claiming needs no registered endpoint
    running = await reader.read(task_id)
    assert running.state == "RUNNING" and running.current == "running"
    assert [e.name for e in running.events] == ["posted", "claimed", "started"]
    assert [(m.slot, m.address) for m in running.members] == [(0, devnet.accounts[1].address)]
    assert running.stages[3].deadline_s == (await client.get_task(task_id)).work_deadline > 0

    evidence = "0x" + "c1" * 32  # the member commits to its latest checkpoint
    await miner.check_in(task_id, evidence)
    checked = await reader.read(task_id)
    assert checked.events[-1].name == "checked_in" and checked.state == "RUNNING"
    assert checked.events[-1].detail == {"miner": devnet.accounts[1].address, "slot": 0,
                                         "evidence": evidence}

    with pytest.raises(ContractRevert):
        await reader.read(task_id + 100)
    cached = TimelineReader(client, devnet.rpc, start, min_interval_s=60.0)
    first = await cached.read(task_id)
    assert await cached.read(task_id) is first
    # pages asking at the same moment share one read of the chain
    together = TimelineReader(client, devnet.rpc, start, min_interval_s=60.0)
    reads = 0
    get_task = client.get_task

    async def counted(task: int) -> Any:
        nonlocal reads
        reads += 1
        return await get_task(task)

    client.get_task = counted  # type: ignore[method-assign]
    try:
        answers = await asyncio.gather(*(together.read(task_id) for _ in range(5)))
    finally:
        client.get_task = get_task  # type: ignore[method-assign]
    assert reads == 1 and all(a is answers[0] for a in answers)
