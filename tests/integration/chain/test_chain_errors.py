"""Every custom error of TaskMarket decoded by name with its arguments, on both backends,
and bad input refused with a named error while nothing changes on chain."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from node.chain.errors import (
    ChainIdMismatch,
    ContractRevert,
    DeploymentError,
    GasCapExceeded,
    InsufficientFunds,
    InsufficientTokens,
    InvalidAddress,
    InvalidHash,
)
from node.chain.market import TaskMarket
from node.chain.models import ZERO_ADDRESS, TaskParams, TaskState
from node.chain.rpc import RpcConfig, RpcPool

pytestmark = pytest.mark.asyncio(loop_scope="session")

Chain = Any  # the conftest's Chain
ETHER = 10**18
#: Errors no test can trigger without a hostile contract (a fee-on-transfer token, a payee that
#: rejects the native coin), or without posting tasks in 65,535 different tokens first
#: (TooManyTokens: the contract numbers tokens in 16 bits); they decode through the same
#: table as the others.
UNTRIGGERED = {"TaskMarketFeeOnTransfer", "TaskMarketNativeTransferFailed",
               "TaskMarketTooManyTokens"}
EVIDENCE = b"\x0e" * 32  # a checkpoint's hash, as a member commits to it when checking in

Scenario = Callable[[Any], Awaitable[tuple[str, Callable[[], Awaitable[Any]], str]]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = fn
        return fn

    return register


def raw_params(chain: Chain, **overrides: Any) -> TaskParams:
    """Parameters the model would refuse, built without validation to reach the contract."""
    fields = dict(chain.params()) | overrides
    return TaskParams.model_construct(**fields)


@scenario("TaskMarketUnknownTask")
async def _unknown(chain: Chain) -> Any:
    return "client", lambda: chain.market().accept(99), "TaskMarketUnknownTask(taskId=99)"


@scenario("TaskMarketWrongState")
async def _wrong_state(chain: Chain) -> Any:
    tid = await chain.post()
    act = lambda: chain.market().accept(tid)  # noqa: E731
    return "client", act, f"TaskMarketWrongState(taskId={tid}, state=OPEN)"


@scenario("TaskMarketNotClient")
async def _not_client(chain: Chain) -> Any:
    tid = await chain.post()
    who = chain.address("miner0")
    act = lambda: chain.market("miner0").cancel(tid)  # noqa: E731
    return "miner0", act, f"TaskMarketNotClient(taskId={tid}, caller={who})"


@scenario("TaskMarketNotArbiter")
async def _not_arbiter(chain: Chain) -> Any:
    tid = await chain.post()
    await chain.claim(tid, ["miner0"])
    await chain.submit(tid, ["miner0"])
    await chain.market().dispute(tid, b"\x01" * 32)
    act = lambda: chain.market("client").resolve(tid, False)  # noqa: E731
    return "client", act, f"TaskMarketNotArbiter(taskId={tid}, caller={chain.address('client')})"


@scenario("TaskMarketDeadlinePassed")
async def _deadline_passed(chain: Chain) -> Any:
    tid = await chain.post()
    deadline = (await chain.market().get_task(tid)).claim_deadline
    await chain.increase_time(chain.CLAIM_S + 1)
    act = lambda: chain.market("miner0").claim(tid)  # noqa: E731
    return "miner0", act, f"TaskMarketDeadlinePassed(taskId={tid}, deadline={deadline})"


@scenario("TaskMarketDeadlineNotReached")
async def _deadline_not_reached(chain: Chain) -> Any:
    tid = await chain.post()
    await chain.claim(tid, ["miner0"])
    await chain.submit(tid, ["miner0"])
    deadline = (await chain.market().get_task(tid)).settle_deadline
    act = lambda: chain.market("outsider").finalize(tid)  # noqa: E731
    return "outsider", act, f"TaskMarketDeadlineNotReached(taskId={tid}, deadline={deadline})"


@scenario("TaskMarketWrongPayment")
async def _wrong_payment(chain: Chain) -> Any:
    tid = await chain.post()
    market = chain.market("miner0")
    data = market.codec.encode_call("claim", tid, [])
    act = lambda: market.sender.send(market.address, data, value_wei=1)  # noqa: E731
    return "miner0", act, f"TaskMarketWrongPayment(expected={ETHER // 10}, sent=1)"


@scenario("TaskMarketWrongGroup")
async def _wrong_group(chain: Chain) -> Any:
    tid = await chain.post(slots=2)
    await chain.claim(tid, ["miner0"])
    market = chain.market("miner1")  # claims with a stale (empty) group, past the facade
    data = market.codec.encode_call("claim", tid, [])
    act = lambda: market.sender.send(market.address, data, value_wei=ETHER // 10)  # noqa: E731
    return "miner1", act, f"TaskMarketWrongGroup(taskId={tid}, members=0)"


@scenario("TaskMarketAlreadyClaimed")
async def _already_claimed(chain: Chain) -> Any:
    tid = await chain.post(slots=2)
    await chain.claim(tid, ["miner0"])
    act = lambda: chain.market("miner0").claim(tid)  # noqa: E731
    return "miner0", act, f"TaskMarketAlreadyClaimed(taskId={tid}, miner={chain.address('miner0')})"


@scenario("TaskMarketPartyCannotClaim")
async def _party_cannot_claim(chain: Chain) -> Any:
    tid = await chain.post()
    act = lambda: chain.market("arbiter").claim(tid)  # noqa: E731
    who = chain.address("arbiter")
    return "arbiter", act, f"TaskMarketPartyCannotClaim(taskId={tid}, miner={who})"


@scenario("TaskMarketClaimsExist")
async def _claims_exist(chain: Chain) -> Any:
    tid = await chain.post(slots=2)
    await chain.claim(tid, ["miner0"])
    act = lambda: chain.market().cancel(tid)  # noqa: E731
    return "client", act, f"TaskMarketClaimsExist(taskId={tid}, claimed=1)"


@scenario("TaskMarketLengthMismatch")
async def _length_mismatch(chain: Chain) -> Any:
    tid = await chain.post()
    await chain.claim(tid, ["miner0"])
    market = chain.market("miner0")  # one member, two signature entries, past the facade
    args = (tid, chain.ROOT_HASH, "u", [chain.address("miner0")], [b"", b""])
    data = market.codec.encode_call("submitResult", *args)
    act = lambda: market.sender.send(market.address, data)  # noqa: E731
    return "miner0", act, f"TaskMarketLengthMismatch(taskId={tid}, members=1, signatures=2)"


@scenario("TaskMarketNoQuorum")
async def _no_quorum(chain: Chain) -> Any:
    tid = await chain.post(slots=3)
    await chain.claim(tid, ["miner0", "miner1", "miner2"])
    # miner0 alone signed: 1 of 3, a strict majority is 2
    act = lambda: chain.submit(tid, ["miner0"])  # noqa: E731
    return "miner0", act, f"TaskMarketNoQuorum(taskId={tid}, signed=1, needed=2)"


@scenario("TaskMarketBadSignature")
async def _bad_signature(chain: Chain) -> Any:
    tid = await chain.post(slots=2)
    await chain.claim(tid, ["miner0", "miner1"])
    forged = chain.signatures(tid, ["outsider"])[chain.address("outsider")]
    signatures = {chain.address("miner1"): forged}  # miner1's entry, signed by someone else
    act = lambda: chain.market("miner0").submit_result(tid, chain.ROOT_HASH, "u", signatures)  # noqa: E731
    return "miner0", act, f"TaskMarketBadSignature(taskId={tid}, index=1)"


@scenario("TaskMarketZeroResultRoot")
async def _zero_root(chain: Chain) -> Any:
    tid = await chain.post()
    await chain.claim(tid, ["miner0"])
    act = lambda: chain.submit(tid, ["miner0"], root=b"\x00" * 32)  # noqa: E731
    return "miner0", act, f"TaskMarketZeroResultRoot(taskId={tid})"


@scenario("TaskMarketNothingToWithdraw")
async def _nothing(chain: Chain) -> Any:
    who = chain.address("outsider")
    act = lambda: chain.market("outsider").withdraw()  # noqa: E731
    return "outsider", act, f"TaskMarketNothingToWithdraw(account={who}, token={ZERO_ADDRESS})"


@scenario("TaskMarketInvalidReward")
async def _invalid_reward(chain: Chain) -> Any:
    act = lambda: chain.market().post_task(raw_params(chain, reward_wei=0), "s")  # noqa: E731
    return "client", act, "TaskMarketInvalidReward(reward=0)"


@scenario("TaskMarketInvalidSlots")
async def _invalid_slots(chain: Chain) -> Any:
    act = lambda: chain.market().post_task(raw_params(chain, slots=33), "s")  # noqa: E731
    return "client", act, "TaskMarketInvalidSlots(slots=33)"


@scenario("TaskMarketInvalidWindow")
async def _invalid_window(chain: Chain) -> Any:
    act = lambda: chain.market().post_task(raw_params(chain, review_window_s=0), "s")  # noqa: E731
    return "client", act, "TaskMarketInvalidWindow(name='reviewWindow', value=0)"


@scenario("TaskMarketBondTooLow")
async def _bond_too_low(chain: Chain) -> Any:
    params = raw_params(chain, bond_wei=1)  # the floor is 1/100 of the 1-ether share
    act = lambda: chain.market().post_task(params, "s")  # noqa: E731
    return "client", act, f"TaskMarketBondTooLow(bond=1, minimum={ETHER // 100})"


@scenario("TaskMarketBeyondTimeHorizon")
async def _beyond_horizon(chain: Chain) -> Any:
    # Every window is bounded (270 days in all), so only a chain near 2106 gets past uint32.
    await chain.increase_time(2**32 - 20 * 86400 - await chain.now())
    params = raw_params(chain, claim_window_s=30 * 86400)
    act = lambda: chain.market().post_task(params, "s")  # noqa: E731
    # the exact deadline depends on the block time of the pre-flight call
    return "client", act, "TaskMarketBeyondTimeHorizon(latestDeadline=*)"


@scenario("TaskMarketInvalidArbiter")
async def _invalid_arbiter(chain: Chain) -> Any:
    params = chain.params(arbiter="client")
    act = lambda: chain.market().post_task(params, "s")  # noqa: E731
    return "client", act, f"TaskMarketInvalidArbiter(arbiter={chain.address('client')})"


@scenario("TaskMarketInvalidEndpoint")
async def _invalid_endpoint(chain: Chain) -> Any:
    act = lambda: chain.market("outsider").register("x" * 257)  # noqa: E731
    return "outsider", act, "TaskMarketInvalidEndpoint(length=257)"


@scenario("TaskMarketNotMember")
async def _not_member(chain: Chain) -> Any:
    tid = await chain.post()
    await chain.claim(tid, ["miner0"])
    act = lambda: chain.market("miner1").check_in(tid, EVIDENCE)  # noqa: E731
    return "miner1", act, f"TaskMarketNotMember(taskId={tid}, caller={chain.address('miner1')})"


@scenario("TaskMarketAlreadyCheckedIn")
async def _already_checked_in(chain: Chain) -> Any:
    tid = await chain.post()
    await chain.claim(tid, ["miner0"])
    await chain.market("miner0").check_in(tid, EVIDENCE)
    act = lambda: chain.market("miner0").check_in(tid, EVIDENCE)  # noqa: E731
    who = chain.address("miner0")
    return "miner0", act, f"TaskMarketAlreadyCheckedIn(taskId={tid}, miner={who})"


@scenario("TaskMarketNoEvidence")
async def _no_evidence(chain: Chain) -> Any:
    tid = await chain.post()
    await chain.claim(tid, ["miner0"])
    act = lambda: chain.market("miner0").check_in(tid, bytes(32))  # noqa: E731
    return "miner0", act, f"TaskMarketNoEvidence(taskId={tid})"


@scenario("TaskMarketAlreadySigned")
async def _already_signed(chain: Chain) -> Any:
    tid = await chain.post(slots=3)
    await chain.claim(tid, ["miner0", "miner1", "miner2"])
    await chain.submit(tid, ["miner0", "miner1"])  # miner2 left out: it could endorse
    act = lambda: chain.market("miner1").endorse(tid)  # noqa: E731
    who = chain.address("miner1")
    return "miner1", act, f"TaskMarketAlreadySigned(taskId={tid}, miner={who})"


@scenario("TaskMarketNothingToSweep")
async def _nothing_to_sweep(chain: Chain) -> Any:
    tid = await chain.post()
    await chain.claim(tid, ["miner0"])
    await chain.submit(tid, ["miner0"])
    await chain.market().accept(tid)  # everyone signed: settled for good
    await chain.increase_time(chain.REVIEW_S + 1)
    act = lambda: chain.market("outsider").sweep(tid)  # noqa: E731
    return "outsider", act, f"TaskMarketNothingToSweep(taskId={tid})"


@scenario("ERC20InsufficientBalance")
async def _erc20_balance(chain: Chain) -> Any:
    who = chain.address("outsider")  # holds no tokens
    act = lambda: chain.token("outsider").transfer(chain.address("client"), 5)  # noqa: E731
    return "outsider", act, f"ERC20InsufficientBalance(sender={who}, balance=0, needed=5)"


@pytest.mark.asyncio(loop_scope="session")
async def test_every_contract_error_has_a_scenario(chain_abis: Any) -> None:
    names = {
        e["name"] for e in chain_abis.market
        if e.get("type") == "error" and e["name"].startswith("TaskMarket")
    }
    assert names - UNTRIGGERED <= set(SCENARIOS), names - UNTRIGGERED - set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_revert_is_decoded_by_name_and_nothing_is_spent(chain: Chain, name: str) -> None:
    who, act, expected = await SCENARIOS[name](chain)
    address = chain.address(who)
    balance, nonce = await chain.balance(who), await chain.pool.get_nonce(address)
    count = await chain.market().task_count()
    with pytest.raises(ContractRevert) as info:
        await act()
    assert info.value.name == name
    if expected.endswith("=*)"):
        assert str(info.value).startswith(expected[:-2])
    else:
        assert str(info.value) == expected
    assert await chain.balance(who) == balance  # the pre-flight refused: no gas spent
    assert await chain.pool.get_nonce(address) == nonce
    assert await chain.market().task_count() == count


async def test_view_reverts_are_decoded_too(chain: Chain) -> None:
    with pytest.raises(ContractRevert) as info:
        await chain.market().get_task(12345)
    assert str(info.value) == "TaskMarketUnknownTask(taskId=12345)"
    assert info.value.arguments == {"taskId": 12345}


async def test_wrong_chain_id_is_refused(chain: Chain) -> None:
    if chain.backend == "anvil":
        connect = RpcPool.create(RpcConfig(urls=chain.pool.labels, chain_id=1))
    else:
        connect = RpcPool.create(RpcConfig(chain_id=1), providers=[chain.pool.w3.provider])
    with pytest.raises(ChainIdMismatch) as info:
        await connect
    assert (info.value.expected, info.value.actual) == (1, chain.pool.chain_id)


async def test_unfunded_account_is_refused_before_sending(chain: Chain) -> None:
    pauper = chain.market("pauper")
    address = chain.address("pauper")
    count = await pauper.task_count()
    with pytest.raises(InsufficientFunds) as info:
        await pauper.post_task(chain.params(), "s")  # needs the reward as value
    assert info.value.balance_wei == 0 and info.value.needed_wei >= ETHER
    with pytest.raises(InsufficientFunds):
        await pauper.register("http://pauper")  # no value, but gas it cannot pay
    assert await pauper.task_count() == count
    assert await chain.pool.get_nonce(address) == 0
    assert await pauper.endpoint_of(address) == ""


async def test_malformed_address_and_hash_change_nothing(chain: Chain) -> None:
    tid = await chain.post()
    await chain.claim(tid, ["miner0"])
    await chain.submit(tid, ["miner0"])
    market = chain.market()
    block = await chain.pool.block_number()
    nonce = await chain.pool.get_nonce(market.sender.address)
    with pytest.raises(InvalidAddress):
        await market.credit_of("0x12")
    with pytest.raises(InvalidAddress):
        await market.withdraw("0xZZ" + "0" * 38)
    with pytest.raises(InvalidAddress):
        TaskParams(**(chain.params().model_dump() | {"arbiter": "arbiter"}))
    with pytest.raises(InvalidHash):
        await market.dispute(tid, b"short")
    with pytest.raises(InvalidHash):
        await market.dispute(tid, "0x1234")
    assert await market.state_of(tid) is TaskState.SUBMITTED
    assert await chain.pool.block_number() == block
    assert await chain.pool.get_nonce(market.sender.address) == nonce


async def test_erc20_post_refused_before_the_approval_spends_anything(chain: Chain) -> None:
    outsider = chain.market("outsider")  # funded with ether, holds no tokens
    balance, nonce = await chain.balance("outsider"), await chain.pool.get_nonce(
        chain.address("outsider"))
    bad_arbiter = chain.params(erc20=True, arbiter="outsider")
    with pytest.raises(ContractRevert) as info:
        await outsider.post_task(bad_arbiter, "s")
    assert info.value.name == "TaskMarketInvalidArbiter"
    with pytest.raises(InsufficientTokens) as tokens:
        await outsider.post_task(chain.params(erc20=True), "s")
    assert (tokens.value.needed_wei, tokens.value.balance_wei) == (ETHER, 0)
    assert await chain.balance("outsider") == balance
    assert await chain.pool.get_nonce(chain.address("outsider")) == nonce
    assert await chain.token().allowance(chain.address("outsider"), outsider.address) == 0
    await chain.token("outsider").approve(outsider.address, ETHER)  # allowance, still no tokens
    with pytest.raises(InsufficientTokens):
        await outsider.post_task(chain.params(erc20=True), "s")


async def test_gas_cap_refuses_without_sending(chain: Chain) -> None:
    market = chain.market()
    nonce, count = await chain.pool.get_nonce(market.sender.address), await market.task_count()
    balance = await chain.balance("client")
    with pytest.raises(GasCapExceeded) as info:
        await market.post_task(chain.params(), "s", gas_cap=30_000)
    assert info.value.estimated_gas > 30_000
    assert (await chain.pool.get_nonce(market.sender.address), await market.task_count()) == (
        nonce, count)
    assert await chain.balance("client") == balance


async def test_market_address_without_the_market_is_refused(chain: Chain) -> None:
    with pytest.raises(DeploymentError, match="no contract code"):
        await TaskMarket.create(chain.pool, chain.address("outsider"), abis=chain.abis)
    with pytest.raises(DeploymentError, match="not a TaskMarket"):
        await TaskMarket.create(chain.pool, chain.deployment.token, abis=chain.abis)
    market = await TaskMarket.create(chain.pool, chain.deployment.task_market, abis=chain.abis)
    assert market.address == chain.deployment.task_market
