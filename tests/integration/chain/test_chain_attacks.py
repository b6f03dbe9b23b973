"""The market's economic attacks played through the Python facade with real transactions,
on eth-tester and on anvil (time moves with ``evm_increaseTime`` + ``evm_mine``).

Each attacker follows the rules to the letter; each test checks, to the wei, that the
attacking side gains nothing and that the honest members end whole (their bond back, and
their share whenever they signed the result the miners won). Money is followed with a
:class:`Ledger`: an account's balance change with the gas it paid for its own calls added
back, i.e. what the market moved to or from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from node.chain.errors import ContractRevert
from node.chain.market import PostedTask, TaskMarket
from node.chain.models import Reputation, TaskState, TxReceipt, split_reward

pytestmark = pytest.mark.asyncio(loop_scope="session")

Chain = Any  # the conftest's Chain; see its docstring
ETHER = 10**18
REWARD = ETHER + 2  # not a multiple of 3: slot 0 takes the rounding remainder
BOND = ETHER // 10
EVIDENCE = b"\xe7" * 32
SHARES = split_reward(REWARD, 3)


class Ledger:
    """Net wei per account over a scene, gas excluded (see the module docstring)."""

    def __init__(self, chain: Chain, *cast: str) -> None:
        self.chain = chain
        self.cast = cast
        self.start: dict[str, int] = {}
        self.gas = dict.fromkeys(cast, 0)
        self.burned = 0

    async def open(self) -> Ledger:
        self.start = await self.chain.balances(*self.cast)
        self.burned = await self.chain.market().burned_of()
        return self

    async def do(self, who: str, call: Callable[[TaskMarket], Awaitable[Any]]) -> Any:
        """``call(who's market facade)``, with the gas ``who`` paid for it recorded."""
        outcome = await call(self.chain.market(who))
        receipt: TxReceipt = outcome.receipt if isinstance(outcome, PostedTask) else outcome
        self.gas[who] += self.chain.fee(receipt)
        return outcome

    async def net(self) -> dict[str, int]:
        """What the market paid (+) or took (-) per account since :meth:`open`; ``"market"``
        is the contract's own balance change and ``"burned"`` what it burned meanwhile."""
        now = await self.chain.balances(*self.cast)
        net = {who: now[who] - self.start[who] + self.gas.get(who, 0) for who in now}
        net["burned"] = await self.chain.market().burned_of() - self.burned
        return net


async def post(ledger: Ledger, slots: int = 3, reward_wei: int = REWARD, who: str = "client",
               bond_wei: int = BOND) -> int:
    params = ledger.chain.params(reward_wei=reward_wei, bond_wei=bond_wei, slots=slots)
    posted: PostedTask = await ledger.do(who, lambda m: m.post_task(params, "file://spec"))
    return posted.task_id


async def claim(ledger: Ledger, task_id: int, miners: list[str]) -> None:
    for miner in miners:
        await ledger.do(miner, lambda m: m.claim(task_id))


async def submit(ledger: Ledger, task_id: int, submitter: str, cosigners: list[str]) -> None:
    signatures = ledger.chain.signatures(task_id, cosigners)
    await ledger.do(submitter, lambda m: m.submit_result(
        task_id, ledger.chain.ROOT_HASH, "http://result", signatures))


async def accept(ledger: Ledger, client: str, task_id: int) -> None:
    await ledger.do(client, lambda m: m.accept(task_id))


async def reverts(name: str, call: Awaitable[Any]) -> None:
    with pytest.raises(ContractRevert) as info:
        await call
    assert info.value.name == name


@pytest.mark.parametrize("puppet_checks_in", [False, True], ids=["silent", "checked-in"])
async def test_client_puppet_in_the_group_gains_nothing(chain: Chain,
                                                        puppet_checks_in: bool) -> None:
    """The client claims slot 0 with a second address ("outsider") and never signs. The
    honest two submit with a quorum (2 of 3) and are paid at accept. After the review
    deadline a sweep closes the puppet's slot: its share goes back to the client (the
    client's own money, for work nobody did), its bond is burned unless it checked in, and
    no bond ever reaches the client."""
    ledger = await Ledger(chain, "client", "outsider", "miner0", "miner1", "miner3").open()
    task_id = await post(ledger)
    await claim(ledger, task_id, ["outsider", "miner0", "miner1"])  # the puppet takes slot 0
    if puppet_checks_in:
        await ledger.do("outsider", lambda m: m.check_in(task_id, EVIDENCE))
    await submit(ledger, task_id, "miner0", ["miner1"])
    await ledger.do("client", lambda m: m.accept(task_id))

    net = await ledger.net()  # accepted at once: the signers are paid, the puppet waits
    assert (net["miner0"], net["miner1"]) == (SHARES[1], SHARES[2])
    assert net["outsider"] == (0 if puppet_checks_in else -BOND)
    assert net["client"] == -REWARD and net["burned"] == 0
    view = await chain.market().get_task(task_id)
    assert view.miners_paid and not view.closed and view.signed_slots == 0b110

    await chain.increase_time(chain.REVIEW_S + 1)
    await reverts("TaskMarketDeadlinePassed", chain.market("outsider").endorse(task_id))
    await ledger.do("miner3", lambda m: m.sweep(task_id))  # anyone closes it

    net = await ledger.net()
    assert (net["miner0"], net["miner1"]) == (SHARES[1], SHARES[2])  # honest and whole
    assert net["miner3"] == 0  # the sweeper is paid nothing
    assert net["client"] == -REWARD + SHARES[0]  # its puppet's unpaid share, no bond
    assert net["outsider"] == (0 if puppet_checks_in else -BOND)
    assert net["burned"] == (0 if puppet_checks_in else BOND)
    # the client's side paid the two honest shares, and the bond when it stayed silent
    assert net["client"] + net["outsider"] == -(SHARES[1] + SHARES[2]) - net["burned"]
    assert net["market"] == net["burned"]  # all else left the contract
    assert (await chain.market().get_task(task_id)).closed
    await reverts("TaskMarketNothingToSweep", chain.market("miner3").sweep(task_id))
    for who in ("client", "outsider", "miner0", "miner1"):
        assert await chain.market().credit_of(chain.address(who)) == 0


@pytest.mark.parametrize("answer", ["endorse", "check_in"])
async def test_sock_puppet_majority_cannot_take_the_honest_member_share_or_bond(
    chain: Chain, answer: str
) -> None:
    """Two sock puppets (miner1, miner2) hold a majority of the group: they submit without
    the honest member (miner0, slot 0) and the client accepts at once. Before the review
    deadline, even after that early accept, the honest member endorses the result (its share
    and bond, pushed at once) or, if it disowns it, checks in (its bond). The puppets and the
    client get nothing of it; only a share nobody endorsed goes back to the client."""
    ledger = await Ledger(chain, "client", "miner0", "miner1", "miner2", "outsider").open()
    task_id = await post(ledger)
    await claim(ledger, task_id, ["miner0", "miner1", "miner2"])
    await submit(ledger, task_id, "miner2", ["miner1"])  # 2 of 3, miner0 left out
    await ledger.do("client", lambda m: m.accept(task_id))
    net = await ledger.net()
    assert (net["miner0"], net["miner1"], net["miner2"]) == (-BOND, SHARES[1], SHARES[2])

    await chain.increase_time(chain.REVIEW_S - 20)  # late in the window, still inside it
    if answer == "endorse":
        await ledger.do("miner0", lambda m: m.endorse(task_id))
        paid = SHARES[0]  # its share, with the rounding remainder of slot 0
    else:
        await ledger.do("miner0", lambda m: m.check_in(task_id, EVIDENCE))
        paid = 0
    net = await ledger.net()
    assert net["miner0"] == paid  # its bond back either way, pushed at once
    assert await chain.market().credit_of(chain.address("miner0")) == 0

    await chain.increase_time(chain.REVIEW_S)
    await ledger.do("outsider", lambda m: m.sweep(task_id))
    net = await ledger.net()
    assert net["miner0"] == paid
    assert (net["miner1"], net["miner2"]) == (SHARES[1], SHARES[2])  # their own shares only
    assert net["client"] == -REWARD + (SHARES[0] - paid)  # the unendorsed share, if any
    assert net["burned"] == 0 and net["market"] == 0 and net["outsider"] == 0
    coalition = net["client"] + net["miner1"] + net["miner2"]
    assert coalition == -paid  # leaving the honest member out gained them nothing
    view = await chain.market().get_task(task_id)
    assert view.closed and view.signed(0) is (answer == "endorse")
    assert view.present(0) is (answer == "check_in")


async def test_colluding_arbiter_gives_the_client_its_reward_and_burns_the_bonds(
    chain: Chain,
) -> None:
    """The client disputes a good result and its arbiter rules for it. The client gets back
    exactly its reward; the signers' bonds are burned (to nobody: not the client, not the
    arbiter); the member that checked in without signing keeps its bond; the arbiter's
    balance moves only by its gas."""
    cast = ("client", "arbiter", "miner0", "miner1", "miner2", "outsider")
    ledger = await Ledger(chain, *cast).open()
    task_id = await post(ledger)
    await claim(ledger, task_id, ["miner0", "miner1", "miner2"])
    await ledger.do("miner2", lambda m: m.check_in(task_id, EVIDENCE))  # present, not signing
    await submit(ledger, task_id, "miner0", ["miner1"])
    await ledger.do("client", lambda m: m.dispute(task_id, b"\x0b" * 32))
    await ledger.do("arbiter", lambda m: m.resolve(task_id, False))

    net = await ledger.net()
    assert net["client"] == 0  # the reward back, and not one wei more
    assert net["arbiter"] == 0  # gas only
    assert (net["miner0"], net["miner1"]) == (-BOND, -BOND)  # the signers' bonds…
    assert net["burned"] == 2 * BOND and net["market"] == 2 * BOND  # …burned, kept by nobody
    assert net["miner2"] == 0  # checked in, did not sign the losing result: bond back
    view = await chain.market().get_task(task_id)
    assert view.state is TaskState.SETTLED and not view.miners_paid
    await reverts("TaskMarketWrongState", chain.market("miner2").endorse(task_id))

    await chain.increase_time(chain.ARBITRATION_S + 1)
    await ledger.do("outsider", lambda m: m.sweep(task_id))  # nothing more to burn or pay
    after = await ledger.net()
    assert {k: v for k, v in after.items() if k != "outsider"} == {
        k: v for k, v in net.items() if k != "outsider"}
    reputation = await chain.market().reputation_of(chain.address("miner0"))
    assert (reputation.completed, reputation.disputes_lost, reputation.earned_wei) == (0, 1, 0)


async def test_tiny_self_dealt_tasks_do_not_build_a_reputation(chain: Chain) -> None:
    """A miner (miner0) has its own second address ("client") post it many tiny tasks and
    accept them: its record shows one distinct client and the tiny value it moved, and a
    reader that asks for a minimum reward above them sees nothing. One real task from
    another client counts as what it is."""
    tiny, count = 100, 6  # the smallest bond is then 1 wei (1/100 of the share, rounded up)
    ledger = await Ledger(chain, "client", "miner0", "outsider").open()
    for _ in range(count):
        task_id = await post(ledger, slots=1, reward_wei=tiny, bond_wei=1)
        await claim(ledger, task_id, ["miner0"])
        await submit(ledger, task_id, "miner0", [])
        await accept(ledger, "client", task_id)
    net = await ledger.net()
    assert (net["client"], net["miner0"]) == (-count * tiny, count * tiny)  # its own wei

    market = chain.market("outsider")
    farmed = await market.reputation_of(chain.address("miner0"))
    assert farmed == Reputation(completed=count, earned_wei=count * tiny, distinct_clients=1)
    assert await market.reputation_of(chain.address("miner0"), min_reward_wei=tiny + 1) \
        == Reputation()

    real = await post(ledger, slots=1, reward_wei=ETHER, who="outsider")
    await claim(ledger, real, ["miner0"])
    await submit(ledger, real, "miner0", [])
    await accept(ledger, "outsider", real)
    assert await market.reputation_of(chain.address("miner0"), min_reward_wei=tiny + 1) \
        == Reputation(completed=1, earned_wei=ETHER, distinct_clients=1)
    assert await market.reputation_of(chain.address("miner0")) == Reputation(
        completed=count + 1, earned_wei=count * tiny + ETHER, distinct_clients=2)
