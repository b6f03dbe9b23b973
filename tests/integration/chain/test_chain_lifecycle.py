"""The whole task lifecycle through the TaskMarket facade, on eth-tester and on anvil.

Payouts are pushed inside the settling transaction (accept, finalize, resolve, expire,
cancel), so every money outcome is checked on the balances, to the wei, with the gas an
account paid for its own calls taken out; nothing is left as a credit to withdraw."""

from __future__ import annotations

from typing import Any

import pytest

from node.chain.errors import ContractRevert
from node.chain.models import (
    Burned,
    PaymentDeferred,
    ResultSubmitted,
    TaskClaimed,
    TaskPosted,
    TaskSettled,
    TaskStarted,
    TaskState,
    Withdrawn,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

Chain = Any  # the conftest's Chain; see its docstring
ETHER = 10**18
BOND = ETHER // 10  # the conftest's default bond
EVIDENCE = b"\x0c" * 32


async def test_native_lifecycle_accept_pays_the_miner(chain: Chain) -> None:
    client, miner = chain.market("client"), chain.market("miner0")
    client_before = await chain.balance("client")
    posted = await client.post_task(chain.params(), "file://spec")
    task_id = posted.task_id
    assert task_id == await client.task_count()
    assert await chain.balance("client") == client_before - ETHER - chain.fee(posted.receipt)
    assert await client.state_of(task_id) is TaskState.OPEN

    await miner.claim(task_id)
    view = await client.get_task(task_id)
    assert (view.state, view.claimed) == (TaskState.RUNNING, 1)
    assert view.client == chain.address("client")
    assert view.spec_hash == chain.params().spec_hash  # from TaskPosted: not stored
    assert view.work_deadline == await chain.now() + chain.WORK_S
    assert await client.members_of(task_id) == [chain.address("miner0")]

    submit = await chain.submit(task_id, ["miner0"])
    view = await client.get_task(task_id)
    assert view.state is TaskState.SUBMITTED and view.result_root == chain.ROOT_HASH
    assert view.settle_deadline == await chain.now() + chain.REVIEW_S
    assert view.signed(0) and view.share_wei(0) == ETHER

    before = await chain.balances("client", "miner0")
    accept = await client.accept(task_id)
    after = await chain.balances("client", "miner0")
    assert await client.state_of(task_id) is TaskState.SETTLED
    assert after["miner0"] - before["miner0"] == ETHER + BOND  # share and bond, pushed
    assert after["client"] - before["client"] == -chain.fee(accept)
    assert before["market"] - after["market"] == ETHER + BOND
    assert await client.credit_of(chain.address("miner0")) == 0
    assert [type(e) for e in client.decode_logs(accept.logs)] == [TaskSettled]
    view = await client.get_task(task_id)
    assert view.miners_paid and view.closed  # everyone signed: nothing left to claim late
    with pytest.raises(ContractRevert) as nothing:
        await miner.withdraw()
    assert nothing.value.name == "TaskMarketNothingToWithdraw"
    reputation = await client.reputation_of(chain.address("miner0"))
    assert (reputation.completed, reputation.failed, reputation.disputes_lost) == (1, 0, 0)
    assert (reputation.earned_wei, reputation.distinct_clients) == (ETHER, 1)

    events = await client.get_events(TaskPosted, 0, "latest", task_id)
    assert len(events) == 1 and events[0].reward_wei == ETHER and events[0].spec_uri == "file://spec"
    assert events[0].claim_deadline == (await client.get_task(task_id)).claim_deadline
    (claimed,) = await client.get_task_claimed(task_id=task_id)
    assert (claimed.miner, claimed.slot) == (chain.address("miner0"), 0)
    assert len(await client.get_task_started(task_id=task_id)) == 1
    (submitted,) = await client.get_result_submitted(task_id=task_id)
    assert submitted.signed_slots == 0b1 and submitted.result_root == chain.ROOT_HASH
    assert submitted.submitter == chain.address("miner0")
    assert submitted.tx_hash == submit.tx_hash
    (settled,) = await client.get_task_settled(task_id=task_id)
    assert settled.miners_paid and settled.tx_hash == accept.tx_hash
    assert await client.get_withdrawn(account=chain.address("miner0")) == []


async def test_erc20_two_miners_review_window_passes_then_finalize(chain: Chain) -> None:
    token = chain.token("client")
    market_address = chain.deployment.task_market
    client_tokens = await token.balance_of(chain.address("client"))
    task_id = await chain.post(erc20=True, slots=2, bond_wei=5 * ETHER)
    assert await token.balance_of(chain.address("client")) == client_tokens - ETHER
    assert await token.balance_of(market_address) == ETHER

    miners = ["miner0", "miner1"]
    before = {m: await token.balance_of(chain.address(m)) for m in miners}
    await chain.claim(task_id, miners)
    assert await token.balance_of(market_address) == ETHER + 10 * ETHER
    await chain.submit(task_id, miners)

    await chain.increase_time(chain.REVIEW_S + 1)
    await chain.market("outsider").finalize(task_id)
    market = chain.market("client")
    assert await market.state_of(task_id) is TaskState.SETTLED
    for miner in miners:  # each paid its equal share; its bond came back
        assert await token.balance_of(chain.address(miner)) == before[miner] + ETHER // 2
        assert await market.credit_of(chain.address(miner), chain.deployment.token or "") == 0
    assert await token.balance_of(chain.address("client")) == client_tokens - ETHER
    assert await token.balance_of(market_address) == 0


@pytest.mark.parametrize("miners_win", [True, False])
async def test_dispute_resolved_by_the_arbiter(chain: Chain, miners_win: bool) -> None:
    task_id = await chain.post(slots=2)
    await chain.claim(task_id, ["miner0", "miner1"])
    await chain.submit(task_id, ["miner0", "miner1"])
    market = chain.market("client")
    await market.dispute(task_id, b"\x0d" * 32)
    view = await market.get_task(task_id)
    assert view.state is TaskState.DISPUTED
    assert view.settle_deadline == await chain.now() + chain.ARBITRATION_S
    (disputed,) = await market.get_task_disputed(task_id=task_id)
    assert disputed.reason_hash == b"\x0d" * 32

    cast = ("client", "miner0", "miner1", "arbiter")
    before, burned = await chain.balances(*cast), await market.burned_of()
    resolve = await chain.market("arbiter").resolve(task_id, miners_win)
    after = await chain.balances(*cast)
    delta = {who: after[who] - before[who] for who in after}
    assert await market.state_of(task_id) is TaskState.SETTLED
    (ruling,) = await market.get_dispute_resolved(task_id=task_id)
    assert ruling.miners_won is miners_win and ruling.arbiter == chain.address("arbiter")
    assert delta["arbiter"] == -chain.fee(resolve)  # the arbiter is paid nothing either way
    reputation = await market.reputation_of(chain.address("miner1"))
    if miners_win:
        assert (delta["client"], delta["miner0"], delta["miner1"]) == (
            0, ETHER // 2 + BOND, ETHER // 2 + BOND)
        assert await market.burned_of() == burned
        assert (reputation.completed, reputation.disputes_lost) == (1, 0)
    else:  # the reward goes back; the signers' bonds are burned, not paid to anyone
        assert (delta["client"], delta["miner0"], delta["miner1"]) == (ETHER, 0, 0)
        assert await market.burned_of() == burned + 2 * BOND
        assert (reputation.completed, reputation.disputes_lost) == (0, 1)
    assert delta["market"] == -(ETHER + 2 * BOND) + (0 if miners_win else 2 * BOND)
    for who in ("client", "miner0", "miner1"):
        assert await market.credit_of(chain.address(who)) == 0


async def test_silent_arbiter_lets_the_miners_finalize(chain: Chain) -> None:
    task_id = await chain.post()
    await chain.claim(task_id, ["miner0"])
    await chain.submit(task_id, ["miner0"])
    await chain.market("client").dispute(task_id, b"\x01" * 32)
    await chain.increase_time(chain.ARBITRATION_S + 1)
    before = await chain.balance("miner0")
    receipt = await chain.market("miner0").finalize(task_id)
    assert await chain.market().state_of(task_id) is TaskState.SETTLED
    assert await chain.balance("miner0") == before + ETHER + BOND - chain.fee(receipt)
    events = chain.market().decode_logs(receipt.logs)
    assert [type(e) for e in events] == [TaskSettled] and events[0].miners_paid


async def test_expire_open_task_without_claims_refunds_the_client(chain: Chain) -> None:
    task_id = await chain.post()
    await chain.increase_time(chain.CLAIM_S + 1)
    before = await chain.balances("client")
    await chain.market("outsider").expire(task_id)
    market = chain.market()
    assert await market.state_of(task_id) is TaskState.EXPIRED
    assert await chain.balance("client") == before["client"] + ETHER  # pushed to it
    assert await market.credit_of(chain.address("client")) == 0
    (expired,) = await market.get_task_expired(task_id=task_id)
    assert expired.bonds_slashed is False and expired.burned_wei == 0


@pytest.mark.parametrize("present", [(), ("miner0",), ("miner0", "miner1")],
                         ids=["none-checked-in", "one-checked-in", "all-checked-in"])
async def test_expire_running_task_burns_the_bonds_of_silent_members(
    chain: Chain, present: tuple[str, ...]
) -> None:
    """Expiry refunds the reward, gives a bond back to each member that checked in and burns
    the others' (v2: even with everyone checked in, the bonds go back to their members, and
    never to the client)."""
    miners = ["miner0", "miner1"]
    task_id = await chain.post(slots=2)
    await chain.claim(task_id, miners)
    market = chain.market()
    for miner in present:
        await chain.market(miner).check_in(task_id, EVIDENCE)
        assert await market.is_checked_in(task_id, chain.address(miner))
    events = await market.get_member_checked_in(task_id=task_id)
    assert [(e.miner, e.evidence) for e in events] == [(chain.address(m), EVIDENCE)
                                                       for m in present]
    await chain.increase_time(chain.WORK_S + 1)
    before, burned = await chain.balances("client", *miners), await market.burned_of()
    receipt = await chain.market("outsider").expire(task_id)
    after = await chain.balances("client", *miners)
    assert await market.state_of(task_id) is TaskState.EXPIRED
    silent = len(miners) - len(present)
    assert after["client"] - before["client"] == ETHER  # the reward, never a bond
    for miner in miners:
        assert after[miner] - before[miner] == (BOND if miner in present else 0)
    assert await market.burned_of() == burned + silent * BOND
    assert before["market"] - after["market"] == ETHER + len(present) * BOND
    # the record blames a member that stayed silent, not one that checked in
    failed = (await market.reputation_of(chain.address("miner0"))).failed
    assert failed == (0 if "miner0" in present else 1)
    (expired,) = await market.get_task_expired(task_id=task_id)
    assert expired.burned_wei == silent * BOND and expired.bonds_slashed is (silent > 0)
    burns = [e for e in market.decode_logs(receipt.logs) if isinstance(e, Burned)]
    assert [b.amount_wei for b in burns] == ([silent * BOND] if silent else [])


async def test_cancel_open_task_pushes_the_refund(chain: Chain) -> None:
    task_id = await chain.post(erc20=True)
    market = chain.market()
    token = chain.token()
    before = await token.balance_of(chain.address("client"))
    receipt = await market.cancel(task_id)
    assert await market.state_of(task_id) is TaskState.CANCELLED
    assert len(await market.get_task_cancelled(task_id=task_id)) == 1
    assert await token.balance_of(chain.address("client")) == before + ETHER
    assert await market.credit_of(chain.address("client"), chain.deployment.token or "") == 0
    events = market.decode_logs(receipt.logs)
    assert not any(isinstance(e, PaymentDeferred | Withdrawn) for e in events)


async def test_partial_group_starts_when_the_claim_window_ends(chain: Chain) -> None:
    task_id = await chain.post(slots=3)
    await chain.claim(task_id, ["miner2"])
    market = chain.market()
    assert await market.state_of(task_id) is TaskState.OPEN
    await chain.increase_time(chain.CLAIM_S + 1)
    view = await market.get_task(task_id)
    assert view.state is TaskState.RUNNING
    assert view.work_deadline == view.claim_deadline + chain.WORK_S
    assert view.share_wei(0) == ETHER  # the reward is split over the slots claimed
    assert await market.get_task_started(task_id=task_id) == []  # no event for a time transition
    receipt = await chain.submit(task_id, ["miner2"])
    (event,) = [e for e in market.decode_logs(receipt.logs) if isinstance(e, ResultSubmitted)]
    assert event.submitter == chain.address("miner2") and event.signed_slots == 0b1


async def test_receipt_logs_decode_in_order(chain: Chain) -> None:
    task_id = await chain.post(slots=1)
    receipt = await chain.market("miner3").claim(task_id)
    events = chain.market().decode_logs(receipt.logs)
    assert [type(e) for e in events] == [TaskClaimed, TaskStarted]
    assert [e.log_index for e in events] == sorted(e.log_index for e in events)
    assert all(isinstance(e, Withdrawn) is False for e in events)
