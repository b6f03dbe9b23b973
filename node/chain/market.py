"""``TaskMarket``: the typed async facade over the TaskMarket contract.

One method per contract function and one per event. Reads are ``eth_call`` through the
RPC pool; writes go through a :class:`~node.chain.sender.TxSender` (pre-flight, gas cap,
fees, receipt), so a call that must revert raises the decoded
:class:`~node.chain.errors.ContractRevert` (e.g. ``TaskMarketWrongState(taskId=3,
state=RUNNING)``) before any gas is spent. Arguments are validated before any RPC call
(:class:`InvalidAddress`, :class:`InvalidHash`).

For ERC-20 tasks, :meth:`TaskMarket.post_task` and :meth:`TaskMarket.claim` first dry-run
the call (any revert other than the missing allowance is raised before anything is spent),
check the token balance (:class:`InsufficientTokens`), then approve the market for exactly
the amount needed (skipped when the allowance already covers it).

Build it with ``await TaskMarket.create(rpc, address, sender)``; ``with_sender`` gives the
same market for another account (a client, a miner, the arbiter).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount

from node.chain.codec import ContractCodec
from node.chain.errors import ChainError, ContractRevert, DeploymentError
from node.chain.models import (
    EVENT_MODELS,
    ZERO_ADDRESS,
    ChainEvent,
    DisputeResolved,
    LogEntry,
    MemberCheckedIn,
    MinerRegistered,
    Reputation,
    ResultSubmitted,
    TaskCancelled,
    TaskClaimed,
    TaskDisputed,
    TaskExpired,
    TaskParams,
    TaskPosted,
    TaskSettled,
    TaskStarted,
    TaskState,
    TaskView,
    TxReceipt,
    Withdrawn,
    checksum_address,
    group_hash,
    hash32,
)
from node.chain.reputation import weigh_reputation
from node.chain.revert import RevertTable, build_revert_table
from node.chain.rpc import RpcPool
from node.chain.sender import TxSender
from node.chain.signing import DOMAIN_NAME, DOMAIN_VERSION, sign_result
from node.chain.token import Erc20, ReadOnlyError, view_call

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=ChainEvent)
#: Tries of a claim whose group changed (another miner claimed first) before it is given up.
CLAIM_ATTEMPTS = 5
CLAIM_RETRY_S = 0.2
#: Headroom for a late check-in or endorsement estimated before a settlement and mined after
#: it: then it also pushes the member's payout (30,000 gas forwarded, a cold value transfer).
LATE_PAYOUT_GAS = 45_000
#: Reverts of a deposit's dry run that the approval (or the balance check) deals with next.
_DEPOSIT_REVERTS = frozenset({"ERC20InsufficientAllowance", "ERC20InsufficientBalance"})
BlockId = int | str


@dataclass(frozen=True)
class MarketAbis:
    """The ABIs the facade needs: TaskMarket's and an ERC-20's (for approvals)."""

    market: tuple[Mapping[str, Any], ...]
    token: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_artifacts(cls) -> MarketAbis:
        from node.chain.artifacts import load_artifact

        return cls(
            tuple(load_artifact("TaskMarket").abi), tuple(load_artifact("MantaTestToken").abi)
        )


@dataclass(frozen=True)
class PostedTask:
    """The id the contract gave a new task, and the receipt of ``postTask``."""

    task_id: int
    receipt: TxReceipt


def market_revert_table(abis: MarketAbis) -> RevertTable:
    """Errors of the market and the token, with ``State`` decoded as :class:`TaskState`."""
    return build_revert_table(abis.market, {"State": TaskState}).merged(
        build_revert_table(abis.token)
    )


class GroupUnavailableError(ChainError):
    """The events read so far do not match what the contract holds (the group's
    ``TaskClaimed`` events, or the ``TaskPosted`` with the spec hash): the node's logs lag
    behind its state, or were pruned; try again."""

    template = "task {task_id}: events not readable from the logs ({found} of {claimed} claims)"


def _task_id(task_id: int) -> int:
    if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 0:
        raise ValueError(f"task id must be a non-negative int, got {task_id!r}")
    return task_id


class TaskMarket:
    """The TaskMarket contract at one address (see the module docstring)."""

    def __init__(
        self, rpc: RpcPool, address: str, abis: MarketAbis, sender: TxSender | None = None,
        start_block: int = 0,
    ) -> None:
        self._rpc = rpc
        self.address = checksum_address(address)
        self.start_block = start_block  # where event scans begin (the deployment's block)
        self._spec_hashes: dict[int, bytes] = {}
        self._abis = abis
        self._codec = ContractCodec("TaskMarket", abis.market)
        self._table = market_revert_table(abis)
        self._sender = sender
        if sender is not None:
            sender.with_revert_table(self._table)

    @classmethod
    async def create(
        cls,
        rpc: RpcPool,
        address: str,
        sender: TxSender | None = None,
        abis: MarketAbis | None = None,
        start_block: int = 0,
    ) -> TaskMarket:
        """The facade, after checking that there is contract code at ``address``."""
        market = cls(rpc, address, abis or MarketAbis.from_artifacts(), sender, start_block)
        if not await rpc.get_code(market.address):
            raise DeploymentError(path=market.address, reason="no contract code at this address")
        await market.check_domain()
        return market

    async def check_domain(self) -> None:
        """Refuse a contract whose EIP-712 domain differs from the one we sign for (another
        name or version, a proxy in front of it): every result signature would be rejected."""
        try:
            _, name, version, chain_id, verifying, _, _ = await self._view("eip712Domain")
        except ContractRevert as exc:
            raise DeploymentError(path=self.address, reason=f"not a TaskMarket ({exc})") from exc
        expected = (DOMAIN_NAME, DOMAIN_VERSION, self._rpc.chain_id, self.address)
        if (name, version, chain_id, verifying) != expected:
            raise DeploymentError(
                path=self.address,
                reason=f"EIP-712 domain {(name, version, chain_id, verifying)} != {expected}",
            )

    def sign_result(self, account: LocalAccount, task_id: int, result_root: bytes | str) -> bytes:
        """This member's EIP-712 signature of a result, for this chain and this contract."""
        return sign_result(account, self._rpc.chain_id, self.address, _task_id(task_id),
                           result_root)

    def with_sender(self, sender: TxSender) -> TaskMarket:
        """The same market, sending from ``sender``'s account."""
        return TaskMarket(self._rpc, self.address, self._abis, sender, self.start_block)

    @property
    def codec(self) -> ContractCodec:
        return self._codec

    @property
    def revert_table(self) -> RevertTable:
        return self._table

    @property
    def sender(self) -> TxSender:
        if self._sender is None:
            raise ReadOnlyError(contract="TaskMarket")
        return self._sender

    def token(self, address: str) -> Erc20:
        """An ERC-20 facade for ``address`` sending from this market's account (if any)."""
        return Erc20(self._rpc, address, self._abis.token, self._sender)

    # ---- plumbing ------------------------------------------------------------------------

    async def _view(self, name: str, *args: Any) -> tuple[Any, ...]:
        return await view_call(self._rpc, self.address, self._codec, self._table, name, *args)

    async def _send(
        self, name: str, *args: Any, value_wei: int = 0, gas_cap: int | None = None,
        gas_extra: int = 0,
    ) -> TxReceipt:
        data = self._codec.encode_call(name, *args)
        return await self.sender.send(
            self.address, data, value_wei=value_wei, gas_cap=gas_cap, gas_extra=gas_extra,
            label=f"TaskMarket.{name}",
        )

    # ---- miner registry ------------------------------------------------------------------

    async def register(self, endpoint: str) -> TxReceipt:
        """(Re)set this account's HTTP endpoint."""
        return await self._send("register", endpoint)

    async def endpoint_of(self, miner: str) -> str:
        return str((await self._view("endpointOf", checksum_address(miner)))[0])

    # ---- lifecycle -------------------------------------------------------------------------

    async def _prepare_deposit(self, name: str, data: bytes, token: str, amount_wei: int) -> None:
        """Before a call that pulls ``amount_wei`` of ``token``: dry-run it, check the balance,
        then approve. The dry run comes first so that any other revert is raised before the
        approval spends gas; only the token's own allowance/balance reverts are let through.
        """
        tx = {"from": self.sender.address, "to": self.address, "data": data, "value": 0}
        try:
            await self.sender.preflight(tx, f"TaskMarket.{name}")
        except ContractRevert as exc:
            if exc.name not in _DEPOSIT_REVERTS:
                raise
        erc20 = self.token(token)
        await erc20.require_balance(self.sender.address, amount_wei)
        await erc20.ensure_allowance(self.address, amount_wei)

    async def post_task(
        self, params: TaskParams, spec_uri: str, gas_cap: int | None = None
    ) -> PostedTask:
        """Escrow the reward and open a task (approving the token first for ERC-20 tasks)."""
        args = (params.as_abi(), spec_uri)
        if not params.is_native:
            data = self._codec.encode_call("postTask", *args)
            await self._prepare_deposit("postTask", data, params.token, params.reward_wei)
        value = params.reward_wei if params.is_native else 0
        receipt = await self._send("postTask", *args, value_wei=value, gas_cap=gas_cap)
        posted = [e for e in self.decode_logs(receipt.logs) if isinstance(e, TaskPosted)]
        if not posted:
            raise DeploymentError(path=self.address, reason="postTask emitted no TaskPosted")
        return PostedTask(posted[0].task_id, receipt)

    async def claim(self, task_id: int, gas_cap: int | None = None) -> TxReceipt:
        """Take the next slot of an OPEN task, paying the bond (approved first for ERC-20);
        the current group goes with it (the contract checks it against its hash chain).

        Miners answer the same ``TaskPosted`` together, so the group read here may be one
        claim behind by the time the call is checked: a pre-flight ``TaskMarketWrongGroup``
        (nothing sent) reads the group again, up to :data:`CLAIM_ATTEMPTS` times."""
        for attempt in range(1, CLAIM_ATTEMPTS + 1):
            task = await self.get_task(_task_id(task_id))
            try:
                group = await self.members_of(task_id, task)
                if not task.is_native and task.bond_wei > 0:
                    data = self._codec.encode_call("claim", task_id, group)
                    await self._prepare_deposit("claim", data, task.token, task.bond_wei)
                value = task.bond_wei if task.is_native else 0
                return await self._send("claim", task_id, group, value_wei=value,
                                        gas_cap=gas_cap)
            except (ContractRevert, GroupUnavailableError) as exc:
                stale = isinstance(exc, GroupUnavailableError) or exc.name == "TaskMarketWrongGroup"
                if not stale or attempt == CLAIM_ATTEMPTS:
                    raise
                logger.info("group changed under a claim; reading it again task=%d attempt=%d",
                            task_id, attempt)
                await asyncio.sleep(CLAIM_RETRY_S * attempt)
        raise AssertionError("unreachable")

    async def submit_result(
        self,
        task_id: int,
        result_root: bytes | str,
        result_uri: str,
        signatures: Mapping[str, bytes],
        gas_cap: int | None = None,
    ) -> TxReceipt:
        """Any member: the result hash with the EIP-712 signatures of a strict majority of the
        group (``{member: signature}``; this account's own is implied by sending)."""
        group = await self.members_of(task_id)
        by_member = {checksum_address(k): bytes(v) for k, v in signatures.items()}
        ordered = [b"" if m == self.sender.address else by_member.get(m, b"") for m in group]
        return await self._send(
            "submitResult", _task_id(task_id), hash32(result_root), result_uri, group, ordered,
            gas_cap=gas_cap,
        )

    async def _with_group(self, name: str, task_id: int) -> TxReceipt:
        """Send ``name(taskId, group)``: the calls that settle money take the whole group."""
        group = await self.members_of(_task_id(task_id))
        return await self._send(name, task_id, group)

    async def accept(self, task_id: int) -> TxReceipt:
        """The client accepts: signers are paid their share and bond inside this transaction."""
        return await self._with_group("accept", task_id)

    async def finalize(self, task_id: int) -> TxReceipt:
        return await self._with_group("finalize", task_id)

    async def dispute(self, task_id: int, reason_hash: bytes | str) -> TxReceipt:
        return await self._send("dispute", _task_id(task_id), hash32(reason_hash))

    async def resolve(self, task_id: int, miners_win: bool) -> TxReceipt:
        group = await self.members_of(_task_id(task_id))
        return await self._send("resolve", task_id, bool(miners_win), group)

    async def expire(self, task_id: int) -> TxReceipt:
        return await self._with_group("expire", task_id)

    async def check_in(self, task_id: int, evidence: bytes | str) -> TxReceipt:
        """As a member, commit to ``evidence`` of work (a checkpoint's or progress root's hash):
        while RUNNING this keeps the bond if the task expires; a member left out of a submitted
        result keeps its bond by checking in before the settle deadline
        (``TaskMarketNotMember``, ``TaskMarketAlreadyCheckedIn``, ``TaskMarketNoEvidence``)."""
        evidence = hash32(evidence)
        group = await self.members_of(_task_id(task_id))
        return await self._send("checkIn", task_id, group, evidence, gas_extra=LATE_PAYOUT_GAS)

    async def endorse(self, task_id: int) -> TxReceipt:
        """As a member left out of a submitted result: sign it late (share and bond)."""
        group = await self.members_of(_task_id(task_id))
        return await self._send("endorse", task_id, group, gas_extra=LATE_PAYOUT_GAS)

    async def sweep(self, task_id: int) -> TxReceipt:
        """After the settle deadline: burn what members left out of the result did not claim."""
        return await self._with_group("sweep", task_id)

    async def cancel(self, task_id: int) -> TxReceipt:
        return await self._send("cancel", _task_id(task_id))

    async def withdraw(self, token: str = ZERO_ADDRESS) -> TxReceipt:
        """Pull this account's credit in ``token`` (zero address = native coin): what a payout
        that could not be pushed left behind."""
        return await self._send("withdraw", checksum_address(token))

    # ---- views -----------------------------------------------------------------------------

    async def task_count(self) -> int:
        return int((await self._view("taskCount"))[0])

    async def get_task(self, task_id: int) -> TaskView:
        """The task as the contract sees it now (raises ``TaskMarketUnknownTask``), with the
        spec hash from its ``TaskPosted`` event (the contract does not store it)."""
        (raw,) = await self._view("getTask", _task_id(task_id))
        view: TaskView = TaskView.from_abi(raw, spec_hash=await self.spec_hash_of(task_id))
        return view

    async def spec_hash_of(self, task_id: int) -> bytes:
        """The spec hash a task was posted with (read once from its ``TaskPosted`` event)."""
        cached = self._spec_hashes.get(task_id)
        if cached is None:
            posted = await self.get_task_posted(self.start_block, "latest", _task_id(task_id))
            if not posted:
                raise GroupUnavailableError(task_id=task_id, found=0, claimed=0)
            cached = self._spec_hashes[task_id] = posted[-1].spec_hash
        return cached

    async def state_of(self, task_id: int) -> TaskState:
        return TaskState(int((await self._view("stateOf", _task_id(task_id)))[0]))

    async def members_of(self, task_id: int, view: TaskView | None = None) -> list[str]:
        """The group in slot order, read from the ``TaskClaimed`` events and checked against
        the contract's hash chain (:class:`GroupUnavailableError` while the logs lag behind)."""
        view = view or await self.get_task(_task_id(task_id))
        claims = await self.get_task_claimed(self.start_block, "latest", task_id)
        by_slot = {c.slot: c.miner for c in claims}
        group = [by_slot[i] for i in range(view.claimed) if i in by_slot]
        if len(group) != view.claimed or group_hash(group) != view.group:
            raise GroupUnavailableError(task_id=task_id, found=len(group), claimed=view.claimed)
        return group

    async def slot_of(self, task_id: int, miner: str) -> int | None:
        """``miner``'s slot in the task's group, or None."""
        group = await self.members_of(task_id)
        account = checksum_address(miner)
        return group.index(account) if account in group else None

    async def is_checked_in(self, task_id: int, miner: str) -> bool:
        view = await self.get_task(_task_id(task_id))
        group = await self.members_of(task_id, view)
        account = checksum_address(miner)
        return account in group and view.present(group.index(account))

    async def is_registered(self, miner: str) -> bool:
        return bool((await self._view("isRegistered", checksum_address(miner)))[0])

    async def credit_of(self, account: str, token: str = ZERO_ADDRESS) -> int:
        args = (checksum_address(account), checksum_address(token))
        return int((await self._view("creditOf", *args))[0])

    async def burned_of(self, token: str = ZERO_ADDRESS) -> int:
        return int((await self._view("burnedOf", checksum_address(token)))[0])

    async def reputation_of(self, miner: str, min_reward_wei: int = 0) -> Reputation:
        """``miner``'s record weighed from the events (:func:`weigh_reputation`): the contract
        keeps none, so that tiny tasks cannot inflate it."""
        account = checksum_address(miner)
        claims = await self.get_events(TaskClaimed, self.start_block, "latest", None, account)
        outcomes = [(claim.slot, await self.get_task(claim.task_id)) for claim in claims]
        return weigh_reputation(outcomes, min_reward_wei)

    async def result_digest(self, task_id: int, result_root: bytes | str) -> bytes:
        """The contract's own EIP-712 digest (to cross-check :mod:`node.chain.signing`)."""
        args = (_task_id(task_id), hash32(result_root))
        return bytes((await self._view("resultDigest", *args))[0])

    # ---- events ----------------------------------------------------------------------------

    def decode_logs(self, logs: Iterable[LogEntry | Mapping[str, Any]]) -> list[ChainEvent]:
        """Event models for the logs this contract emitted (others are skipped), in order."""
        events: list[ChainEvent] = []
        for raw in logs:
            log = raw if isinstance(raw, LogEntry) else LogEntry.from_rpc(raw)
            if log.address != self.address:
                continue
            decoded = self._codec.decode_log(log)
            if decoded is None or decoded[0] not in EVENT_MODELS:
                continue
            name, args = decoded
            events.append(EVENT_MODELS[name].from_abi(
                args, block_number=log.block_number, block_hash=log.block_hash,
                tx_hash=log.tx_hash, log_index=log.log_index,
            ))
        return events

    async def get_logs(
        self, from_block: BlockId, to_block: BlockId, topics: Sequence[Any] | None = None
    ) -> list[Mapping[str, Any]]:
        """Raw logs of this contract in ``[from_block, to_block]`` (for the indexer)."""
        log_filter: dict[str, Any] = {
            "address": self.address, "fromBlock": from_block, "toBlock": to_block,
        }
        if topics:
            log_filter["topics"] = list(topics)
        return await self._rpc.get_logs(log_filter)

    async def get_events(
        self, model: type[E], from_block: BlockId = 0, to_block: BlockId = "latest",
        *indexed: Any,
    ) -> list[E]:
        """Events of one kind, filtered on their indexed arguments in order (None = any)."""
        topics = self._codec.topic_filter(model.__name__, *indexed)
        logs = await self.get_logs(from_block, to_block, topics)
        return [e for e in self.decode_logs(logs) if isinstance(e, model)]

    async def get_miner_registered(
        self, from_block: BlockId = 0, to_block: BlockId = "latest", miner: str | None = None
    ) -> list[MinerRegistered]:
        account = checksum_address(miner) if miner is not None else None
        return await self.get_events(MinerRegistered, from_block, to_block, account)

    async def get_task_posted(
        self, from_block: BlockId = 0, to_block: BlockId = "latest", task_id: int | None = None
    ) -> list[TaskPosted]:
        return await self.get_events(TaskPosted, from_block, to_block, task_id)

    async def get_task_claimed(
        self, from_block: BlockId = 0, to_block: BlockId = "latest", task_id: int | None = None
    ) -> list[TaskClaimed]:
        return await self.get_events(TaskClaimed, from_block, to_block, task_id)

    async def get_task_started(
        self, from_block: BlockId = 0, to_block: BlockId = "latest", task_id: int | None = None
    ) -> list[TaskStarted]:
        return await self.get_events(TaskStarted, from_block, to_block, task_id)

    async def get_result_submitted(
        self, from_block: BlockId = 0, to_block: BlockId = "latest", task_id: int | None = None
    ) -> list[ResultSubmitted]:
        return await self.get_events(ResultSubmitted, from_block, to_block, task_id)

    async def get_task_disputed(
        self, from_block: BlockId = 0, to_block: BlockId = "latest", task_id: int | None = None
    ) -> list[TaskDisputed]:
        return await self.get_events(TaskDisputed, from_block, to_block, task_id)

    async def get_dispute_resolved(
        self, from_block: BlockId = 0, to_block: BlockId = "latest", task_id: int | None = None
    ) -> list[DisputeResolved]:
        return await self.get_events(DisputeResolved, from_block, to_block, task_id)

    async def get_task_settled(
        self, from_block: BlockId = 0, to_block: BlockId = "latest", task_id: int | None = None
    ) -> list[TaskSettled]:
        return await self.get_events(TaskSettled, from_block, to_block, task_id)

    async def get_task_cancelled(
        self, from_block: BlockId = 0, to_block: BlockId = "latest", task_id: int | None = None
    ) -> list[TaskCancelled]:
        return await self.get_events(TaskCancelled, from_block, to_block, task_id)

    async def get_task_expired(
        self, from_block: BlockId = 0, to_block: BlockId = "latest", task_id: int | None = None
    ) -> list[TaskExpired]:
        return await self.get_events(TaskExpired, from_block, to_block, task_id)

    async def get_member_checked_in(
        self, from_block: BlockId = 0, to_block: BlockId = "latest", task_id: int | None = None
    ) -> list[MemberCheckedIn]:
        return await self.get_events(MemberCheckedIn, from_block, to_block, task_id)

    async def get_withdrawn(
        self, from_block: BlockId = 0, to_block: BlockId = "latest", account: str | None = None
    ) -> list[Withdrawn]:
        who = checksum_address(account) if account is not None else None
        return await self.get_events(Withdrawn, from_block, to_block, who)
