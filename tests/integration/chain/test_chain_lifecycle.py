"""The whole task lifecycle through the TaskMarket facade, on eth-tester and on anvil."""

from __future__ import annotations

from typing import Any

import pytest

from node.chain.models import (
    ZERO_ADDRESS,
    ResultSubmitted,
    TaskClaimed,
    TaskPosted,
    TaskSettled,
    TaskStarted,
    TaskState,
    TxReceipt,
    Withdrawn,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

Chain = Any  # the conftest's Chain; see its docstring
ETHER = 10**18


def fee(receipt: TxReceipt) -> int:
    return receipt.gas_used * receipt.effective_gas_price_wei


async def test_native_lifecycle_accept_then_withdraw(chain: Chain) -> None:
    client, miner = chain.market("client"), chain.market("miner0")
    client_before = await chain.balance("client")
    posted = await client.post_task(chain.params(), "file://spec")
    task_id = posted.task_id
    assert task_id == await client.task_count()
    assert await chain.balance("client") == client_before - ETHER - fee(posted.receipt)
    assert await client.state_of(task_id) is TaskState.OPEN

    await miner.claim(task_id)
    view = await client.get_task(task_id)
    assert (view.state, view.claimed) == (TaskState.RUNNING, 1)
    assert view.client == chain.address("client")
    assert view.work_deadline == await chain.now() + chain.WORK_S
    assert await client.members_of(task_id) == [chain.address("miner0")]

    await chain.submit(task_id, ["miner0"], [ETHER])
    view = await client.get_task(task_id)
    assert view.state is TaskState.SUBMITTED and view.result_root == chain.ROOT_HASH
    assert view.settle_deadline == await chain.now() + chain.REVIEW_S

    await client.accept(task_id)
    assert await client.state_of(task_id) is TaskState.SETTLED
    credit = await client.credit_of(chain.address("miner0"))
    assert credit == ETHER + ETHER // 10

    miner_before = await chain.balance("miner0")
    receipt = await miner.withdraw()
    assert await chain.balance("miner0") == miner_before + credit - fee(receipt)
    assert await client.credit_of(chain.address("miner0")) == 0
    reputation = await client.reputation_of(chain.address("miner0"))
    assert (reputation.completed, reputation.failed, reputation.disputes_lost) == (1, 0, 0)

    events = await client.get_events(TaskPosted, 0, "latest", task_id)
    assert len(events) == 1 and events[0].reward_wei == ETHER and events[0].spec_uri == "file://spec"
    assert events[0].claim_deadline == (await client.get_task(task_id)).claim_deadline
    (claimed,) = await client.get_task_claimed(task_id=task_id)
    assert (claimed.miner, claimed.slot) == (chain.address("miner0"), 0)
    assert len(await client.get_task_started(task_id=task_id)) == 1
    (submitted,) = await client.get_result_submitted(task_id=task_id)
    assert submitted.shares_wei == (ETHER,) and submitted.result_root == chain.ROOT_HASH
    (settled,) = await client.get_task_settled(task_id=task_id)
    assert settled.miners_paid
    (withdrawn,) = await client.get_withdrawn(account=chain.address("miner0"))
    assert (withdrawn.amount_wei, withdrawn.token) == (credit, ZERO_ADDRESS)
    assert withdrawn.tx_hash == receipt.tx_hash and withdrawn.block_number == receipt.block_number


async def test_erc20_two_miners_review_window_passes_then_finalize(chain: Chain) -> None:
    token = chain.token("client")
    client_tokens = await token.balance_of(chain.address("client"))
    task_id = await chain.post(erc20=True, slots=2, bond_wei=5 * ETHER)
    assert await token.balance_of(chain.address("client")) == client_tokens - ETHER
    assert await token.balance_of(chain.deployment.task_market) == ETHER

    await chain.claim(task_id, ["miner0", "miner1"])
    assert await token.balance_of(chain.deployment.task_market) == ETHER + 10 * ETHER
    shares = [ETHER * 6 // 10, ETHER * 4 // 10]
    await chain.submit(task_id, ["miner0", "miner1"], shares)

    await chain.increase_time(chain.REVIEW_S + 1)
    await chain.market("outsider").finalize(task_id)
    market = chain.market("client")
    assert await market.state_of(task_id) is TaskState.SETTLED
    for miner, share in zip(["miner0", "miner1"], shares, strict=True):
        before = await token.balance_of(chain.address(miner))
        credit = await market.credit_of(chain.address(miner), chain.deployment.token or "")
        assert credit == share + 5 * ETHER
        await chain.market(miner).withdraw(chain.deployment.token or "")
        assert await token.balance_of(chain.address(miner)) == before + credit
    assert await token.balance_of(chain.deployment.task_market) == 0


@pytest.mark.parametrize("miners_win", [True, False])
async def test_dispute_resolved_by_the_arbiter(chain: Chain, miners_win: bool) -> None:
    task_id = await chain.post(slots=2)
    await chain.claim(task_id, ["miner0", "miner1"])
    await chain.submit(task_id, ["miner0", "miner1"], [ETHER // 2, ETHER // 2])
    market = chain.market("client")
    await market.dispute(task_id, b"\x0d" * 32)
    view = await market.get_task(task_id)
    assert view.state is TaskState.DISPUTED
    assert view.settle_deadline == await chain.now() + chain.ARBITRATION_S
    (disputed,) = await market.get_task_disputed(task_id=task_id)
    assert disputed.reason_hash == b"\x0d" * 32

    await chain.market("arbiter").resolve(task_id, miners_win)
    assert await market.state_of(task_id) is TaskState.SETTLED
    (ruling,) = await market.get_dispute_resolved(task_id=task_id)
    assert ruling.miners_won is miners_win and ruling.arbiter == chain.address("arbiter")
    client_credit = await market.credit_of(chain.address("client"))
    miner_credit = await market.credit_of(chain.address("miner0"))
    reputation = await market.reputation_of(chain.address("miner1"))
    if miners_win:
        assert (client_credit, miner_credit) == (0, ETHER // 2 + ETHER // 10)
        assert (reputation.completed, reputation.disputes_lost) == (1, 0)
    else:
        assert (client_credit, miner_credit) == (ETHER + 2 * (ETHER // 10), 0)
        assert (reputation.completed, reputation.disputes_lost) == (0, 1)


async def test_silent_arbiter_lets_the_miners_finalize(chain: Chain) -> None:
    task_id = await chain.post()
    await chain.claim(task_id, ["miner0"])
    await chain.submit(task_id, ["miner0"], [ETHER])
    await chain.market("client").dispute(task_id, b"\x01" * 32)
    await chain.increase_time(chain.ARBITRATION_S + 1)
    receipt = await chain.market("miner0").finalize(task_id)
    assert await chain.market().state_of(task_id) is TaskState.SETTLED
    events = chain.market().decode_logs(receipt.logs)
    assert [type(e) for e in events] == [TaskSettled] and events[0].miners_paid


async def test_expire_open_task_without_claims_refunds_the_client(chain: Chain) -> None:
    task_id = await chain.post()
    await chain.increase_time(chain.CLAIM_S + 1)
    await chain.market("outsider").expire(task_id)
    market = chain.market()
    assert await market.state_of(task_id) is TaskState.EXPIRED
    assert await market.credit_of(chain.address("client")) == ETHER
    (expired,) = await market.get_task_expired(task_id=task_id)
    assert expired.bonds_slashed is False


async def test_expire_running_task_without_result_slashes_bonds(chain: Chain) -> None:
    task_id = await chain.post(slots=2)
    await chain.claim(task_id, ["miner0", "miner1"])
    await chain.increase_time(chain.WORK_S + 1)
    await chain.market("outsider").expire(task_id)
    market = chain.market()
    assert await market.state_of(task_id) is TaskState.EXPIRED
    assert await market.credit_of(chain.address("client")) == ETHER + 2 * (ETHER // 10)
    assert (await market.reputation_of(chain.address("miner0"))).failed == 1
    (expired,) = await market.get_task_expired(task_id=task_id)
    assert expired.bonds_slashed is True


async def test_cancel_open_task_and_withdraw_the_refund(chain: Chain) -> None:
    task_id = await chain.post(erc20=True)
    market = chain.market()
    await market.cancel(task_id)
    assert await market.state_of(task_id) is TaskState.CANCELLED
    assert len(await market.get_task_cancelled(task_id=task_id)) == 1
    token = chain.token()
    before = await token.balance_of(chain.address("client"))
    await market.withdraw(chain.deployment.token or "")
    assert await token.balance_of(chain.address("client")) == before + ETHER


async def test_partial_group_starts_when_the_claim_window_ends(chain: Chain) -> None:
    task_id = await chain.post(slots=3)
    await chain.claim(task_id, ["miner2"])
    market = chain.market()
    assert await market.state_of(task_id) is TaskState.OPEN
    await chain.increase_time(chain.CLAIM_S + 1)
    view = await market.get_task(task_id)
    assert view.state is TaskState.RUNNING
    assert view.work_deadline == view.claim_deadline + chain.WORK_S
    assert await market.get_task_started(task_id=task_id) == []  # no event for a time transition
    receipt = await chain.submit(task_id, ["miner2"], [ETHER])
    (event,) = [e for e in market.decode_logs(receipt.logs) if isinstance(e, ResultSubmitted)]
    assert event.leader == chain.address("miner2")


async def test_receipt_logs_decode_in_order(chain: Chain) -> None:
    task_id = await chain.post(slots=1)
    receipt = await chain.market("miner3").claim(task_id)
    events = chain.market().decode_logs(receipt.logs)
    assert [type(e) for e in events] == [TaskClaimed, TaskStarted]
    assert [e.log_index for e in events] == sorted(e.log_index for e in events)
    assert all(isinstance(e, Withdrawn) is False for e in events)
